"""The true-FP16 check sees FP16 overflow that ONNX Runtime's CPU kernels hide."""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from deploy_kit.export import export_onnx
from deploy_kit.models.nafnet import LayerNorm2d
from deploy_kit.compare import metrics
from deploy_kit.precision.fp16 import convert_fp16
from deploy_kit.models.rangesafe import channel_layernorm as range_safe_layernorm_channels, fp32_change
from deploy_kit.precision.truefp16 import BACKEND, psnr_of, true_fp16_check, true_fp16_outputs
from deploy_kit.runners.ort import OrtRunner, ort_session


class _Norm(torch.nn.Module):
    def __init__(self, c, safe=False, scale_log2=2):
        super().__init__()
        self.ln = LayerNorm2d(c)
        self.safe, self.scale_log2 = safe, scale_log2

    def forward(self, x):
        if self.safe:
            return range_safe_layernorm_channels(x, self.ln.weight, self.ln.bias, self.ln.eps, self.scale_log2)
        return self.ln(x)


def _export(tmp_path, module, x, name="m"):
    path = str(tmp_path / f"{name}.onnx")
    export_onnx(module.eval(), x, path, input_names=["input"], output_names=["output"], metadata={})
    return path


def _hot(c=256, kind="randn"):
    g = torch.Generator().manual_seed(0)
    if kind == "randn":
        return torch.randn(1, c, 8, 8, generator=g) * 300.0  # |d|^2 > 65504: the squares overflow
    return (torch.rand(1, c, 8, 8, generator=g) * 2 - 1) * 175.0  # squares fit, only the sum over C overflows


@pytest.mark.parametrize("kind", ["randn", "uniform"])
def test_ort_hides_layernorm_overflow_true_fp16_shows_it(tmp_path, kind):
    x = _hot(512 if kind == "uniform" else 256, kind)
    src = _export(tmp_path, _Norm(x.shape[1]), x)
    fp16 = str(tmp_path / "m16.onnx")
    convert_fp16(src, fp16, [])  # all FP16, no islands
    xn = x.numpy()
    ref = OrtRunner(src).run(xn)[0]
    for optimize in (True, False):  # ORT's CPU EP runs this chain in FP32 at every level
        hidden = metrics("o", ref, OrtRunner(fp16, optimize=optimize).run(xn)[0], "features")
        assert hidden.nonfinite == 0 and hidden.psnr_norm > 80
    check = true_fp16_check(src, [xn], kind="features", min_psnr=50)
    assert check.backend == BACKEND and check.status == "fail"
    assert psnr_of(check) < 30  # variance inf -> output 0 (or NaN): PSNR collapse


def test_true_fp16_with_fp32_reductions_misses_sum_only_overflow(tmp_path):
    """|x| <= 175: each square fits FP16, the sum over C does not; only FP16 partial sums see it."""
    x = _hot(512, "uniform")
    src = _export(tmp_path, _Norm(512), x)
    ref = OrtRunner(src).run(x.numpy())[0]
    loose = true_fp16_outputs(src, [x.numpy()], reductions="fp32")[0][0]
    strict = true_fp16_outputs(src, [x.numpy()], reductions="fp16")[0][0]
    assert metrics("o", ref, loose, "features").psnr_norm > 60
    assert metrics("o", ref, strict, "features").psnr_norm < 30


def test_range_safe_layernorm_passes_true_fp16_and_is_exact_in_fp32(tmp_path):
    x = _hot(256)
    plain = true_fp16_check(_export(tmp_path, _Norm(256), x, "plain"), [x.numpy()], kind="features", min_psnr=50)
    safe = true_fp16_check(_export(tmp_path, _Norm(256, safe=True), x, "safe"), [x.numpy()], kind="features", min_psnr=50)
    assert plain.status == "fail" and psnr_of(plain) < 50
    assert safe.status == "pass" and psnr_of(safe) >= 50 and safe.outputs[0].nonfinite == 0
    assert fp32_change() <= 1e-6


def test_islands_make_the_plain_layernorm_pass(tmp_path):
    x = _hot(256)
    src = _export(tmp_path, _Norm(256), x)
    fp16 = str(tmp_path / "isl.onnx")
    convert_fp16(src, fp16, [r"/ln/"])  # the whole LayerNorm FP32
    assert psnr_of(true_fp16_check(src, [x.numpy()], fp16_path=fp16, kind="features")) >= 50


def test_layernormalization_op_statistics_are_fp32_by_spec(tmp_path):
    class Tok(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = torch.nn.LayerNorm(256, eps=1e-6)

        def forward(self, x):
            b, c, h, w = x.shape
            return self.ln(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)

    x = _hot(256)
    src = _export(tmp_path, Tok(), x)
    assert any(n.op_type == "LayerNormalization" for n in onnx.load(src).graph.node)
    assert psnr_of(true_fp16_check(src, [x.numpy()], kind="features")) > 60  # stash_type=1


def test_rounding_pair_is_kept_by_onnxruntime():
    g = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["a"], to=TensorProto.FLOAT16), helper.make_node("Cast", ["a"], ["y"], to=TensorProto.FLOAT)],
        "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = np.array([1.0001, 70000.0, 3.14159265, 1e-8], np.float32)
    for optimize in (True, False):
        y = ort_session(m.SerializeToString(), optimize=optimize).run(None, {"x": x})[0]
        with np.errstate(over="ignore"):
            np.testing.assert_array_equal(y, x.astype(np.float16).astype(np.float32))


def test_true_fp16_of_a_safe_graph_is_close_to_fp32(tmp_path):
    class Small(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.a = torch.nn.Conv2d(3, 16, 3, padding=1)
            self.n = LayerNorm2d(16)
            self.b = torch.nn.Conv2d(16, 3, 3, padding=1)

        def forward(self, x):
            return x + 0.1 * self.b(torch.relu(self.n(self.a(x)))).mean(dim=(2, 3), keepdim=True)

    x = torch.rand(1, 3, 16, 16)
    src = _export(tmp_path, Small(), x)
    check = true_fp16_check(src, [x.numpy()])
    assert check.status == "pass" and check.outputs[0].psnr > 50
