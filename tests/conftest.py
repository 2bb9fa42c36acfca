import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, cwd=None, timeout=900):
    """Run the real console entry point in a subprocess; returns CompletedProcess (text)."""
    cmd = [sys.executable, "-c", "from deploy_kit.cli import main; main()", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A factory: ``tiny_bundle(precision="fp32", seed=0)`` is the tiny NAFNet (TLC) 64x64 bundle of that
    precision whose random weights come from ``seed``, made by ``export --bundle`` once per session and
    shared by the modules that only run it (copy it before changing anything inside)."""
    made = {}

    def get(precision: str = "fp32", seed: int = 0):
        if (precision, seed) not in made:
            out = tmp_path_factory.mktemp(f"tiny-{precision}-seed{seed}")
            flags = [] if precision == "fp32" else [f"--{precision}"]
            r = run_cli("export", "nafnet", "--variant", "tiny", "--height", 64, "--width", 64, "--train-size", 32,
                        "--seed", seed, *flags, "--bundle", "--backend", "none", "--samples", 1, "--out", out)
            assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
            made[precision, seed] = out / f"nafnet-tiny-64x64-tlc.{precision}.bundle"
        return made[precision, seed]

    return get
