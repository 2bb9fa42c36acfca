"""``deploy-kit env``, the device doctor (deploy_kit/doctor/): what it reads from sys.path
directories, ``pyvenv.cfg``, ``/etc/nv_tegra_release`` and cv2's build information, and each
``trap:`` line, made to appear and, in a control, not to.

The sys.path directories here hold fake ``cv2``/``tensorrt`` packages and ``*.dist-info`` folders
written by the tests: they check deploy-kit's decisions (which copy is imported, who installed it,
which trap applies), not OpenCV's or TensorRT's behaviour.
"""

import dataclasses
import hashlib
import importlib.machinery
import os
import subprocess
import sys

import pytest

from deploy_kit import backends, doctor
from deploy_kit.doctor import ArtifactCheck, Cv2Facts, EngineFacts, Facts, Jetson, ModuleCopy, Venv, machine
from deploy_kit.errors import UsageError
from deploy_kit.manifest import make_manifest, read_typed, write_manifest

# cv2.getBuildInformation() excerpts: JetPack 6's apt OpenCV 4.8.0 (GStreamer, numpy 1.21.5) and an
# opencv-python wheel (no GStreamer, numpy 2)
JETPACK_BUILD_INFO = """
General configuration for OpenCV 4.8.0 =====================================
  Video I/O:
    DC1394:                      NO
    FFMPEG:                      YES
      avcodec:                   YES (58.54.100)
    GStreamer:                   YES (1.20.3)
    v4l/v4l2:                    YES (linux/videodev2.h)

  Python 3:
    Interpreter:                 /usr/bin/python3 (ver 3.10.12)
    Libraries:                   /usr/lib/aarch64-linux-gnu/libpython3.10.so (ver 3.10.12)
    numpy:                       /usr/lib/python3/dist-packages/numpy/core/include (ver 1.21.5)
    install path:                lib/python3.10/dist-packages/cv2/python-3.10
"""
PIP_BUILD_INFO = """
General configuration for OpenCV 4.10.0 =====================================
  Video I/O:
    FFMPEG:                      YES
    GStreamer:                   NO
    v4l/v4l2:                    YES (linux/videodev2.h)

  Python 3:
    Interpreter:                 /opt/python/cp39-cp39/bin/python3.9 (ver 3.9.25)
    numpy:                       /home/ci/.local/lib/python3.9/site-packages/numpy/_core/include (ver 2.0.2)
"""
NUMPY_1_FAILURE = "ImportError: numpy.core.multiarray failed to import; _ARRAY_API not found"


def _site(tmp_path, name):
    d = tmp_path / name
    d.mkdir(parents=True, exist_ok=True)
    return str(d)


