"""The graph-level range-safe pass: exact in FP32, fixes FP16 overflow, islands only where it cannot."""

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from deploy_kit.errors import UsageError
from deploy_kit.export import export_onnx
from deploy_kit.models.rangesafe import plain_layernorm_channels
from deploy_kit.precision.fp16 import convert_fp16
from deploy_kit.precision.graphsafe import convert_fp16_safe, range_safe, range_safe_model
from deploy_kit.precision.truefp16 import psnr_of, true_fp16_check
from deploy_kit.runners.ort import OrtRunner


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


class ChannelLN(torch.nn.Module):
    """NAFNet's LayerNorm2d formula over NCHW channels (BiasFree numerator when not centred)."""

    def __init__(self, c, centred=True):
        super().__init__()
        g = _gen(1)
        self.w = torch.nn.Parameter(torch.randn(c, generator=g))
        self.b = torch.nn.Parameter(torch.randn(c, generator=g))
        self.centred = centred

    def forward(self, x):
        return plain_layernorm_channels(x, self.w, self.b, 1e-6, self.centred)


class TokenLN(torch.nn.Module):
    """Restormer's WithBias body on (B, N, C) tokens: torch.var exports its own ReduceMean."""

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(x.var(-1, keepdim=True, unbiased=False) + 1e-5)


class L2Normalize(torch.nn.Module):
    def __init__(self, explicit=False):
        super().__init__()
        self.explicit = explicit

    def forward(self, x):
        if self.explicit:  # sum of squares -> Sqrt -> Clip -> Div
            return x / torch.sqrt((x * x).sum(-1, keepdim=True)).clamp_min(1e-12)
        return F.normalize(x, dim=-1)  # ReduceL2 -> Clip -> Expand -> Div


class SpatialSum(torch.nn.Module):
    """A global sum over h*w pixels divided by h*w (folded), or a mean before a non-linearity (unscaled)."""

    def __init__(self, mean=False):
        super().__init__()
        self.mean = mean

    def forward(self, x):
        if self.mean:
            return x - torch.sqrt(x.mean((2, 3), keepdim=True))
        return x * (x.sum((2, 3), keepdim=True) / (x.shape[2] * x.shape[3]))


class ScaledAttention(torch.nn.Module):
    def forward(self, q):
        k = q.flip(1) * 0.9
        return ((q @ k.transpose(-2, -1)) * 4.5e-5).softmax(-1)


def _export(tmp_path, module, x, name, opset=17):
    path = str(tmp_path / f"{name}.onnx")
    export_onnx(module.eval(), x, path, input_names=["input"], output_names=["output"], metadata={}, opset=opset)
    return path


def _run(tmp_path, module, x, name, opset=17):
    """(true-FP16 PSNR plain, the same after the pass, sites, rewritten model); asserts FP32 equality."""
    src = _export(tmp_path, module, x, name, opset)
    xs = [x.numpy()]
    plain = psnr_of(true_fp16_check(src, xs, kind="features"))
    safe = str(tmp_path / f"{name}.safe.onnx")
    sites = range_safe(src, xs, safe)
    for optimize in (True, False):  # ORT's own fusions (LayerNorm) on and off
        ref = OrtRunner(src, optimize=optimize).run(xs[0])[0]
        got = OrtRunner(safe, optimize=optimize).run(xs[0])[0]
        np.testing.assert_array_max_ulp(ref, got, maxulp=1)  # power-of-two scales: bit-identical here
    fixed = psnr_of(true_fp16_check(safe, xs, kind="features"))
    return plain, fixed, sites, onnx.load(safe)


@pytest.mark.parametrize("centred", [True, False])
def test_channel_layernorm_nchw(tmp_path, centred):
    x = torch.randn(1, 256, 8, 8, generator=_gen()) * 300.0  # squared deviations ~1e5: past 65504
    plain, fixed, sites, model = _run(tmp_path, ChannelLN(256, centred), x, "chan")
    assert plain < 30 and fixed >= 80, (plain, fixed)
    assert [s.pattern for s in sites] == ["layernorm"]
    # the variance's partial sums (~256 x 9e4 = 2.3e7) must end <= 2^14: s >= 6 (2^-12 on the squares)
    assert sites[0].scale_log2 == 6 and sites[0].measured_max > 1e7
    assert sum(n.op_type == "Mul" and n.name.endswith("GraphSafeScale") for n in model.graph.node) == 1


