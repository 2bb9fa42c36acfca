"""The product as a user installs it: the built wheel, in fresh virtual environments, run from
outside the source tree.

* The wheel is built once per session from a snapshot of the source tree. It must carry every
  file of the package, the calibration manifests (top-level ``calibration/`` → package data
  ``deploy_kit/calibration/``) and the demo checkpoints, declare a torch-free core, and hold no tests.
* ``core_venv``: ``pip install WHEEL[ort,opencv,video]`` into a fresh venv (no system site-packages):
  a desktop or server. No torch, onnx or scikit-image may arrive; the CLI, ``env`` and
  ``deploy_kit.runtime`` work. Reusable by later tests: ``core_venv.run("deploy-kit", "verify",
  bundle, cwd=tmp_path)``.
* ``export_venv``: torch first (``DEPLOY_KIT_WHEEL_TORCH_SPEC``, default ``torch==2.13.0``, the CPU
  wheel here), then ``WHEEL[export,rtx]``; INT8 exports run from a temporary directory and must
  find the default calibration set and the demo checkpoint in the installed package.
* Jetson-like installs (the last section): the wheel on Python 3.10 beside a JetPack 6-like set (a
  numpy-1 OpenCV that pip cannot see, numpy 1.26.4, onnxruntime 1.19) and beside JetPack 6's apt
  numpy 1.21.5; on Python 3.12; a cv2 already there is neither replaced nor shadowed; the wheel's
  requirements evaluated for JetPack 6 and 7 (aarch64) and resolved against aarch64 wheels. Python
  3.10 and 3.12 come from ``DEPLOY_KIT_PY310`` / ``DEPLOY_KIT_PY312``, else pyenv, else ``PATH``
  (skipped with the reason when absent).

Everything here needs pip to reach the package index (onnxruntime, onnx, ...): the ``pip_index``
fixture probes it with ``pip download onnxruntime`` and skips with the reason when that fails.
Deselect with ``-m "not install"``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parents[2]
PIP_TIMEOUT = 900
RUN_TIMEOUT = 600
TORCH_SPEC_VAR = "DEPLOY_KIT_WHEEL_TORCH_SPEC"
DEFAULT_TORCH_SPEC = "torch==2.13.0"

#: distributions the core install (``WHEEL[ort,video]``) must not pull in
HEAVY_DISTS = {
    "torch", "onnx", "onnxsim", "onnxslim", "onnxconverter-common", "scikit-image", "scipy",
    "tensorrt", "tensorrt-cu13", "tensorrt-rtx-cu13", "polygraphy",
}
#: environment variables that would let the source tree or another environment leak into a venv run
_SCRUB = {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "VIRTUAL_ENV", "DEPLOY_KIT_CALIBRATION_DIR"}
#: top-level entries of the source tree that are build/run leftovers, not sources
_ROOT_SKIP = {"build", "dist", "out", "deploy-kit-out"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _tail(proc: subprocess.CompletedProcess, n: int = 25) -> str:
    # the machine's pip config lists local indexes that warn on every missing project: drop those
    lines = [l for l in (proc.stdout + proc.stderr).splitlines() if "is ignored: it is neither" not in l]
    return "\n".join(lines[-n:])


def _check(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"{what} exited {proc.returncode}:\n{_tail(proc)}"
    return proc


def _outside_repo(path: Path) -> Path:
    path = Path(path).resolve()
    assert REPO not in path.parents and path != REPO, f"{path} is inside the source tree {REPO}"
    return path


@dataclass(frozen=True)
class Venv:
    """A fresh virtual environment holding the installed wheel.

    ``run`` executes one of its commands with a clean environment: no ``PYTHONPATH``, its ``bin/``
    first on ``PATH``, no ``DEPLOY_KIT_CALIBRATION_DIR``, and the working directory the caller
    names (outside the source tree), so nothing from the checkout can stand in for the wheel.
    """

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB and not k.startswith("PYTEST_")}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(self.root)
        env["PYTHONNOUSERSITE"] = "1"
        env.update(extra)
        return env

    def run(self, *args, cwd: Path, timeout: float = RUN_TIMEOUT, **env: str) -> subprocess.CompletedProcess:
        """Run ``args`` in ``cwd``; ``args[0]`` is taken from the venv's ``bin/`` when it is there
        (``deploy-kit``, ``python``, ``pip``), else from ``PATH``. Extra keyword arguments are
        environment variables. Returns the CompletedProcess (text, both streams captured)."""
        exe = self.bin / str(args[0])
        cmd = [str(exe) if exe.exists() else str(args[0]), *map(str, args[1:])]
        return subprocess.run(cmd, cwd=_outside_repo(cwd), env=self.env(**env), capture_output=True, text=True,
                              timeout=timeout)

    def pip(self, *args, timeout: float = PIP_TIMEOUT) -> subprocess.CompletedProcess:
        return self.run("python", "-m", "pip", "--disable-pip-version-check", "--no-input", *args, cwd=self.root,
                        timeout=timeout)

    def py(self, code: str, cwd: Path) -> subprocess.CompletedProcess:
        return self.run("python", "-c", code, cwd=cwd)

    def dists(self) -> dict[str, str]:
        """Installed distributions, normalised name → version."""
        out = _check(self.pip("list", "--format=json"), "pip list")
        return {_norm(d["name"]): d["version"] for d in json.loads(out.stdout)}

    def site_packages(self) -> Path:
        out = _check(self.py("import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=self.root), "sysconfig")
        return Path(out.stdout.strip())


def _make_venv(root: Path, python: str | os.PathLike = sys.executable) -> Venv:
    # no --system-site-packages: only what the wheel and its extras bring may be importable
    proc = subprocess.run([str(python), "-m", "venv", str(root)], capture_output=True, text=True, timeout=300)
    if proc.returncode != 0 and str(python) != sys.executable:
        pytest.skip(f"{python} cannot make a venv (no venv/ensurepip module?): {_tail(proc, 2)}")
    _check(proc, f"{python} -m venv")
    cfg = (root / "pyvenv.cfg").read_text()
    assert re.search(r"include-system-site-packages\s*=\s*false", cfg), cfg
    return Venv(root)


@dataclass(frozen=True)
class BuiltWheel:
    path: Path
    source: Path  # the snapshot of the source tree it was built from

    def names(self) -> list[str]:
        with zipfile.ZipFile(self.path) as zf:
            return zf.namelist()

    def metadata(self) -> str:
        with zipfile.ZipFile(self.path) as zf:
            (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
            return zf.read(meta).decode()


def _snapshot_ignore(root: Path):
    def ignore(d: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".egg-info", ".plan"))}
        if Path(d) == root:  # .git, .venv, .ci, build leftovers
            skip |= {n for n in names if n.startswith(".") or n in _ROOT_SKIP}
        return skip

    return ignore


# ---------------------------------------------------------------------------------------------
# session fixtures
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def pip_index(tmp_path_factory) -> None:
    """Skip (with the reason) when pip cannot fetch from the package index."""
    d = tmp_path_factory.mktemp("pip-probe")
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--no-deps",
           "--only-binary=:all:", "-q", "-d", str(d), "onnxruntime"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no package index: `pip download onnxruntime` did not finish ({exc})")
    finally:
        shutil.rmtree(d, ignore_errors=True)
    if proc.returncode != 0:
        why = " | ".join(_tail(proc, 2).splitlines())
        pytest.skip(f"no package index: `pip download onnxruntime` failed (network or pip config): {why}")


@pytest.fixture(scope="session")
def built_wheel(pip_index, tmp_path_factory) -> BuiltWheel:
    """The deploy-kit wheel, built once per session from a snapshot of the source tree (building in
    the checkout would write build/ and *.egg-info there while others work in it)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(REPO, src, ignore=_snapshot_ignore(REPO))
    dist = base / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--disable-pip-version-check", "--no-input", "--no-deps", "-q",
           "-w", str(dist), str(src)]
    _check(subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT, cwd=base), "pip wheel")
    wheels = sorted(dist.glob("deploy_kit-*.whl"))
    assert len(wheels) == 1, wheels
    return BuiltWheel(wheels[0], src)


