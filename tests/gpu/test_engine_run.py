"""Engine execution parity: needs a CUDA GPU and a TensorRT runtime (skipped otherwise)."""

import json

import pytest

from deploy_kit._deps import available
from deploy_kit.runners.cuda import gpu_available

GPU_OK, WHY = gpu_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not GPU_OK, reason=f"needs a GPU: {WHY}"),
              pytest.mark.skipif(not available("tensorrt_rtx"), reason="tensorrt-rtx not installed")]


def test_rtx_engine_runs_and_matches_reference(cli, tmp_path):
    out = tmp_path / "o"
    r = cli("export", "nafnet", "--variant", "tiny", "--height", "64", "--width", "96", "--fp16", "--backend", "tensorrt-rtx", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((out / "nafnet-tiny-64x96-tlc.fp16.parity.json").read_text())
    engine = [c for c in report["checks"] if c["backend"] == "tensorrt-rtx"][0]
    assert engine["status"] == "pass", engine
