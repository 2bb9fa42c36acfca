"""The product as a user installs it: the built wheel, in fresh virtual environments, run from
outside the source tree.

* The wheel is built once per session from a snapshot of the source tree. It must carry every
  file of the package, the calibration manifests (top-level ``calibration/`` → package data
  ``deploy_kit/calibration/``) and the demo checkpoints, declare a torch-free core, and hold no tests.
* ``core_venv``: ``pip install WHEEL[ort]`` into a fresh venv (no system site-packages). No torch,
  onnx or scikit-image may arrive; the CLI, ``env`` and ``deploy_kit.runtime`` work. Reusable by
  later tests: ``core_venv.run("deploy-kit", "verify", bundle, cwd=tmp_path)``.
* ``export_venv``: torch first (``DEPLOY_KIT_WHEEL_TORCH_SPEC``, default ``torch==2.13.0``, the CPU
  wheel here), then ``WHEEL[export,rtx]``; INT8 exports run from a temporary directory and must
  find the default calibration set and the demo checkpoint in the installed package.

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


def _make_venv(root: Path) -> Venv:
    # no --system-site-packages: only what the wheel and its extras bring may be importable
    _check(subprocess.run([sys.executable, "-m", "venv", str(root)], capture_output=True, text=True, timeout=300),
           "python -m venv")
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
    """A fresh venv with ``pip install WHEEL[ort,video]``: the torch-free core plus onnxruntime and PyAV.

    Reusable: ``core_venv.run("deploy-kit", "run", bundle, "photo.png", cwd=tmp_path)``.
    """
    venv = _make_venv(tmp_path_factory.mktemp("core") / "venv")
    _check(venv.pip("install", "-q", "--no-compile", f"{built_wheel.path}[ort,video]"), "pip install WHEEL[ort,video]")
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
    assert core == {"click", "numpy", "opencv-python-headless", "pillow"}, core
    extras = {m.group(1) for r in reqs for m in [re.search(r"extra == ['\"]([\w-]+)['\"]", r)] if m}
    assert {"export", "ort", "rtx", "tensorrt", "video", "polygraphy", "test", "all"} <= extras, extras
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
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4", "p0.png", "p1.png"]
    script = tmp_path / "loop.py"
    script.write_text(RESTORER_LOOP)
    proc = core_venv.run("python", script, device_bundles["fp16"], tmp_path / "in" / "clip.mp4", cwd=tmp_path)
    _check(proc, "Restorer loop (core install)")
    assert proc.stdout.split()[:2] == ["False", "8"], proc.stdout