@pytest.fixture(scope="session")
def core_venv(built_wheel, tmp_path_factory):
    """A fresh venv with ``pip install WHEEL[ort,opencv,video]``: the torch-free core plus onnxruntime,
    pip's OpenCV and PyAV (a desktop or server; a Jetson uses JetPack's OpenCV, see the last section).

    Reusable: ``core_venv.run("deploy-kit", "run", bundle, "photo.png", cwd=tmp_path)``.
    """
    venv = _make_venv(tmp_path_factory.mktemp("core") / "venv")
    _check(venv.pip("install", "-q", "--no-compile", f"{built_wheel.path}[ort,opencv,video]"),
           "pip install WHEEL[ort,opencv,video]")
    yield venv
    shutil.rmtree(venv.root, ignore_errors=True)


@pytest.fixture(scope="session")
def export_venv(built_wheel, tmp_path_factory):
    """A fresh venv with torch, then ``pip install WHEEL[export,rtx]`` (the build machine)."""
    venv = _make_venv(tmp_path_factory.mktemp("export") / "venv")
    spec = os.environ.get(TORCH_SPEC_VAR) or DEFAULT_TORCH_SPEC
    if not os.environ.get(TORCH_SPEC_VAR):
        # never let the default pull a multi-GB CUDA torch from the index: look before installing
        report = venv.root / "torch-report.json"
        _check(venv.pip("install", "--dry-run", "-q", "--report", str(report), *shlex.split(spec)), f"pip dry-run {spec}")
        pulled = [i["metadata"]["name"] for i in json.loads(report.read_text())["install"]]
        cuda = [n for n in pulled if _norm(n).startswith("nvidia-") or _norm(n) == "triton"]
        if cuda:
            shutil.rmtree(venv.root, ignore_errors=True)
            pytest.skip(f"{spec} resolves to a CUDA build here (pulls {', '.join(cuda[:3])}, ...); set {TORCH_SPEC_VAR} "
                        "to a CPU torch, e.g. 'torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu'")
    _check(venv.pip("install", "-q", "--no-compile", *shlex.split(spec)), f"pip install {spec}")
    _check(venv.pip("install", "-q", "--no-compile", f"{built_wheel.path}[export,rtx]"), "pip install WHEEL[export,rtx]")
    yield venv
    shutil.rmtree(venv.root, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# the wheel
# ---------------------------------------------------------------------------------------------
def test_wheel_carries_the_package_its_data_and_no_tests(built_wheel):
    names = set(built_wheel.names())
    src = built_wheel.source
    # every source file of the package (a subpackage missing from pyproject's list fails here)
    package = {p.relative_to(src).as_posix() for p in (src / "deploy_kit").rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}
    assert package - names == set(), "files of deploy_kit/ missing from the wheel"
    # calibration manifests and their README, as package data
    calib = {f"deploy_kit/calibration/{p.name}" for p in (src / "calibration").iterdir()
             if p.suffix == ".json" or p.name == "README.md"}
    assert {"deploy_kit/calibration/default.json", "deploy_kit/calibration/eval.json",
            "deploy_kit/calibration/README.md"} <= calib
    assert calib - names == set(), "calibration manifests missing from the wheel"
    # the demo checkpoints with their JSON cards and README
    demo = {n for n in names if n.startswith("deploy_kit/demo/")}
    assert {"deploy_kit/demo/nafnet-demo-w16-noise25.pth", "deploy_kit/demo/restormer-demo-d12-blur9.pth",
            "deploy_kit/demo/nafnet-demo-w16-noise25.json", "deploy_kit/demo/README.md"} <= demo
    # nothing but the package and its metadata: no tests, benchmarks, plugins or a top-level calibration/
    top = {n.split("/", 1)[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"deploy_kit"}, top
    assert not any("/tests/" in f"/{n}" or n.startswith("tests/") or "conftest" in n for n in names)


def test_wheel_core_requirements_are_torch_free(built_wheel):
    reqs = [l.split(":", 1)[1].strip() for l in built_wheel.metadata().splitlines() if l.startswith("Requires-Dist:")]
    core = {_norm(re.split(r"[ <>=!~;\[(]", r, 1)[0]) for r in reqs if "extra ==" not in r}
    assert core == {"click", "numpy", "pillow"}, core  # no OpenCV: see test_wheel_requirements_on_jetpack
    extras = {m.group(1) for r in reqs for m in [re.search(r"extra == ['\"]([\w-]+)['\"]", r)] if m}
    assert {"export", "ort", "opencv", "rtx", "tensorrt", "video", "polygraphy", "test", "all", "openvino", "ray"} <= extras, extras
    torch_in = {m.group(1) for r in reqs if _norm(r).startswith("torch") and not _norm(r).startswith("torchvision")
                for m in [re.search(r"extra == ['\"]([\w-]+)['\"]", r)] if m}
    assert torch_in == {"export", "all"}, torch_in


# ---------------------------------------------------------------------------------------------
# the core install
# ---------------------------------------------------------------------------------------------
def test_core_install_pulls_no_torch_onnx_or_skimage(core_venv, tmp_path):
    dists = core_venv.dists()
    assert "deploy-kit" in dists and "onnxruntime" in dists, dists
    assert HEAVY_DISTS & set(dists) == set(), f"the core install pulled {sorted(HEAVY_DISTS & set(dists))}"
    proc = core_venv.py("import torch", cwd=tmp_path)
    assert proc.returncode != 0 and "No module named 'torch'" in proc.stderr, _tail(proc)


def test_core_package_is_the_installed_wheel(core_venv, tmp_path):
    proc = _check(core_venv.py("import deploy_kit; print(deploy_kit.__file__)", cwd=tmp_path), "import deploy_kit")
    location = Path(proc.stdout.strip()).resolve()
    assert core_venv.site_packages().resolve() in location.parents, location


def test_core_cli_help_env_and_runtime_work(core_venv, tmp_path):
    out = _check(core_venv.run("deploy-kit", "--help", cwd=tmp_path), "deploy-kit --help").stdout
    assert "export" in out and "env" in out
    env = _check(core_venv.run("deploy-kit", "env", cwd=tmp_path), "deploy-kit env").stdout
    assert re.search(r"torch\s+not installed", env), env
    assert re.search(r"onnxruntime\s+\d", env), env
    code = ("import sys, deploy_kit.runtime\n"
            "heavy = sorted(m for m in ('torch', 'onnx', 'click', 'skimage') if m in sys.modules)\n"
            "print('HEAVY:' + ','.join(heavy))")
    proc = _check(core_venv.py(code, cwd=tmp_path), "import deploy_kit.runtime")
    assert proc.stdout.strip().splitlines()[-1] == "HEAVY:", proc.stdout


def test_core_finds_the_installed_calibration_manifests(core_venv, tmp_path):
    code = ("import os\nfrom deploy_kit.precision.calibration import manifest_dir, manifest_path\n"
            "print(manifest_dir()); print(os.path.isfile(manifest_path('default')))")
    proc = _check(core_venv.py(code, cwd=tmp_path), "manifest_dir")
    where, exists = proc.stdout.strip().splitlines()[-2:]
    assert Path(where).resolve() == core_venv.site_packages().resolve() / "deploy_kit" / "calibration"
    assert exists == "True"


# ---------------------------------------------------------------------------------------------
# the export install (build machine), run outside the source tree
# ---------------------------------------------------------------------------------------------
def test_export_int8_default_calibration_from_the_wheel(export_venv, tmp_path):
    proc = export_venv.py("import deploy_kit; print(deploy_kit.__file__)", cwd=tmp_path)
    assert export_venv.site_packages().resolve() in Path(_check(proc, "import").stdout.strip()).resolve().parents
    # a fresh range cache, so calibration really reads the images the installed manifest lists
    proc = export_venv.run("deploy-kit", "export", "nafnet", "--variant", "tiny", "--height", "64", "--width", "64",
                           "--int8", "--calib-count", "8", "--backend", "tensorrt-rtx", "--out", "O", cwd=tmp_path,
                           XDG_CACHE_HOME=str(tmp_path / "cache"))
    _check(proc, "deploy-kit export nafnet --int8 --backend tensorrt-rtx")
    assert "calibration: manifest default" in proc.stdout, proc.stdout
    stem = tmp_path / "O" / "nafnet-tiny-64x64-tlc.int8"
    for suffix in (".onnx", ".rtx1.plan", ".rtx1.plan.json", ".quality.json", ".parity.json"):
        assert Path(f"{stem}{suffix}").is_file(), suffix


def test_export_int8_with_the_installed_demo_checkpoint(export_venv, tmp_path):
    weights = export_venv.site_packages() / "deploy_kit" / "demo" / "nafnet-demo-w16-noise25.pth"
    assert weights.is_file()
    proc = export_venv.run("deploy-kit", "export", "nafnet", "--weights", weights, "--height", "64", "--width", "64",
                           "--int8", "--calib-count", "8", "--backend", "none", "--out", "O2", cwd=tmp_path,
                           XDG_CACHE_HOME=str(tmp_path / "cache"))
    _check(proc, "deploy-kit export nafnet --weights <installed demo> --int8")
    assert (tmp_path / "O2" / "nafnet-demo-w16-64x64.int8.onnx").is_file()
    assert (tmp_path / "O2" / "nafnet-demo-w16-64x64.int8.quality.json").is_file()
    assert not list((tmp_path / "O2").glob("*.plan"))


# ---------------------------------------------------------------------------------------------
# the device half: bundles made by the wheel's export, verified and run with the core alone
# ---------------------------------------------------------------------------------------------
DEMO_NAFNET = "nafnet-demo-w16-noise25.pth"


@pytest.fixture(scope="session")
def device_bundles(export_venv, tmp_path_factory):
    """FP16 (256x256) and INT8 (128x128) bundles of the trained demo NAFNet, made by ``export --bundle``
    in the export install; the device tests copy them elsewhere and use only the core install."""
    work = tmp_path_factory.mktemp("device-export")
    weights = export_venv.site_packages() / "deploy_kit" / "demo" / DEMO_NAFNET
    made = {}
    for prec, size, extra in (("fp16", 256, []), ("int8", 128, ["--calib-count", "8"])):
        proc = export_venv.run("deploy-kit", "export", "nafnet", "--weights", weights, "--height", size, "--width", size,
                               f"--{prec}", *extra, "--bundle", "--backend", "none", "--samples", "2", "--out", "O",
                               cwd=work, XDG_CACHE_HOME=str(work / "cache"))
        _check(proc, f"deploy-kit export nafnet --{prec} --bundle")
        src = work / "O" / f"nafnet-demo-w16-{size}x{size}.{prec}.bundle"
        made[prec] = shutil.copytree(src, tmp_path_factory.mktemp("device") / src.name)  # only the bundle travels
    return made


@pytest.mark.parametrize("prec", ["fp16", "int8"])
def test_device_verify_bundle_without_torch(core_venv, device_bundles, tmp_path, prec):
    proc = core_venv.run("deploy-kit", "verify", device_bundles[prec], cwd=tmp_path)
    _check(proc, f"deploy-kit verify <{prec} bundle> (core install)")
    assert "parity: all gates passed" in proc.stdout and "onnxruntime" in proc.stdout, proc.stdout
    assert "no engine runtime usable here" in proc.stderr, proc.stderr  # says why it fell back
    rep = json.loads((device_bundles[prec] / "verify-onnxruntime-cpu.parity.json").read_text())
    assert rep["passed"] and rep["checks"][0]["precision"] == prec


def test_device_run_restores_a_1000x1500_photo_without_torch(core_venv, device_bundles, tmp_path):
    """A noisy 1000x1500 photo through the 256x256 FP16 demo bundle: tiled, written as the input was,
    and really restored (PSNR against the clean photo rises)."""
    import numpy as np
    from PIL import Image

    from deploy_kit.data.samples import sample_images

    clean = sample_images(1, 3, 1000, 1500, None, 0)[0][0].transpose(1, 2, 0)  # a real photo, float HWC
    noisy = np.clip(clean + np.random.default_rng(0).normal(0, 25 / 255, clean.shape), 0, 1)
    Image.fromarray((noisy * 255 + 0.5).astype(np.uint8)).save(tmp_path / "photo.png")
    proc = core_venv.run("deploy-kit", "run", device_bundles["fp16"], tmp_path / "photo.png", "--out", tmp_path / "out",
                         cwd=tmp_path)
    _check(proc, "deploy-kit run <bundle> photo.png (core install)")
    assert "restored 1 images" in proc.stdout and "MP/s" in proc.stdout, proc.stdout
    out = Image.open(tmp_path / "out" / "photo.png")
    assert out.mode == "RGB" and out.size == (1500, 1000)
    restored = np.asarray(out, np.float64) / 255
    target = np.round(clean * 255) / 255

    def psnr(a):
        return 10 * np.log10(1 / np.mean((a - target) ** 2))

    before, after = psnr(np.asarray(Image.open(tmp_path / "photo.png"), np.float64) / 255), psnr(restored)
    assert after > before + 3, (before, after)
    # the demo has global channel attention: its bundle carries the sync graph, run torch-free too
    proc = core_venv.run("deploy-kit", "run", device_bundles["fp16"], tmp_path / "photo.png", "--out", tmp_path / "sync",
                         "--context", "sync:2", cwd=tmp_path)
    _check(proc, "deploy-kit run <bundle> photo.png --context sync:2 (core install)")
    assert "2 passes" in proc.stdout + proc.stderr
    synced = np.asarray(Image.open(tmp_path / "sync" / "photo.png"), np.float64) / 255
    assert psnr(synced) > before + 3 and not np.array_equal(synced, restored)


RESTORER_LOOP = """
import sys, numpy as np
from deploy_kit.runtime import Restorer
from deploy_kit.runtime.video import read_frames
frames = list(read_frames(sys.argv[2]))
with Restorer(sys.argv[1]) as r:
    serial = [r.restore(f) for f in frames]            # one frame at a time, in this thread
    piped = list(r.restore_stream(iter(frames)))       # pipelined
    out = np.empty_like(serial[0])
    again = r.restore(frames[0], out=out)
assert all(a.tobytes() == b.tobytes() for a, b in zip(serial, piped)) and len(piped) == len(frames)
assert again is out and np.array_equal(out, serial[0])
print("torch" in sys.modules, len(frames), serial[0].shape, r.note)
"""


def test_device_run_folder_video_and_api_without_torch(core_venv, device_bundles, tmp_path):
    """The torch-free core with [ort,video]: run restores a folder of photos and an MP4 through a bundle,
    and the Python API restores frames in a loop, pipelined output equal to the serial one."""
    import numpy as np
    from PIL import Image

    from tests.media import make_clip

    rng = np.random.default_rng(1)
    (tmp_path / "in").mkdir()
    for i, (h, w) in enumerate(((300, 410), (260, 260))):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(tmp_path / "in" / f"p{i}.png")
    make_clip(str(tmp_path / "in" / "clip.mp4"), frames=8, width=320, height=180, fps=24, audio=True)
    proc = core_venv.run("deploy-kit", "run", device_bundles["fp16"], tmp_path / "in", "--out", tmp_path / "out",
                         cwd=tmp_path)
    _check(proc, "deploy-kit run <bundle> folder with photos and a video (core install)")
    assert "restored 2 images" in proc.stdout and "restored 8 frames" in proc.stdout, proc.stdout
    # the outputs and the run's journal (docs/jobs.md), nothing else: no partial or temp file left
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".deploy-kit-journal.jsonl", "clip.mp4", "p0.png",
                                                                     "p1.png"]
    script = tmp_path / "loop.py"
    script.write_text(RESTORER_LOOP)
    proc = core_venv.run("python", script, device_bundles["fp16"], tmp_path / "in" / "clip.mp4", cwd=tmp_path)
    _check(proc, "Restorer loop (core install)")
    assert proc.stdout.split()[:2] == ["False", "8"], proc.stdout


# ---------------------------------------------------------------------------------------------
# Jetson-like installs: Python 3.10 and 3.12, a cv2 pip cannot see, numpy 1
# ---------------------------------------------------------------------------------------------
#: JetPack 6 ships OpenCV 4.8.0 built against its apt numpy 1.21.5 (its cv2.getBuildInformation(),
#: https://github.com/ultralytics/ultralytics/pull/22010). This wheel is built against numpy 1 as well:
#: like JetPack's, it fails to import under numpy 2, so a numpy 2 slipping in shows up. 4.7, not 4.8:
#: the 4.8 wheels' cv2.typing needs numpy >= 1.22 (https://github.com/opencv/opencv/issues/23822)
#: and JetPack 6's apt numpy is 1.21.5.
JETPACK_OPENCV = "opencv-python-headless==4.7.0.72"
#: a cv2 built for numpy 1 and 2, for the default Python, where the core may bring numpy 2
ANY_OPENCV = "opencv-python-headless==4.10.0.84"
#: JetPack 6 after `pip install deploy-kit[ort]`: onnxruntime needs numpy >= 1.21.6, so pip puts the
#: newest numpy < 2 (1.26.4, also JetPack 7's apt numpy) beside apt's 1.21.5; onnxruntime 1.19, a
#: release from before the 1.24 cut of Python 3.10 wheels
JETPACK6_SET = ("numpy==1.26.4", "onnxruntime==1.19.2")
#: JetPack 6's apt numpy (Ubuntu 22.04), the core's lowest, and the lowest onnxruntime accepts
JETPACK6_APT_NUMPY, ORT_LOWEST_NUMPY = "1.21.5", "1.21.6"
#: pip options of every install below: the local indexes carry no Requires-Python data, so only
#: wheels tagged for the venv's Python may be picked
BINARY = ("-q", "--no-compile", "--only-binary=:all:")
#: marker environments of the JetPack Pythons (packaging's names; the rest is the running interpreter's)
JETPACK_ENVS = {
    "JetPack 6": {"platform_machine": "aarch64", "python_version": "3.10", "python_full_version": "3.10.12",
                  "sys_platform": "linux", "platform_system": "Linux", "implementation_name": "cpython"},
    "JetPack 7": {"platform_machine": "aarch64", "python_version": "3.12", "python_full_version": "3.12.3",
                  "sys_platform": "linux", "platform_system": "Linux", "implementation_name": "cpython"},
}


def _python(version: str) -> str:
    """An interpreter of ``version`` ("3.10"): ``DEPLOY_KIT_PY310``-style variable, else the newest
    pyenv one (``pyenv root``, else ``$PYENV_ROOT`` or ~/.pyenv), else ``python3.10`` on PATH; skips
    with the reason when there is none."""
    var = "DEPLOY_KIT_PY" + version.replace(".", "")
    exe = os.environ.get(var)
    if not exe:
        try:
            root = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=60).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            root = ""
        root = root or os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
        found = sorted(Path(root, "versions").glob(f"{version}.*/bin/python"),
                       key=lambda p: [int(v) if v.isdigit() else -1 for v in p.parts[-3].split(".")])
        exe = str(found[-1]) if found else shutil.which(f"python{version}")
    if not exe:
        pytest.skip(f"no Python {version} here: set {var} to one, or `pyenv install {version}`")
    if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
        pytest.fail(f"{var}={exe} is not an executable Python {version}")
    proc = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == version, f"{exe} ({var}) is not Python {version}: {_tail(proc)}"
    return exe


