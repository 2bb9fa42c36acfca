"""Quality table: PSNR vs FP32 and restoration PSNR per precision; the trained demo checkpoints."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from deploy_kit.errors import UsageError
from deploy_kit.precision.calibration import MIN_IMAGES, eval_pairs, load_calibration_set
from deploy_kit.precision.quality import format_quality_table, psnr, quality_table

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

DEMO_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "deploy_kit", "demo")
NAFNET_DEMO = os.path.join(DEMO_DIR, "nafnet-demo-w16-noise25.pth")
S = 32


def _graph(path, nodes, in_type=TensorProto.FLOAT, inits=()):
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("input", in_type, [1, 3, S, S])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, S, S])],
        list(inits),
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, path)
    return str(path)


@pytest.fixture(scope="module")
def pairs():
    return eval_pairs(channels=3, height=S, width=S, count=3, degradation="noise:25")


def test_identity_models_give_exact_numbers(tmp_path, pairs):
    ident = _graph(tmp_path / "id.onnx", [helper.make_node("Identity", ["input"], ["output"])])
    # an FP16-input graph: the table must feed float16 and read the output back as float32
    half = _graph(tmp_path / "half.onnx", [helper.make_node("Cast", ["input"], ["output"], to=TensorProto.FLOAT)],
                  in_type=TensorProto.FLOAT16)
    scale = helper.make_tensor("k", TensorProto.FLOAT, [], [0.5])
    dim = _graph(tmp_path / "dim.onnx", [helper.make_node("Mul", ["input", "k"], ["output"])], inits=[scale])
    t = quality_table({"fp16": half, "fp32": ident, "int8": dim}, pairs, threads=1)
    assert list(t) == ["fp32", "fp16", "int8"]  # the reference first, whatever the dict order
    expect_input = float(np.mean([psnr(x, y) for x, y in pairs]))
    assert t["fp32"]["psnr_vs_fp32"] == math.inf and t["fp32"]["restoration_drop"] == 0.0
    assert t["fp32"]["restoration_psnr"] == pytest.approx(expect_input, abs=1e-9)  # identity restores nothing
    assert t["fp32"]["input_psnr"] == pytest.approx(expect_input, abs=1e-9)
    assert 60 < t["fp16"]["psnr_vs_fp32"] < 90  # float16 rounding of [0, 1] values: ~2^-12 steps
    expect_half = float(np.mean([psnr(0.5 * x, x) for x, _ in pairs]))
    assert t["int8"]["psnr_vs_fp32"] == pytest.approx(expect_half, abs=1e-6)
    assert t["int8"]["min_psnr_vs_fp32"] <= t["int8"]["psnr_vs_fp32"]
    assert t["int8"]["restoration_drop"] > 3  # halving the image is far worse than the noisy input
    text = format_quality_table(t)
    lines = text.splitlines()
    assert lines[0].split()[0] == "precision" and lines[2].startswith("fp32") and "inf" in lines[2]
    assert len({len(ln) for ln in lines[2:5]}) == 1  # aligned columns
    assert "3 held-out pairs" in lines[-1]


def test_bad_arguments(tmp_path, pairs):
    ident = _graph(tmp_path / "id.onnx", [helper.make_node("Identity", ["input"], ["output"])])
    with pytest.raises(UsageError, match="fp32"):
        quality_table({"int8": ident}, pairs)
    with pytest.raises(UsageError, match="pair"):
        quality_table({"fp32": ident}, [])
    with pytest.raises(UsageError, match="no input named 'image'"):
        quality_table({"fp32": ident}, pairs, input_name="image")


def _upsample_graph(path, scale, size=S):
    """Nearest-neighbour x``scale`` upsampling: a super-resolution 'model' with a known output."""
    sc = helper.make_tensor("scales", TensorProto.FLOAT, [4], [1.0, 1.0, float(scale), float(scale)])
    g = helper.make_graph(
        [helper.make_node("Resize", ["input", "", "scales"], ["output"], mode="nearest")], "up",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, scale * size, scale * size])], [sc])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return str(path)


def test_super_resolution_pairs_are_measured_in_output_space(tmp_path):
    from deploy_kit.data.degrade import resize_bicubic

    sr_pairs = eval_pairs(channels=3, height=S, width=S, count=2, degradation="downscale:2")
    up = _upsample_graph(tmp_path / "up.onnx", 2)
    t = quality_table({"fp32": up, "int8": up}, sr_pairs, threads=1)
    nearest = [psnr(np.clip(x.repeat(2, axis=2).repeat(2, axis=3), 0, 1), y) for x, y in sr_pairs]
    assert t["fp32"]["restoration_psnr"] == pytest.approx(float(np.mean(nearest)), abs=1e-6)
    assert t["int8"]["psnr_vs_fp32"] == math.inf and t["int8"]["restoration_drop"] == 0.0
    # the input's PSNR: enlarged to the target by bicubic interpolation, the usual baseline (better than nearest)
    bicubic = [psnr(np.clip(resize_bicubic(x[0].transpose(1, 2, 0), 2 * S, 2 * S), 0, 1).transpose(2, 0, 1)[None], y)
               for x, y in sr_pairs]
    assert t["fp32"]["input_psnr"] == pytest.approx(float(np.mean(bicubic)), abs=1e-9)
    assert t["fp32"]["input_psnr"] > t["fp32"]["restoration_psnr"]
    # pairs without the downscale: targets of the input's size, which a x2 model cannot be measured against
    with pytest.raises(UsageError, match=r"outputs 64x64 for 32x32 inputs but the clean targets are 32x32; .* downscale:S"):
        quality_table({"fp32": up}, eval_pairs(channels=3, height=S, width=S, count=1, degradation="noise:25"), threads=1)


@pytest.mark.parametrize("name, model, degradation, gain", [
    ("nafnet-demo-w16-noise25", "nafnet", "noise:25", 5.0),
    ("restormer-demo-d12-blur9", "restormer", "blur:9", 0.3),
])
def test_demo_checkpoints_are_official_layout_and_documented(name, model, degradation, gain):
    import torch

    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_model

    path = os.path.join(DEMO_DIR, name + ".pth")
    if not os.path.isfile(path):
        pytest.skip(f"{name} not trained (python -m deploy_kit.demo.train)")
    assert set(torch.load(path, weights_only=True)) == {"params"}  # BasicSR layout
    assert os.path.getsize(path) < 5 * 2**20
    loaded = load_model(get_adapter(model), None, path)
    record = json.load(open(os.path.join(DEMO_DIR, name + ".json")))
    assert loaded.variant.kwargs() == record["hparams"]
    assert record["degradation"] == degradation
    assert record["eval"]["output_psnr"] > record["eval"]["input_psnr"] + gain
    readme = open(os.path.join(DEMO_DIR, "README.md")).read()
    assert f"{record['eval']['output_psnr']:.2f}" in readme and name in readme


@pytest.mark.skipif(not os.path.isfile(NAFNET_DEMO), reason="demo checkpoint not trained (python -m deploy_kit.demo.train)")
def test_demo_checkpoint_restores_and_int8_keeps_quality(tmp_path):
    """Trained weights: the demo denoises held-out images, and INT8 costs at most 0.3 dB of it."""
    import torch

    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_model
    from deploy_kit.precision.int8 import Int8Options, quantize_int8
    from deploy_kit.specs import ExportRequest

    torch.set_num_threads(1)
    size = 64
    adapter = get_adapter("nafnet")
    loaded = load_model(adapter, None, NAFNET_DEMO)
    req = ExportRequest("nafnet", loaded.variant.name, size, size)
    src = str(tmp_path / "fp32.onnx")
    torch.onnx.export(adapter.wrap(loaded.model, req, static=True), torch.rand(1, 3, size, size), src, dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["output"])
    calib = load_calibration_set(None, channels=3, height=size, width=size, count=MIN_IMAGES * 2, degradation="noise:25")
    dst = str(tmp_path / "int8.onnx")
    quantize_int8(src, dst, calib, Int8Options(fp32_patterns=tuple(adapter.fp32_islands(req)),
                                               cache_dir=str(tmp_path / "c"), threads=1))
    test_pairs = eval_pairs(channels=3, height=size, width=size, count=4, degradation="noise:25")
    t = quality_table({"fp32": src, "int8": dst}, test_pairs, threads=1)
    assert t["fp32"]["restoration_psnr"] > t["fp32"]["input_psnr"] + 4
    assert t["int8"]["psnr_vs_fp32"] >= 35.0
    assert abs(t["int8"]["restoration_drop"]) <= 0.3
