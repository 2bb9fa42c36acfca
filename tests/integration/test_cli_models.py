"""Restormer, PVT and INT8 through the real CLI (simplify -> precision -> RTX engine -> parity)."""

import json
import os

import onnx
import pytest

from deploy_kit._deps import available

needs_rtx = pytest.mark.skipif(not available("tensorrt_rtx"), reason="tensorrt-rtx not installed")
DEMO = os.path.join(os.path.dirname(__file__), "..", "..", "deploy_kit", "demo")


def _report(out, stem, precision):
    return json.loads((out / f"{stem}.{precision}.parity.json").read_text())


@needs_rtx
def test_restormer_local_fp16_multi_window(cli, tmp_path):
    out = tmp_path / "o"
    r = cli("export", "restormer", "--variant", "tiny", "--height", "60", "--width", "76", "--train-size", "32",
            "--fp16", "--backend", "tensorrt-rtx", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    stem = "restormer-tiny-60x76-tlc"
    rep = _report(out, stem, "fp16")
    assert rep["passed"] and "Restormer-Local windows" in rep["reference"]
    ops = {n.op_type for n in onnx.load(str(out / f"{stem}.fp16.onnx")).graph.node}
    assert not ops & {"ScatterND", "CumSum", "Loop", "If"}
    assert (out / f"{stem}.fp16.rtx1.plan").stat().st_size > 100_000


@needs_rtx
@pytest.mark.parametrize("head", ["features", "cls"])
def test_pvt_heads_fp16(cli, tmp_path, head):
    out = tmp_path / "o"
    r = cli("export", "pvt", "--variant", "test-tiny", "--height", "64", "--width", "96", "--head", head,
            "--fp16", "--backend", "tensorrt-rtx", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = _report(out, f"pvt-test-tiny-64x96-{head}", "fp16")
    assert rep["passed"]
    fp16 = [c for c in rep["checks"] if c["precision"] == "fp16" and c["backend"] == "onnxruntime"][0]
    names = [m["name"] for m in fp16["outputs"]]
    assert names == (["feat1", "feat2", "feat3", "feat4"] if head == "features" else ["logits"])
    assert min(m["cosine"] for m in fp16["outputs"]) >= 0.9999


def test_pvt_size_rule_is_one_line_error(cli, tmp_path):
    r = cli("export", "pvt", "--variant", "test-tiny", "--height", "70", "--width", "64", "--backend", "none", "--out", tmp_path / "o")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "32" in r.stderr


@needs_rtx
def test_int8_demo_checkpoint_quality_gates_and_engine(cli, tmp_path):
    out = tmp_path / "o"
    ck = os.path.join(DEMO, "nafnet-demo-w16-noise25.pth")
    r = cli("export", "nafnet", "--weights", ck, "--height", "128", "--width", "128", "--int8",
            "--calib-count", "16", "--backend", "tensorrt-rtx", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    stem = "nafnet-demo-w16-128x128"
    rep = _report(out, stem, "int8")
    int8 = [c for c in rep["checks"] if c["precision"] == "int8" and c["backend"] == "onnxruntime"][0]
    gates = {g["what"]: g for g in int8["gates"]}
    assert gates["output PSNR dB"]["value"] >= 35 and gates["restoration PSNR drop dB"]["ok"]
    # the quality table comes first, so the INT8 row is made with its restoration gate and shown with it
    row = next(line for line in r.stderr.splitlines() if "parity int8 (onnxruntime): " in line)
    assert "restoration PSNR drop dB" in row and r.stderr.index("quality (held-out images) ...") < r.stderr.index(row)
    ops = {n.op_type for n in onnx.load(str(out / f"{stem}.int8.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert (out / f"{stem}.int8.rtx1.plan").is_file() and (out / f"{stem}.int8.calib").is_file()
    quality = json.loads((out / f"{stem}.int8.quality.json").read_text())
    assert quality["degradation"] == "noise:25"  # the demo variant's default degradation
    assert "weight-only GEMM" in r.stdout  # the RTX INT8 caveat is told to the user