def _hide_opencv(spec: str, where: Path) -> Path:
    """Install ``spec`` into ``where`` as apt puts python3-opencv into /usr/lib/python3/dist-packages:
    importable, but with no dist-info, so pip neither sees nor satisfies a requirement with it."""
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", *BINARY, "--no-deps",
           "--target", str(where), spec]
    _check(subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT), f"pip install --target {spec}")
    for info in where.glob("*.dist-info"):
        shutil.rmtree(info)
    assert (where / "cv2" / "__init__.py").is_file()
    return where


def _see_system_dir(venv: Venv, system: Path) -> None:
    """What --system-site-packages gives a venv made from /usr/bin/python3: ``system`` on sys.path
    after the venv's own site-packages (a .pth line is appended, as the system folder is)."""
    (venv.site_packages() / "zz-system-site-packages.pth").write_text(f"{system}\n")


def _cv2_file(venv: Venv, cwd: Path) -> Path:
    """The file ``import cv2`` would load (found, not imported: cv2 needs a numpy, which a fresh venv lacks)."""
    proc = _check(venv.py("import importlib.util; print(importlib.util.find_spec('cv2').origin)", cwd=cwd), "find cv2")
    return Path(proc.stdout.strip().splitlines()[-1]).resolve()


def _opencv_dists(venv: Venv) -> set[str]:
    return {d for d in venv.dists() if d.startswith("opencv")}


