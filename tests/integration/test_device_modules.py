"""What the device commands load: ``verify``, ``run`` and ``build`` of a bundle import no module of the build
half, neither torch nor onnx, and few deploy_kit modules.

Each command runs in its own process through the console entry point; a wrapper prints the process's
``sys.modules`` at exit. The build half is the forbidden list of ``.importlinter``'s device contract (one
list: the contract checks the source, this test what a real run loads).
"""

import configparser
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deploy_kit._deps import available

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# the most deploy_kit modules one device command may load (verify 28, run 33, build 26 when this was written:
# the registry's OpenVINO backend and runner, and run's journal and job modules, came since 30 was set)
MAX_MODULES = 34
WRAPPER = """
import atexit, sys

def _report():
    print("MODULES:" + " ".join(sorted(sys.modules)), flush=True)

atexit.register(_report)
from deploy_kit.cli import main
main()
"""


def _build_half() -> list[str]:
    config = configparser.ConfigParser()
    config.read(os.path.join(REPO, ".importlinter"))
    return config["importlinter:contract:device-build"]["forbidden_modules"].split()


def _loaded(*args) -> tuple[subprocess.CompletedProcess, list[str]]:
    out = subprocess.run([sys.executable, "-c", WRAPPER, *map(str, args)], capture_output=True, text=True, timeout=600)
    line = [l for l in out.stdout.splitlines() if l.startswith("MODULES:")]
    assert line, out.stdout[-2000:] + out.stderr[-2000:]
    return out, line[-1][len("MODULES:"):].split()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A tiny NAFNet (TLC) FP16 bundle made by export --bundle, and a photo to run it on."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("device-modules")
    r = run_cli("export", "nafnet", "--variant", "tiny", "--height", 64, "--width", 64, "--train-size", 32, "--fp16",
                "--bundle", "--backend", "none", "--samples", 1, "--out", out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(out / "photo.png")
    return out / "nafnet-tiny-64x64-tlc.fp16.bundle", out / "photo.png"


COMMANDS = {
    "verify": lambda b, photo, out: ["verify", b],
    "run": lambda b, photo, out: ["run", b, photo, "--out", out],
    "build": lambda b, photo, out: ["build", b, "--backend", "tensorrt-rtx"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_device_command_loads_only_the_device_half(bundle, tmp_path, command):
    if command == "build" and not available("tensorrt_rtx"):
        pytest.skip("tensorrt-rtx not installed (the CPU-only ahead-of-time build needs it)")
    path, photo = bundle
    out, modules = _loaded(*COMMANDS[command](path, photo, tmp_path / "out"))
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    ours = [m for m in modules if m == "deploy_kit" or m.startswith("deploy_kit.")]
    build = [m for m in ours if any(m == b or m.startswith(b + ".") for b in _build_half())]
    heavy = sorted({m.split(".")[0] for m in modules} & {"torch", "onnx"})
    assert not build, f"{command} loaded modules of the build half: {build}"
    assert not heavy, f"{command} imported {heavy}"
    assert len(ours) <= MAX_MODULES, f"{command} loaded {len(ours)} deploy_kit modules (at most {MAX_MODULES}): {ours}"
