"""Importing deploy_kit, every --help, and deploy_kit.runtime pull in no heavy package."""

import subprocess
import sys

import pytest

CHECK = """
import sys
{body}
heavy = sorted(m for m in {forbidden!r} if m in sys.modules)
print("HEAVY:" + ",".join(heavy))
"""


def _heavy(body, forbidden):
    out = subprocess.run([sys.executable, "-c", CHECK.format(body=body, forbidden=forbidden)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    line = [l for l in out.stdout.splitlines() if l.startswith("HEAVY:")][-1]
    return [m for m in line[6:].split(",") if m]


HEAVY = ["torch", "onnx", "onnxruntime", "tensorrt", "tensorrt_rtx", "onnxsim", "onnxslim", "polygraphy"]


def test_import_package_is_light():
    assert _heavy("import deploy_kit, deploy_kit.cli, deploy_kit.specs, deploy_kit.models.registry", HEAVY) == []


@pytest.mark.parametrize("argv", [["--help"], ["export", "--help"], ["build", "--help"], ["verify", "--help"],
                                  ["run", "--help"], ["env", "--help"], ["bundle", "--help"], ["seam-check", "--help"],
                                  ["debug-precision", "--help"], ["bench", "--help"], ["list-models"], ["list-models", "--all"]])
def test_help_and_listing_do_not_import_torch(argv):
    body = f"from deploy_kit.cli import main\ntry:\n    main({argv!r})\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code"
    assert _heavy(body, HEAVY) == []


def test_runtime_pulls_no_torch_onnx_or_click():
    assert _heavy("import deploy_kit.runtime, deploy_kit.runtime.restore", HEAVY + ["click"]) == []


def test_device_side_modules_pull_no_torch_or_onnx():
    """What build/verify/run of a bundle import on the device (the core install has no torch/onnx)."""
    body = ("import deploy_kit.manifest, deploy_kit.bundle, deploy_kit.verify, deploy_kit.engine, deploy_kit.compare, "
            "deploy_kit.onnxmeta, deploy_kit.runners.ort, deploy_kit.runners.session, deploy_kit.runtime.restorer, "
            "deploy_kit.serving.triton, deploy_kit.doctor, deploy_kit.cli.device")
    assert _heavy(body, HEAVY) == []