@pytest.fixture(scope="session")
def jetson_bundle(built_wheel, tmp_path_factory) -> Path:
    """A bundle of a global-context model with a sync graph (the trained demo NAFNet without TLC, FP16,
    64x64), exported once in this (dev) environment: only the bundle travels to the venvs below. A
    trained denoiser, not random weights: its outputs are photos that H.264 keeps, and an input that
    differs by a level (another PyAV's YUV->RGB rounding) gives an output that differs by about as much."""
    pytest.importorskip("torch", reason="the dev environment has no torch to export the test bundle (export extra)")
    import deploy_kit
    from tests.conftest import run_cli

    work = tmp_path_factory.mktemp("jetson-export")
    weights = Path(deploy_kit.__file__).parent / "demo" / DEMO_NAFNET
    _check(run_cli("export", "nafnet", "--weights", weights, "--height", "64", "--width", "64", "--no-tlc", "--fp16",
                   "--bundle", "--backend", "none", "--samples", "2", "--out", work / "O", cwd=work),
           "deploy-kit export nafnet --weights <demo> --no-tlc --fp16 --bundle")
    bundle = work / "O" / "nafnet-demo-w16-64x64.fp16.bundle"
    assert (bundle / "nafnet-demo-w16-64x64.fp16.sync.onnx").is_file(), "the bundle carries no sync graph"
    return bundle