def _package(site, module, dist=None, version="1.0", installer="pip", body=""):
    """A package ``module`` in ``site``; with ``dist``, a dist-info whose RECORD lists it (as pip writes it)."""
    pkg = os.path.join(site, module)
    os.makedirs(pkg, exist_ok=True)
    with open(os.path.join(pkg, "__init__.py"), "w") as fh:
        fh.write(body)
    if dist:
        info = os.path.join(site, f"{dist.replace('-', '_')}-{version}.dist-info")
        os.makedirs(info, exist_ok=True)
        with open(os.path.join(info, "METADATA"), "w") as fh:
            fh.write(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
        digest = hashlib.sha256(body.encode()).hexdigest()
        with open(os.path.join(info, "RECORD"), "w") as fh:
            fh.write(f"{module}/__init__.py,sha256={digest},{len(body)}\n{os.path.basename(info)}/RECORD,,\n")
        if installer:
            with open(os.path.join(info, "INSTALLER"), "w") as fh:
                fh.write(installer + "\n")
    return os.path.join(pkg, "__init__.py")


def _venv(tmp_path, home="/usr/bin", system=True):
    prefix = tmp_path / "venv"
    prefix.mkdir(exist_ok=True)
    (prefix / "pyvenv.cfg").write_text(f"home = {home}\ninclude-system-site-packages = {'true' if system else 'false'}\n"
                                       "version = 3.10.12\n")
    return str(prefix)


def _jetson_root(tmp_path, release="# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64",
                 model="NVIDIA Jetson AGX Orin Developer Kit"):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc" / "nv_tegra_release").write_text(release + "\n")
    if model:
        (root / "proc" / "device-tree").mkdir(parents=True, exist_ok=True)
        (root / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\0")
    return str(root)


def _trap(lines, word):
    return [ln for ln in lines if ln.startswith("trap:") and word in ln]


# --------------------------------------------------------------------------- reading sys.path
def test_cv2_copies_in_import_order_with_their_pip_distribution(tmp_path):
    venv_site, apt_site = _site(tmp_path, "venv-site"), _site(tmp_path, "usr-dist-packages")
    pip_init = _package(venv_site, "cv2", "opencv-python-headless", "4.10.0.84")
    apt_init = _package(apt_site, "cv2")  # apt: no dist-info lists it
    missing = str(tmp_path / "missing")
    copies = doctor.find_module("cv2", [missing, venv_site, venv_site, apt_site])
    assert [c.path for c in copies] == [pip_init, apt_init]
    pip, apt = copies
    assert (pip.distribution, pip.version, pip.installer, pip.pip_managed) == ("opencv-python-headless", "4.10.0.84", "pip", True)
    assert "pip distribution opencv-python-headless 4.10.0.84" in pip.origin()
    assert apt.distribution is None and not apt.pip_managed and apt.origin().startswith("not pip-managed")
    cv2 = Cv2Facts(copies=copies)
    assert cv2.active == pip and cv2.hidden == (apt,)
    # the imported file decides which copy is active
    assert Cv2Facts(copies=copies, file=apt_init).active == apt


def test_an_extension_module_and_a_system_package_with_metadata_but_no_installer(tmp_path):
    site = _site(tmp_path, "site")
    ext = os.path.join(site, "cv2" + importlib.machinery.EXTENSION_SUFFIXES[0])
    open(ext, "wb").close()
    assert [c.path for c in doctor.find_module("cv2", [site])] == [ext]
    # a metadata folder without INSTALLER (Debian's python3-* packages) is named but not pip-managed
    other = _site(tmp_path, "other")
    _package(other, "tensorrt", "tensorrt", "10.3.0.30", installer=None)
    (copy,) = doctor.find_module("tensorrt", [other])
    assert copy.distribution == "tensorrt" and not copy.pip_managed and "metadata tensorrt 10.3.0.30" in copy.origin()
    assert doctor.find_module("cv2", [other]) == ()


def test_build_information_gstreamer_and_numpy():
    jp = Cv2Facts(build_info=JETPACK_BUILD_INFO)
    assert jp.gstreamer() == "YES (1.20.3)" and jp.build_numpy() == "1.21.5"
    wheel = Cv2Facts(build_info=PIP_BUILD_INFO)
    assert wheel.gstreamer() == "NO" and wheel.build_numpy() == "2.0.2"
    assert Cv2Facts().gstreamer() is None and Cv2Facts().build_numpy() is None


def test_a_failing_import_becomes_a_reason_with_what_it_printed(tmp_path, monkeypatch):
    """A fake package that prints numpy 2's message and raises as a numpy-1 extension does: checks
    deploy-kit's decision (the reason it reports), not numpy's behaviour."""
    site = _site(tmp_path, "site")
    _package(site, "dk_doctor_broken", body="import sys\nsys.stderr.write('AttributeError: _ARRAY_API not found\\n')\n"
                                          "raise ImportError('numpy.core.multiarray failed to import')\n")
    monkeypatch.syspath_prepend(site)
    mod, reason = machine._try_import("dk_doctor_broken")
    assert mod is None and reason == NUMPY_1_FAILURE
    mod, reason = machine._try_import("dk_doctor_absent_module")
    assert mod is None and reason.startswith("ModuleNotFoundError")


def test_cv2_is_probed_through_deps_opencv_with_the_import_error_as_reason(tmp_path, monkeypatch):
    """A fake ``cv2`` that fails as a numpy-1 build does under numpy 2: gather() loads it through
    _deps.opencv() (the one place cv2 is loaded) and reports the import's own error, not _deps' install
    advice (the trap line gives the fix). Checks deploy-kit's decision, not OpenCV's behaviour."""
    site = _site(tmp_path, "site")
    _package(site, "cv2", body="import sys\nsys.stderr.write('AttributeError: _ARRAY_API not found\\n')\n"
                               "raise ImportError('numpy.core.multiarray failed to import')\n")
    monkeypatch.syspath_prepend(site)
    monkeypatch.delitem(sys.modules, "cv2", raising=False)
    calls = []
    real = machine._deps.opencv
    monkeypatch.setattr(machine._deps, "opencv", lambda: calls.append(1) or real())
    facts = doctor.gather(path=[site], root=str(tmp_path / "no-jetson"))
    assert calls == [1] and facts.cv2.error == NUMPY_1_FAILURE and facts.cv2.version is None
    if facts.numpy and facts.numpy.startswith("2"):
        assert _trap(doctor.traps(facts), "built against numpy 1.x")


# --------------------------------------------------------------------------- venv, Jetson
def test_pyvenv_cfg_and_no_venv(tmp_path):
    prefix = _venv(tmp_path, home="/usr/bin", system=False)
    assert doctor.read_venv(prefix, "/usr") == Venv(prefix, "/usr/bin", False)
    assert doctor.read_venv("/usr", "/usr") is None
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /opt/conda/bin\n")
    assert doctor.read_venv(prefix, "/usr") == Venv(prefix, "/opt/conda/bin", None)


@pytest.mark.parametrize("release, l4t, jetpack, cuda", [
    ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic", (36, 4, 3), "6.2", 12),
    ("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic", (36, 3, 0), "6.0", 12),
    ("# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref", (35, 4, 1), "5.1.2", 11),
    ("# R38 (release), REVISION: 2.0, GCID: 40000000, BOARD: generic", (38, 2, 0), "7.0", 13),
    ("# R36 (release), REVISION: 4.7, GCID: 40000001, BOARD: generic", (36, 4, 7), "6.2.1 or later", 12),
])
def test_l4t_release_and_its_jetpack(tmp_path, release, l4t, jetpack, cuda):
    jetson = doctor.read_jetson(_jetson_root(tmp_path, release))
    assert jetson.l4t == l4t and jetson.model == "NVIDIA Jetson AGX Orin Developer Kit"
    name, major, _ = jetson.jetpack()
    assert name.startswith(jetpack) and major == cuda
    assert any(ln.startswith("Jetson") and f"= JetPack {jetpack}" in ln for ln in doctor.machine_lines(Facts(jetson=jetson)))


def test_not_a_jetson_and_an_unknown_release(tmp_path):
    assert doctor.read_jetson(str(tmp_path)) is None
    assert "unknown" in Jetson((40, 0, 0)).jetpack()[0] and Jetson((40, 0, 0)).jetpack()[1] is None
    assert doctor.read_jetson(_jetson_root(tmp_path, "garbage")).l4t is None


def test_gather_reads_the_file_system_only_without_probe(tmp_path):
    """Fake cv2 and TensorRT packages on a fabricated sys.path: checks deploy-kit's reading of them."""
    site, apt = _site(tmp_path, "site"), _site(tmp_path, "apt")
    _package(site, "cv2", "opencv-python", "4.9.0.80")
    _package(apt, "cv2")
    trt_module = backends.get(backends.TENSORRT).module
    _package(site, trt_module, "tensorrt_cu12", "10.13.0")
    facts = doctor.gather(path=[site, apt], root=_jetson_root(tmp_path), prefix=_venv(tmp_path), base_prefix="/usr",
                          probe=False)
    assert [c.entry for c in facts.cv2.copies] == [site, apt]
    trt = facts.engine(backends.TENSORRT)
    assert (trt.version, trt.cuda_major, trt.copy.distribution) == ("10.13.0", 12, "tensorrt_cu12")
    rtx = facts.engine(backends.TENSORRT_RTX)
    assert rtx.copy is None and rtx.cuda_major is None
    assert facts.jetson.l4t == (36, 4, 3) and facts.venv.system_site_packages is True
    assert facts.numpy is None and facts.driver is None  # nothing was imported or probed


def test_cuda_major_of_a_flavour():
    """A fake backend object answering cuda_major(): checks deploy-kit's order of sources, not TensorRT."""
    pip13 = ModuleCopy("/s/tensorrt/__init__.py", "/s", "tensorrt_cu13", "10.14", "pip")
    apt = ModuleCopy("/usr/lib/python3.10/dist-packages/tensorrt/__init__.py", "/usr/lib/python3.10/dist-packages")
    plain = ModuleCopy("/s/tensorrt/__init__.py", "/s", "tensorrt", "10.14", "pip")

    class Answers:
        def cuda_major(self):
            return 12

    assert machine._cuda_major(None, pip13, None) == 13
    assert machine._cuda_major(None, apt, 12) == 12  # JetPack's apt TensorRT: JetPack's CUDA
    assert machine._cuda_major(None, plain, 12) is None
    assert machine._cuda_major(Answers(), pip13, None) == 12  # the backend's own answer comes first
    assert machine._cuda_major(object(), None, None) is None


# --------------------------------------------------------------------------- trap a: numpy 2, cv2 built for numpy 1
def _cv2(tmp_path, **fields):
    site = _site(tmp_path, "apt-site")
    _package(site, "cv2")
    return Cv2Facts(copies=doctor.find_module("cv2", [site]), **fields)


def test_trap_numpy2_with_a_numpy1_cv2(tmp_path):
    failing = Facts(executable="/v/bin/python", numpy="2.1.3", venv=Venv("/v", "/usr/bin", True),
                    cv2=_cv2(tmp_path, error=NUMPY_1_FAILURE))
    (line,) = _trap(doctor.traps(failing), "numpy")
    assert "its import fails (_ARRAY_API not found)" in line and line.endswith('/v/bin/python -m pip install "numpy<2" in this venv')
    built = Facts(numpy="2.0.0", cv2=_cv2(tmp_path, version="4.8.0", build_info=JETPACK_BUILD_INFO))
    (line,) = _trap(doctor.traps(built), "numpy")
    assert "numpy 1.21.5" in line and "in this venv" not in line
    # controls: numpy 1 with the same cv2; numpy 2 with a cv2 built for numpy 2
    assert doctor.traps(dataclasses.replace(built, numpy="1.26.4")) == []
    assert doctor.traps(Facts(numpy="2.1.3", cv2=_cv2(tmp_path, version="4.10.0", build_info=PIP_BUILD_INFO))) == []


# --------------------------------------------------------------------------- trap b: pip OpenCV hiding another cv2
def test_trap_pip_opencv_hides_another_cv2(tmp_path):
    venv_site, apt_site = _site(tmp_path, "venv-site"), _site(tmp_path, "apt-site")
    _package(venv_site, "cv2", "opencv-python-headless", "4.10.0.84")
    _package(apt_site, "cv2")
    shadowed = Facts(executable="/v/bin/python", numpy="1.26.4",
                     cv2=Cv2Facts(copies=doctor.find_module("cv2", [venv_site, apt_site]), build_info=PIP_BUILD_INFO))
    (line,) = _trap(doctor.traps(shadowed), "hides")
    assert line.endswith("-> /v/bin/python -m pip uninstall opencv-python-headless")
    assert "https://github.com/opencv/opencv-python/issues/524" in line and "GStreamer NO" in line
    # controls: the apt copy first; the pip wheel alone; a cv2 from a distribution that is not OpenCV's wheel
    first_apt = dataclasses.replace(shadowed, cv2=Cv2Facts(copies=doctor.find_module("cv2", [apt_site, venv_site])))
    alone = dataclasses.replace(shadowed, cv2=Cv2Facts(copies=doctor.find_module("cv2", [venv_site])))
    other = _site(tmp_path, "other-site")
    _package(other, "cv2", "opencv-jetson-placeholder", "4.8.0")
    not_opencv = dataclasses.replace(shadowed, cv2=Cv2Facts(copies=doctor.find_module("cv2", [other, apt_site])))
    for facts in (first_apt, alone, not_opencv):
        assert doctor.traps(facts) == []


def test_trap_pip_opencv_on_jetpack6_with_numpy2_also_pins_numpy(tmp_path):
    venv_site = _site(tmp_path, "venv-site")
    _package(venv_site, "cv2", "opencv-python", "4.10.0.84")
    apt_site = _site(tmp_path, "apt-site")
    _package(apt_site, "cv2")
    copies = doctor.find_module("cv2", [venv_site, apt_site])
    apt = dataclasses.replace(copies[1], entry="/usr/lib/python3/dist-packages")  # as on the device
    facts = Facts(executable="python3", numpy="2.2.0", jetson=Jetson((36, 4, 3)), venv=Venv("/v", "/usr/bin", True),
                  cv2=Cv2Facts(copies=(copies[0], apt)))
    (line,) = _trap(doctor.traps(facts), "hides")
    assert 'then python3 -m pip install "numpy<2" (JetPack\'s cv2 is built against numpy 1.21.5)' in line
    assert "numpy<2" not in _trap(doctor.traps(dataclasses.replace(facts, numpy="1.26.4")), "hides")[0]


# --------------------------------------------------------------------------- trap c: Jetson venv
def test_trap_jetson_venv_without_system_site_packages(tmp_path):
    root = _jetson_root(tmp_path)
    cases = {("/usr/bin", False): "does not include system site-packages",
             ("/home/u/.local/share/uv/python/cpython-3.10.12/bin", True): "was made from /home/u/.local/share/uv",
             ("/usr/bin", True): None}
    for (home, system), expected in cases.items():
        facts = doctor.gather(path=[], root=root, prefix=_venv(tmp_path, home, system), base_prefix="/usr", probe=False)
        found = _trap(doctor.traps(facts), "venv")
        if expected is None:
            assert found == [], found
        else:
            (line,) = found
            assert expected in line and line.endswith("-> /usr/bin/python3 -m venv --system-site-packages VENV")
        # control: the same venv off a Jetson
        off = doctor.gather(path=[], root=str(tmp_path / "no-jetson"), prefix=_venv(tmp_path, home, system),
                            base_prefix="/usr", probe=False)
        assert doctor.traps(off) == []


def test_trap_jetson_non_system_interpreter_without_venv(tmp_path):
    root = _jetson_root(tmp_path)
    conda = doctor.gather(path=[], root=root, prefix="/opt/conda", base_prefix="/opt/conda", probe=False)
    assert _trap(doctor.traps(dataclasses.replace(conda, executable="/opt/conda/bin/python")), "not the system")
    system = doctor.gather(path=[], root=root, prefix="/usr", base_prefix="/usr", probe=False)
    assert doctor.traps(system) == []


# --------------------------------------------------------------------------- trap d: no DLA
def _trt(version="10.3.0"):
    copy = ModuleCopy("/usr/lib/python3.10/dist-packages/tensorrt/__init__.py", "/usr/lib/python3.10/dist-packages")
    return EngineFacts(backends.TENSORRT, "tensorrt", copy, version)


def test_trap_dla_core_on_a_device_without_one():
    ask = [("model.trt10.plan", 0)]
    orin_nano = Facts(base_prefix="/usr", jetson=Jetson((36, 4, 3), "NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super"),
                      engines=(_trt(),))
    (line,) = _trap(doctor.traps(orin_nano, ask), "DLA")
    assert "model.trt10.plan asks for DLA core 0" in line and "rebuild for the GPU" in line
    assert _trap(doctor.traps(dataclasses.replace(orin_nano, dla_cores=0), ask), "0 DLA cores")
    assert _trap(doctor.traps(Facts(engines=(_trt("11.1.0"),), dla_cores=None), ask), "TensorRT 11.1.0")
    one = Facts(base_prefix="/usr", jetson=Jetson((36, 4, 3), "NVIDIA Jetson Orin NX"), dla_cores=1, engines=(_trt(),))
    assert _trap(doctor.traps(one, [("--dla-core", 1)]), "has 1 (cores 0..0)")
    # controls: an AGX Orin with 2 cores; no request; an unknown device (no evidence either way)
    agx = Facts(base_prefix="/usr", jetson=Jetson((36, 4, 3), "NVIDIA Jetson AGX Orin Developer Kit"), dla_cores=2, engines=(_trt(),))
    assert doctor.traps(agx, ask + [("--dla-core", 1)]) == []
    assert doctor.traps(orin_nano, []) == []
    assert doctor.traps(Facts(base_prefix="/usr", jetson=Jetson((36, 4, 3), "NVIDIA Jetson AGX Orin")), ask) == []


# --------------------------------------------------------------------------- trap e: TensorRT newer than the driver
def test_trap_tensorrt_cuda_newer_than_the_driver():
    copy = ModuleCopy("/v/site/tensorrt/__init__.py", "/v/site", "tensorrt_cu13", "10.14.1", "pip")
    cu13 = Facts(driver=12080, engines=(EngineFacts(backends.TENSORRT, "tensorrt", copy, "10.14.1", cuda_major=13),))
    (line,) = _trap(doctor.traps(cu13), "CUDA 13")
    assert "driver supports CUDA 12.8 only" in line and "cu12 wheel (tensorrt-cu12)" in line and ">= 580" in line
    # controls: a CUDA 13 driver; no driver at all (nothing to compare); a cu12 build
    assert doctor.traps(dataclasses.replace(cu13, driver=13000)) == []
    assert doctor.traps(dataclasses.replace(cu13, driver=None)) == []
    cu12 = EngineFacts(backends.TENSORRT, "tensorrt", copy, "10.14.1", cuda_major=12)
    assert doctor.traps(dataclasses.replace(cu13, engines=(cu12,))) == []


# --------------------------------------------------------------------------- artifacts and the CLI
def _bundle(tmp_path, dla_core=None, backend=backends.TENSORRT_RTX):
    """A bundle folder written with deploy-kit's own manifest functions (graph and plan bytes are
    placeholders: env reads manifests, it never opens the graph or deserialises the plan)."""
    from deploy_kit.manifest import file_sha256, input_conventions

    out = tmp_path / "m.fp16.bundle"
    out.mkdir()
    (out / "m.fp16.onnx").write_bytes(b"graph")
    meta = dict(deploy_kit_version="0.1.0", model="nafnet", variant="tiny", input_shape=[1, 3, 64, 64], precision="fp16",
                input_names=["input"], output_names=["output"], output_kind="image", input=input_conventions(3, 16))
    write_manifest(str(out / "manifest.json"),
                   make_manifest(meta, onnx="m.fp16.onnx", files={"m.fp16.onnx": file_sha256(str(out / "m.fp16.onnx"))}))
    plan = out / "m.fp16.x.plan"
    plan.write_bytes(b"plan")
    section = {"name": backend, "version": "1.7.1"}
    if dla_core is not None:
        section["dla_core"] = dla_core
    write_manifest(str(plan) + ".json", make_manifest(meta, onnx="m.fp16.onnx", plan=plan.name, backend=section))
    return str(out), str(plan)


def test_check_target_bundle_and_plan(tmp_path):
    bundle, plan = _bundle(tmp_path, dla_core=0)
    described, checks = doctor.check_target(bundle)
    assert described.startswith(f"bundle {bundle} (nafnet tiny, fp16)")
    by = {c.backend: c for c in checks}
    assert set(by) == set(backends.names())
    rtx = by[backends.TENSORRT_RTX]
    assert rtx.label == "m.fp16.x.plan" and rtx.dla_core == 0 and rtx.ok is not None
    assert (rtx.ok, rtx.why) == doctor.can_run_artifact(backends.get(backends.TENSORRT_RTX), read_typed(plan + ".json"))
    assert by[backends.TENSORRT].ok is None and f"--backend {backends.TENSORRT}" in by[backends.TENSORRT].why
    assert by[backends.ONNXRUNTIME].label == "m.fp16.onnx" and by[backends.ONNXRUNTIME].ok  # the test extra has ORT
    described, checks = doctor.check_target(plan)
    assert [c.backend for c in checks] == [backends.TENSORRT_RTX] and described.startswith(f"plan {plan}")
    lines = doctor.target_lines(described, checks)
    assert lines[1].lstrip().startswith(backends.TENSORRT_RTX) and "[DLA core 0]" in lines[1]


def test_check_target_refuses_what_it_cannot_check(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        doctor.check_target(str(tmp_path / "nothing"))
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(UsageError, match="not a bundle or a .plan"):
        doctor.check_target(str(onnx))
    plan = tmp_path / "lone.plan"
    plan.write_bytes(b"x")
    with pytest.raises(UsageError, match="no manifest"):
        doctor.check_target(str(plan))


def test_can_run_artifact_reports_a_broken_package_as_a_finding():
    """Fake backend objects: checks deploy-kit's dispatch (the answer passed on; a raising package)."""
    class Fine:
        def can_run_artifact(self, manifest=None):
            return False, f"new {manifest}"

    class Broken:
        def can_run_artifact(self, manifest=None):
            raise OSError("libnvinfer.so.10: cannot open shared object file")

    assert doctor.can_run_artifact(Fine(), "m") == (False, "new m")
    ok, why = doctor.can_run_artifact(Broken(), "m")
    assert not ok and "libnvinfer.so.10" in why


def _env(*args, env=None):
    cmd = [sys.executable, "-c", "from deploy_kit.cli import main; main()", "env", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_env_command_on_this_machine_and_a_bundle(tmp_path):
    bundle, _ = _bundle(tmp_path)
    proc = _env(bundle)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    for label in ("deploy-kit", "python", "venv", "numpy", "cv2", *backends.names(engines=True), "CUDA", "GPU", "Jetson"):
        assert any(ln.split(" ", 1)[0] == label for ln in out), (label, proc.stdout)
    assert f"can it run bundle {bundle} (nafnet tiny, fp16)?" in out
    assert any(ln.strip().startswith(backends.TENSORRT_RTX) and "m.fp16.x.plan" in ln for ln in out)
    assert out[-1].startswith("trap") and "torch" in proc.stdout and "onnxruntime" in proc.stdout
    for bad in ([str(tmp_path / "nothing")], ["--dla-core", "-1"]):
        proc = _env(*bad)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and proc.stderr.startswith("error:"), proc.stderr


def test_env_never_crashes_on_a_broken_cv2(tmp_path):
    """A fake cv2 package first on PYTHONPATH that fails as JetPack 6's does under numpy 2: checks
    that env reports it (and, under numpy 2, trap a), not OpenCV's behaviour."""
    site = _site(tmp_path, "site")
    _package(site, "cv2", body="import sys\nsys.stderr.write('AttributeError: _ARRAY_API not found\\n')\n"
                               "raise ImportError('numpy.core.multiarray failed to import')\n")
    env = {**os.environ, "PYTHONPATH": site + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = _env(env=env)
    assert proc.returncode == 0, proc.stderr
    cv2_line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("cv2"))
    assert f"not importable ({NUMPY_1_FAILURE})" in cv2_line and site in cv2_line
    import numpy

    numpy_trap = [ln for ln in proc.stdout.splitlines() if ln.startswith("trap:") and "numpy<2" in ln]
    assert bool(numpy_trap) == (int(numpy.__version__.split(".")[0]) >= 2), proc.stdout