@pytest.mark.parametrize("opset", [17, 18])  # 18: reduction axes are inputs
def test_token_layernorm(tmp_path, opset):
    x = torch.randn(1, 64, 384, generator=_gen()) * 300.0
    plain, fixed, sites, _ = _run(tmp_path, TokenLN(), x, f"tok{opset}", opset)
    assert plain < 30 and fixed >= 80, (plain, fixed)
    assert len(sites) == 1 and sites[0].pattern == "layernorm" and sites[0].scale_log2 > 0
    assert sum("ReduceMean" in n for n in sites[0].nodes) == 3  # the mean, and torch.var's own mean and mean of squares


def test_layernormalization_op_is_fp32_statistics_but_still_scaled_for_fp16_kernels(tmp_path):
    ln = torch.nn.LayerNorm(256)
    x = torch.randn(1, 64, 256, generator=_gen()) * 300.0
    plain, fixed, sites, model = _run(tmp_path, ln, x, "lnop")
    assert plain >= 80 and fixed >= 80  # stash_type=1: FP32 statistics, the true-FP16 check passes unscaled
    assert [s.pattern for s in sites] == ["layernorm-op"] and sites[0].scale_log2 > 0
    node = next(n for n in model.graph.node if n.op_type == "LayerNormalization")
    eps = onnx.helper.get_attribute_value(next(a for a in node.attribute if a.name == "epsilon"))
    assert eps == pytest.approx(1e-5 * 2.0 ** (-2 * sites[0].scale_log2), rel=1e-6)
    calm = torch.randn(1, 64, 256, generator=_gen())  # nothing near FP16's range: left alone
    _, _, none, _ = _run(tmp_path, ln, calm, "lnop-calm")
    assert none == ()


@pytest.mark.parametrize("explicit", [False, True])
def test_l2_normalize_over_a_large_axis(tmp_path, explicit):
    x = torch.randn(1, 4, 16384, generator=_gen()) * 4.0  # sum of 16384 squares ~2.6e5
    plain, fixed, sites, _ = _run(tmp_path, L2Normalize(explicit), x, f"l2{int(explicit)}")
    assert plain < 30 and fixed >= 80, (plain, fixed)
    assert [s.pattern for s in sites] == ["l2norm"] and sites[0].scale_log2 > 0


@pytest.mark.parametrize("mean", [False, True])
def test_big_spatial_sum(tmp_path, mean):
    x = torch.randn(1, 8, 128, 128, generator=_gen()) * 10.0 + 50.0  # sum over 16384 pixels ~8e5
    plain, fixed, sites, model = _run(tmp_path, SpatialSum(mean), x, f"sum{int(mean)}")
    assert plain < 20 and fixed >= 60, (plain, fixed)  # mean: the sum tree overflows, the mean fits
    assert [s.pattern for s in sites] == ["sum"] and sites[0].scale_log2 > 0
    unscale = [n for n in model.graph.node if n.name.endswith("GraphSafeUnscale")]
    assert len(unscale) == (1 if mean else 0)  # sum / (h*w): the 2^s goes into the divisor instead
    calm = torch.randn(1, 8, 16, 16, generator=_gen())
    _, _, none, _ = _run(tmp_path, SpatialSum(mean), calm, f"sum-calm{int(mean)}")
    assert none == ()


def test_matmul_scale_before_softmax(tmp_path):
    q = torch.randn(1, 64, 64, generator=_gen()) * 75.0  # q.k up to ~5e5; after the 4.5e-5 scale ~20
    plain, fixed, sites, model = _run(tmp_path, ScaledAttention(), q, "attn")
    assert not np.isfinite(plain) and fixed >= 80, (plain, fixed)
    assert [s.pattern for s in sites] == ["matmul-scale"]
    s = sites[0].scale_log2
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    matmul = next(n for n in model.graph.node if n.op_type == "MatMul")
    after = next(n for n in model.graph.node if matmul.output[0] in n.input)  # the scale, times 2^s
    assert s > 0 and np.isclose(consts[after.input[1]], np.float32(4.5e-5) * 2.0**s, rtol=0, atol=0)