@dataclass(frozen=True)
class JetsonInputs:
    photo: Path  # a noisy 150x200 photo, PNG (3x4 tiles of 64x64)
    clip: Path  # 6 frames of 128x96 H.264 with an AAC track
    api: Path  # the Restorer script


JETSON_API = """
import sys, numpy as np
from deploy_kit._deps import opencv
from deploy_kit.runtime import Restorer
from deploy_kit.runtime.imageio import decode_image
from deploy_kit.runtime.video import read_frames
bundle, photo, clip, out = sys.argv[1:5]
image, _ = decode_image(photo)
frames = list(read_frames(clip))
with Restorer(bundle, "onnxruntime") as r:
    one = r.restore(image)
    serial = [r.restore(f) for f in frames]
    piped = list(r.restore_stream(iter(frames)))
with Restorer(bundle, "onnxruntime", context="sync:2") as r:
    synced = r.restore(image)
    synced_frames = [r.restore(f) for f in frames]
assert len(piped) == len(frames) and all(a.tobytes() == b.tobytes() for a, b in zip(serial, piped))
np.savez(out, one=one, synced=synced, inputs=np.stack(frames), frames=np.stack(synced_frames))
print("torch" in sys.modules, np.__version__, opencv().__file__)
"""


@pytest.fixture(scope="session")
def jetson_inputs(tmp_path_factory) -> JetsonInputs:
    pytest.importorskip("av", reason="PyAV is not installed here to write the test clip (pip install 'deploy-kit[video]')")
    from PIL import Image

    from deploy_kit.data.samples import sample_images
    from tests.media import make_clip

    d = tmp_path_factory.mktemp("jetson-inputs")
    noisy = sample_images(1, 3, 150, 200, "noise:25", 0)[0][0].transpose(1, 2, 0)
    Image.fromarray((np.clip(noisy, 0, 1) * 255 + 0.5).astype(np.uint8)).save(d / "photo.png")
    make_clip(str(d / "clip.mp4"), frames=6, width=128, height=96, fps=24, audio=True)
    (d / "api.py").write_text(JETSON_API)
    return JetsonInputs(d / "photo.png", d / "clip.mp4", d / "api.py")


def _device_runs(run, bundle: Path, inputs: JetsonInputs, work: Path) -> dict[str, Path]:
    """verify, run a photo, run a clip with --context sync:2 and the Restorer script, through ``run``
    (``run("deploy-kit", ...)`` / ``run("python", ...)`` in one environment); returns the outputs. ONNX
    Runtime by name in every environment, so they compare like with like (auto would pick OpenVINO in the
    dev environment, which has it)."""
    work.mkdir(parents=True, exist_ok=True)
    b = shutil.copytree(bundle, work / bundle.name)  # verify writes its report into the bundle
    proc = _check(run("deploy-kit", "verify", b, "--backend", "onnxruntime"), "deploy-kit verify <bundle>")
    assert "parity: all gates passed" in proc.stdout and "onnxruntime" in proc.stdout, proc.stdout
    _check(run("deploy-kit", "run", b, inputs.photo, "--out", work / "photo", "--backend", "onnxruntime"),
           "deploy-kit run <bundle> photo.png")
    proc = _check(run("deploy-kit", "run", b, inputs.clip, "--context", "sync:2", "--out", work / "clip",
                      "--backend", "onnxruntime"),
                  "deploy-kit run <bundle> clip.mp4 --context sync:2")
    assert "restored 6 frames" in proc.stdout and "2 passes" in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    proc = _check(run("python", inputs.api, b, inputs.photo, inputs.clip, work / "api.npz"), "the Restorer script")
    return {"photo": work / "photo" / "photo.png", "clip": work / "clip" / "clip.mp4", "api": work / "api.npz",
            "api_out": proc.stdout.split()}


@pytest.fixture(scope="session")
def dev_runs(jetson_bundle, jetson_inputs, tmp_path_factory) -> dict[str, Path]:
    """The same runs in this (dev) environment: numpy 2, pip's newest OpenCV, onnxruntime and PyAV."""
    pytest.importorskip("onnxruntime", reason="the dev environment has no onnxruntime (pip install 'deploy-kit[ort]')")
    cli = [sys.executable, "-c", "from deploy_kit.cli import main; main()"]
    work = tmp_path_factory.mktemp("jetson-dev")

    def run(*args):
        cmd = [*(cli if args[0] == "deploy-kit" else [sys.executable]), *map(str, args[1:])]
        return subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=RUN_TIMEOUT)

    return _device_runs(run, jetson_bundle, jetson_inputs, work)


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im, dtype=np.int16)


def _clip_frames(path: Path) -> np.ndarray:
    from deploy_kit.runtime.video import read_frames

    return np.stack(list(read_frames(str(path)))).astype(np.int16)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255 ** 2 / mse))


def _assert_like_dev(got: dict, ref: dict, bundle: Path) -> None:
    """Outputs of one environment against the dev environment's: photos (``run`` and the Restorer,
    tiled and ``sync:2``) within one 8-bit level. Video frames are decoded by each environment's PyAV,
    and PyAV < 18 (Python 3.10) converts YUV->RGB without swscale's exact rounding (a few levels
    apart here), so the Restorer's ``sync:2`` frames are checked against this environment restoring
    the very frames the other one decoded (within one level), and ``run``'s H.264 output against the
    dev one's by PSNR: both are lossy encodes (x264, 4:2:0) by different FFmpeg builds of frames
    decoded by them (measured 40 dB on Python 3.10, each ~36 dB from its own unencoded frames)."""
    from deploy_kit.runtime import Restorer

    diff = np.abs(_png(got["photo"]) - _png(ref["photo"])).max()
    assert diff <= 1, f"run photo.png differs from the dev environment's by {diff} levels"
    a, b = np.load(got["api"]), np.load(ref["api"])
    for key in ("one", "synced"):
        diff = np.abs(a[key].astype(np.int16) - b[key].astype(np.int16)).max()
        assert diff <= 1, f"the Restorer ({key}) differs from the dev environment's by {diff} levels"
    with Restorer(str(bundle), context="sync:2") as r:
        here = np.stack([r.restore(f) for f in a["inputs"]])
    diff = np.abs(here.astype(np.int16) - a["frames"]).max()
    assert diff <= 1, f"the Restorer's sync:2 video frames differ from the dev environment's by {diff} levels"
    mine, theirs = _clip_frames(got["clip"]), _clip_frames(ref["clip"])
    assert mine.shape == theirs.shape == a["frames"].shape, (mine.shape, theirs.shape, a["frames"].shape)
    assert _psnr(mine, theirs) > 35, f"run clip.mp4: {_psnr(mine, theirs):.1f} dB from the dev environment's output"


@pytest.fixture(scope="session")
def jetpack_opencv_dir(pip_index, tmp_path_factory) -> Path:
    """JetPack's /usr/lib/python3/dist-packages stand-in: a numpy-1 OpenCV pip cannot see."""
    return _hide_opencv(JETPACK_OPENCV, tmp_path_factory.mktemp("jetpack-system") / "dist-packages")


@pytest.fixture(scope="session")
def jetpack6_venv(built_wheel, jetpack_opencv_dir, tmp_path_factory):
    """Python 3.10 with a JetPack 6-like set (numpy 1.26.4, onnxruntime 1.19, a numpy-1 OpenCV pip
    cannot see), then ``pip install --only-binary=:all: WHEEL[ort,video]``. Yields (venv, before, after):
    the installed distributions and cv2's file before and after deploy-kit's install."""
    py = _python("3.10")
    root = tmp_path_factory.mktemp("jetpack6")
    venv = _make_venv(root / "venv", py)
    _check(venv.pip("install", *BINARY, *JETPACK6_SET), f"pip install {' '.join(JETPACK6_SET)}")
    _see_system_dir(venv, jetpack_opencv_dir)
    before = (venv.dists(), _cv2_file(venv, root))
    _check(venv.pip("install", *BINARY, f"{built_wheel.path}[ort,video]"), "pip install WHEEL[ort,video] (Python 3.10)")
    yield venv, before, (venv.dists(), _cv2_file(venv, root))
    shutil.rmtree(root, ignore_errors=True)


def test_jetpack6_install_keeps_numpy_onnxruntime_and_the_system_cv2(jetpack6_venv, jetpack_opencv_dir):
    """On Python 3.10, without --ignore-requires-python: the wheel installs beside a JetPack 6-like
    set and changes none of it: numpy and onnxruntime stay, no pip OpenCV arrives, cv2 is still the
    system one."""
    venv, (dists0, cv2_0), (dists1, cv2_1) = jetpack6_venv
    assert "deploy-kit" in dists1 and "deploy-kit" not in dists0
    assert dists1["numpy"] == dists0["numpy"] == "1.26.4", dists1["numpy"]
    assert dists1["onnxruntime"] == dists0["onnxruntime"] == "1.19.2", dists1["onnxruntime"]
    assert {d for d in dists1 if d.startswith("opencv")} == set(), "the install brought a pip OpenCV"
    assert cv2_1 == cv2_0 and jetpack_opencv_dir.resolve() in cv2_1.parents, (cv2_0, cv2_1)
    assert int(dists1["av"].split(".")[0]) < 18, dists1["av"]  # PyAV 18 needs Python 3.11
    assert HEAVY_DISTS & set(dists1) == set(), sorted(HEAVY_DISTS & set(dists1))


def test_jetpack6_runs_like_the_dev_environment(jetpack6_venv, jetpack_opencv_dir, jetson_bundle, jetson_inputs,
                                                dev_runs, tmp_path):
    """verify, run (photo; clip with --context sync:2) and the Restorer API on Python 3.10 with numpy 1.26
    and a JetPack-like numpy-1 OpenCV: the same outputs as the dev environment's (numpy 2) within one level."""
    venv = jetpack6_venv[0]
    got = _device_runs(lambda *a: venv.run(*a, cwd=tmp_path), jetson_bundle, jetson_inputs, tmp_path / "w")
    torch_loaded, numpy_version, cv2_file = got["api_out"][-3:]
    assert torch_loaded == "False" and numpy_version == "1.26.4", got["api_out"]
    assert jetpack_opencv_dir.resolve() in Path(cv2_file).resolve().parents, cv2_file  # deploy-kit used that cv2
    _assert_like_dev(got, dev_runs, jetson_bundle)


@pytest.fixture(scope="session")
def py312_venv(built_wheel, tmp_path_factory):
    """Python 3.12 (JetPack 7's), fresh: ``pip install --only-binary=:all: WHEEL[ort,opencv,video]``."""
    py = _python("3.12")
    root = tmp_path_factory.mktemp("py312")
    venv = _make_venv(root / "venv", py)
    _check(venv.pip("install", *BINARY, f"{built_wheel.path}[ort,opencv,video]"),
           "pip install WHEEL[ort,opencv,video] (Python 3.12)")
    yield venv
    shutil.rmtree(root, ignore_errors=True)