class Hot(torch.nn.Module):
    """An activation past 65504 itself: no rescaling can help, only FP32 nodes."""

    def forward(self, h):
        return (h * 3000.0) * (1.0 / 3000.0) + 0.1 * h


class Mixed(torch.nn.Module):
    def __init__(self, c=64, hot=True):
        super().__init__()
        torch.manual_seed(0)
        self.intro = torch.nn.Conv2d(3, c, 3, padding=1)
        self.norm = ChannelLN(c)
        self.hot = Hot() if hot else torch.nn.Identity()
        self.ending = torch.nn.Conv2d(c, 3, 3, padding=1)

    def forward(self, x):
        h = self.intro(x) * 40.0
        return x + 0.01 * self.ending(self.hot(self.norm(h * 10.0) * 30.0))


@pytest.mark.parametrize("hot", [False, True])
def test_islands_only_where_the_pass_cannot_help(tmp_path, hot):
    x = torch.rand(1, 3, 32, 32, generator=_gen())
    src = _export(tmp_path, Mixed(hot=hot), x, "mixed")
    xs = [x.numpy(), torch.rand(1, 3, 32, 32, generator=_gen(1)).numpy()]
    dst = str(tmp_path / "mixed.fp16.onnx")
    assert psnr_of(true_fp16_check(src, xs)) < 50  # all FP16 without the pass
    lines = []
    res = convert_fp16_safe(src, xs, dst, target_psnr=50, log=lines.append)
    assert [s.pattern for s in res.sites] == ["layernorm"]
    assert res.met and res.psnr_after >= 50
    if not hot:
        assert res.kept_fp32 == () and res.evals == 0 and res.psnr_before >= 50
    else:
        assert res.psnr_before < 50 and res.kept_fp32
        assert all(n.startswith("/hot/") for n in res.kept_fp32), res.kept_fp32  # never the LayerNorm
        assert set(res.kept_fp32) == {"/hot/Mul", "/hot/Mul_1"}  # the x3000 and its way back, nothing else
    check = true_fp16_check(src, xs, fp16_path=dst)
    assert psnr_of(check) == pytest.approx(res.psnr_after) and any("kept FP32" in line for line in lines)


def test_user_errors(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        convert_fp16_safe(str(tmp_path / "missing.onnx"), [np.zeros((1, 3, 8, 8), np.float32)], str(tmp_path / "o.onnx"))
    x = torch.randn(1, 16, 8)
    src = _export(tmp_path, TokenLN(), x, "t")
    fp16 = str(tmp_path / "t16.onnx")
    convert_fp16(src, fp16, [])
    with pytest.raises(UsageError, match="not an FP32 graph"):
        convert_fp16_safe(fp16, [x.numpy()], str(tmp_path / "o.onnx"))
    with pytest.raises(UsageError, match="at least one sample input"):
        convert_fp16_safe(src, [], str(tmp_path / "o.onnx"))
    with pytest.raises(UsageError, match="kind"):
        convert_fp16_safe(src, [x.numpy()], str(tmp_path / "o.onnx"), kind="pixels")


def test_model_level_api_leaves_its_input_alone(tmp_path):
    x = torch.randn(1, 256, 4, 4, generator=_gen()) * 300.0
    model = onnx.load(_export(tmp_path, ChannelLN(256), x, "api"))
    before = model.SerializeToString()
    safe, sites = range_safe_model(model, [x.numpy()])
    assert model.SerializeToString() == before and [s.pattern for s in sites] == ["layernorm"]
    ops = [n.op_type for n in model.graph.node if n.op_type != "Constant"]
    assert sorted(n.op_type for n in safe.graph.node if n.op_type != "Constant") == sorted(ops + ["Mul"])