def test_python312_install_runs_like_the_dev_environment(py312_venv, jetson_bundle, jetson_inputs, dev_runs, tmp_path):
    """On Python 3.12, without --ignore-requires-python: the core with the ort, opencv and video extras
    verifies and runs the bundle as the dev environment does (photos within one level)."""
    dists = py312_venv.dists()
    assert "opencv-python-headless" in dists and "onnxruntime" in dists, dists
    assert "av" in dists, dists  # the newest PyAV pip serves Python 3.12 (19.x here): its av.open and side data differ
    assert HEAVY_DISTS & set(dists) == set(), sorted(HEAVY_DISTS & set(dists))
    got = _device_runs(lambda *a: py312_venv.run(*a, cwd=tmp_path), jetson_bundle, jetson_inputs, tmp_path / "w")
    assert got["api_out"][-3] == "False", got["api_out"]  # no torch
    _assert_like_dev(got, dev_runs, jetson_bundle)


IMAGE_ROUND_TRIP = """
import sys, numpy as np
from deploy_kit._deps import opencv
from deploy_kit.runtime.imageio import ImageInfo, decode_image, encode_image
a = np.arange(48 * 64 * 3, dtype=np.uint16).reshape(48, 64, 3) * 7
encode_image("c16.png", a, ImageInfo("PNG", 3, False, 16))  # 16-bit colour: OpenCV's path, not Pillow's
b, info = decode_image("c16.png")
assert np.array_equal(a, b) and info.bits == 16, info
print(opencv().__file__)
"""


def test_installed_cv2_is_neither_replaced_nor_shadowed(built_wheel, jetson_bundle, jetson_inputs, tmp_path):
    """A venv (this Python) whose cv2 pip cannot see, as a Jetson's apt OpenCV through
    --system-site-packages: installing the core and then ``[ort]`` leaves that cv2 the one imported,
    brings no pip OpenCV, and deploy-kit's image I/O runs through it. Without that folder (no cv2
    at all) ``run`` on a photo is one line naming what to install, exit 2."""
    venv = _make_venv(tmp_path / "venv")
    system = _hide_opencv(ANY_OPENCV, tmp_path / "dist-packages")
    _see_system_dir(venv, system)
    cv2_file = _cv2_file(venv, tmp_path)
    assert system.resolve() in cv2_file.parents and _opencv_dists(venv) == set()
    for extras in ("", "[ort]"):
        _check(venv.pip("install", *BINARY, f"{built_wheel.path}{extras}"), f"pip install WHEEL{extras}")
        assert _opencv_dists(venv) == set(), f"WHEEL{extras} brought {_opencv_dists(venv)}"
        assert _cv2_file(venv, tmp_path) == cv2_file, f"WHEEL{extras} shadowed the installed cv2"
    proc = _check(venv.py(IMAGE_ROUND_TRIP, cwd=tmp_path), "deploy-kit image I/O through the installed cv2")
    assert Path(proc.stdout.split()[-1]).resolve() == cv2_file, proc.stdout
    (venv.site_packages() / "zz-system-site-packages.pth").unlink()  # no cv2 anywhere now
    proc = venv.run("deploy-kit", "run", jetson_bundle, jetson_inputs.photo, "--out", tmp_path / "o", cwd=tmp_path)
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert proc.returncode == 2 and "Traceback" not in proc.stdout + proc.stderr, _tail(proc)
    assert last.startswith("error: OpenCV (cv2) is not installed") and "deploy-kit[opencv]" in last, _tail(proc)
    assert not (tmp_path / "o" / "photo.png").exists()


def _requires(built_wheel: BuiltWheel):
    """(Requires-Python, [Requires-Dist]) of the wheel, parsed by ``packaging``."""
    pytest.importorskip("packaging", reason="packaging is not installed (pip comes with a copy; pip install packaging)")
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet

    meta = built_wheel.metadata()
    python = SpecifierSet(re.search(r"^Requires-Python: *(.+)$", meta, re.M).group(1).strip())
    return python, [Requirement(l.split(":", 1)[1].strip()) for l in meta.splitlines() if l.startswith("Requires-Dist:")]


def _needed(reqs, env: dict, extras=()) -> list:
    """The requirements that apply in marker environment ``env`` with ``extras`` (marker dropped)."""
    import copy

    out = []
    for r in reqs:
        if r.marker is None or any(r.marker.evaluate({**env, "extra": e}) for e in ("", *extras)):
            r = copy.copy(r)
            r.marker = None
            out.append(r)
    return out


def _numpy_spec(reqs):
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(",".join(str(r.specifier) for r in reqs if _norm(r.name) == "numpy"))


def test_wheel_requirements_on_jetpack(built_wheel):
    """The wheel's metadata evaluated for JetPack 6 (aarch64, Python 3.10) and JetPack 7 (aarch64,
    3.12): Python admitted, numpy < 2 required, JetPack 6's apt numpy 1.21.5 accepted, no OpenCV in
    the core; elsewhere (x86-64, aarch64 on 3.13) numpy 2 stays allowed."""
    python, reqs = _requires(built_wheel)
    assert all(v in python for v in ("3.10.12", "3.11.7", "3.12.3", "3.13.0")) and "3.9.18" not in python, python
    for name, env in JETPACK_ENVS.items():
        core = _needed(reqs, env)
        numpy = _numpy_spec(core)
        assert "1.21.5" in numpy and "1.26.4" in numpy and "2.0.0" not in numpy, f"{name}: numpy {numpy}"
        assert not [r for r in core if _norm(r.name).startswith("opencv")], f"{name}: the core requires OpenCV"
        assert [r for r in _needed(reqs, env, ["opencv"]) if _norm(r.name) == "opencv-python-headless"], name
    for env in ({"platform_machine": "x86_64", "python_version": "3.10"},
                {"platform_machine": "x86_64", "python_version": "3.12"},
                {"platform_machine": "aarch64", "python_version": "3.13"}):  # numpy 1 has no 3.13 wheels
        assert "2.2.6" in _numpy_spec(_needed(reqs, env)), env
        assert not [r for r in _needed(reqs, env) if _norm(r.name).startswith("opencv")], env
    for extra in ("opencv", "export", "test", "all"):
        only = [r for r in reqs if r.marker is not None and "extra" in str(r.marker)
                and r.marker.evaluate({"extra": extra}) and _norm(r.name) == "opencv-python-headless"]
        assert only, f"the {extra} extra does not bring pip's OpenCV"


#: (marker environment, Python, glibc of the Ubuntu release, extras) of the dry-run resolutions
JETPACK_RESOLVE = {"JetPack 6": ("3.10", 35, ("ort", "video")), "JetPack 7": ("3.12", 39, ("ort", "opencv", "video"))}


@pytest.mark.parametrize("jetpack", sorted(JETPACK_RESOLVE))
def test_wheel_requirements_resolve_to_aarch64_wheels(built_wheel, tmp_path, jetpack):
    """What the wheel requires on a JetPack (its markers evaluated for aarch64 and that Python, as in
    test_wheel_requirements_on_jetpack), resolved by pip against the index's aarch64 wheels for that
    Python: every requirement has a wheel, numpy stays 1.x, onnxruntime has a wheel for Python 3.10,
    PyAV for the Python. pip itself evaluates markers for the Python running it, not for --platform /
    --python-version (https://github.com/pypa/pip/issues/11664), hence the evaluation here first."""
    version, glibc, extras = JETPACK_RESOLVE[jetpack]
    _, reqs = _requires(built_wheel)
    wanted = [str(r) for r in _needed(reqs, JETPACK_ENVS[jetpack], extras)]
    platforms = [a for g in range(glibc, 16, -1) for a in ("--platform", f"manylinux_2_{g}_aarch64")]
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", "--dry-run",
           "--ignore-installed", "--report", str(report), "--target", str(tmp_path / "t"), *platforms,
           "--platform", "manylinux2014_aarch64", "--python-version", version, "--implementation", "cp",
           "--only-binary=:all:", *wanted]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    if proc.returncode != 0 and "from versions: none" in proc.stdout + proc.stderr:
        pytest.skip(f"the package index here has no aarch64 wheels for Python {version}: {_tail(proc, 2)}")
    _check(proc, f"pip install --dry-run --platform manylinux_2_{glibc}_aarch64 --python-version {version} {wanted}")
    got = {_norm(i["metadata"]["name"]): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    major = {k: int(v.split(".")[0]) for k, v in got.items()}
    assert major["numpy"] == 1, got["numpy"]
    assert "onnxruntime" in got and major["av"] < (18 if version == "3.10" else 19), got
    assert ("opencv-python-headless" in got) == ("opencv" in extras), got
    assert HEAVY_DISTS & set(got) == set(), got
    if version == "3.10":
        assert tuple(int(v) for v in got["onnxruntime"].split(".")[:2]) <= (1, 23), got["onnxruntime"]


CORE_NUMPY_RUNNER = """
import sys, numpy as np
from deploy_kit._deps import opencv
from deploy_kit.manifest import Manifest
from deploy_kit.runtime import Restorer, Runner
from deploy_kit.runtime.restore import restore_images

class Affine(Runner):
    name = "numpy"

    def run(self, x):
        return [x * np.float32(0.5) + np.float32(0.25)]

out, files = sys.argv[1], sys.argv[2:]
with Restorer(runner=Affine(), manifest=Manifest.for_runner((2, 3, 32, 32))) as r:
    done = restore_images(r, files, out)
assert not done.failed and len(done.written) == len(files), done
print("torch" in sys.modules, "onnxruntime" in sys.modules, np.__version__, opencv().__file__)
"""


def test_jetpack6_apt_numpy_core_then_onnxruntime(built_wheel, jetpack_opencv_dir, jetson_bundle, jetson_inputs,
                                                  dev_runs, tmp_path):
    """Python 3.10 with JetPack 6's apt numpy 1.21.5 and a numpy-1 OpenCV pip cannot see: the core
    install keeps both, and deploy-kit's own tiling, blending, pipelining and image I/O (8- and 16-bit
    PNG) run under numpy 1.21.5. The model there is a test double, a numpy runner (x / 2 + 1/4): it
    checks deploy-kit's code under that numpy, not a backend (JetPack's TensorRT takes numpy 1.21.5
    as it is; onnxruntime needs 1.21.6). Then numpy 1.21.6 and onnxruntime 1.19: verify and run the
    bundle, the photo within one level of the dev environment's."""
    from PIL import Image

    venv = _make_venv(tmp_path / "venv", _python("3.10"))
    _check(venv.pip("install", *BINARY, f"numpy=={JETPACK6_APT_NUMPY}"), f"pip install numpy=={JETPACK6_APT_NUMPY}")
    _see_system_dir(venv, jetpack_opencv_dir)
    _check(venv.pip("install", *BINARY, str(built_wheel.path)), "pip install WHEEL (Python 3.10, numpy 1.21.5)")
    dists = venv.dists()
    assert dists["numpy"] == JETPACK6_APT_NUMPY and not _opencv_dists(venv) and "onnxruntime" not in dists, dists
    c16 = (np.arange(70 * 90 * 3, dtype=np.uint16).reshape(70, 90, 3) * 9).astype(np.uint16)
    import cv2

    assert cv2.imwrite(str(tmp_path / "c16.png"), c16[..., ::-1].copy())
    script = tmp_path / "core.py"
    script.write_text(CORE_NUMPY_RUNNER)
    proc = _check(venv.run("python", script, tmp_path / "out", jetson_inputs.photo, tmp_path / "c16.png", cwd=tmp_path),
                  "Restorer + restore_images on numpy 1.21.5")
    torch_loaded, ort_loaded, numpy_version, cv2_file = proc.stdout.split()[-4:]
    assert (torch_loaded, ort_loaded, numpy_version) == ("False", "False", JETPACK6_APT_NUMPY), proc.stdout
    assert jetpack_opencv_dir.resolve() in Path(cv2_file).resolve().parents, cv2_file
    for src, scale in ((jetson_inputs.photo, 255), (tmp_path / "c16.png", 65535)):
        want = np.round((_png(src).astype(np.float64) / scale * 0.5 + 0.25) * scale) if scale == 255 else \
            np.round((c16.astype(np.float64) / scale * 0.5 + 0.25) * scale)
        out = tmp_path / "out" / src.name
        got = np.asarray(Image.open(out), np.float64) if scale == 255 else cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., ::-1]
        assert got.shape == want.shape and np.abs(got - want).max() <= 1, (src.name, np.abs(got - want).max())
    # onnxruntime's lowest numpy, and a real model
    _check(venv.pip("install", *BINARY, f"numpy=={ORT_LOWEST_NUMPY}", JETPACK6_SET[1]),
           f"pip install numpy=={ORT_LOWEST_NUMPY} {JETPACK6_SET[1]}")
    b = shutil.copytree(jetson_bundle, tmp_path / jetson_bundle.name)
    proc = _check(venv.run("deploy-kit", "verify", b, cwd=tmp_path), "deploy-kit verify (numpy 1.21.6)")
    assert "parity: all gates passed" in proc.stdout, proc.stdout
    _check(venv.run("deploy-kit", "run", b, jetson_inputs.photo, "--out", tmp_path / "ort", cwd=tmp_path),
           "deploy-kit run photo.png (numpy 1.21.6)")
    diff = np.abs(_png(tmp_path / "ort" / "photo.png") - _png(dev_runs["photo"])).max()
    assert diff <= 1, f"run photo.png on numpy {ORT_LOWEST_NUMPY} differs from the dev environment's by {diff} levels"
