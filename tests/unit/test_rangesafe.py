"""Range-safe FP16 rewrites in the models' export forms (models/rangesafe.py)."""

import numpy as np
import pytest
import torch

from deploy_kit.export import export_onnx
from deploy_kit.models import get_adapter
from deploy_kit.models.checkpoint import load_model
from deploy_kit.models.rangesafe import apply_scales, record_ranges, set_range_safe
from deploy_kit.compare import metrics
from deploy_kit.precision.fp16 import convert_fp16
from deploy_kit.precision.truefp16 import true_fp16_outputs
from deploy_kit.runners.ort import OrtRunner
from deploy_kit.simplify import simplify
from deploy_kit.specs import ExportRequest, TLCConfig

CASES = [("nafnet", "tiny", True), ("nafnet", "tiny-notlc", False), ("restormer", "tiny", True),
         ("restormer", "tiny-biasfree", False), ("restormer", "tiny-gray", False)]


@pytest.mark.parametrize("model, variant, tlc", CASES)
def test_rewrites_change_fp32_output_by_at_most_1e6(model, variant, tlc):
    A = get_adapter(model)
    m = load_model(A, variant, None).model
    req = ExportRequest(model, variant, 64, 64, tlc=TLCConfig.from_train_size(32) if tlc else None)
    x = torch.rand(1, A.in_channels(A.spec.variant(variant)), 64, 64)
    with torch.no_grad():
        eager = A.wrap(m, req, static=False)
        with record_ranges(eager) as ranges:
            eager(x)
        static = A.wrap(m, req, static=True)
        assert apply_scales(static, ranges)  # every LayerNorm / L2 norm site is range-safe
        rewritten = static(x)
        assert set_range_safe(static, False) > 0
        plain = static(x)
    assert float((rewritten - plain).abs().max()) <= 1e-6


def _stress_nafnet(k):
    """tiny NAFNet computing the same function with every feature map k times larger: intro,
    the downsampling biases and every block's beta/gamma x k, ending / k (LayerNorm is scale-free,
    so the network is homogeneous). The LayerNorms then see |x| in the hundreds, as trained NAFNet's."""
    A = get_adapter("nafnet")
    m = load_model(A, "tiny-notlc", None).model
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("intro.") or (name.startswith("downs.") and name.endswith("bias")) \
                    or name.endswith((".beta", ".gamma")):
                p.mul_(k)
        m.ending.weight.div_(k)
    return A, m


def test_stress_model_plain_layernorm_overflows_only_under_true_fp16_and_rewrite_passes(tmp_path):
    A, m = _stress_nafnet(300)
    req = ExportRequest("nafnet", "tiny-notlc", 64, 64, precision="fp16")
    x = torch.rand(1, 3, 64, 64)
    eager = A.wrap(m, req, static=False)
    with torch.no_grad(), record_ranges(eager) as ranges:
        ref = eager(x).numpy()
        same = A.wrap(load_model(A, "tiny-notlc", None).model, req, static=False)(x).numpy()
    assert np.abs(ref - same).max() < 1e-3  # the same function, only larger inside
    assert max(r["var"] for r in ranges.values()) > 65504  # variances beyond FP16: a plain LayerNorm overflows
    psnr = {}
    for name, safe in (("plain", False), ("range-safe", True)):
        static = A.wrap(m, req, static=True)
        apply_scales(static, ranges)
        set_range_safe(static, safe)
        raw, src, dst = (str(tmp_path / f"{name}{t}.onnx") for t in ("-raw", "", "16"))
        export_onnx(static, x, raw, input_names=["input"], output_names=["output"], metadata={})
        simplify(raw, src)  # as the pipeline does
        convert_fp16(src, dst, [])  # FP16 end to end: no islands
        with OrtRunner(dst) as r:
            ort = r.run(x.numpy())[0]
        true16 = true_fp16_outputs(dst, [x.numpy()], fp16_path=dst)[0][0]
        psnr[name] = (metrics("o", ref, ort, "image").psnr, metrics("o", ref, true16, "image").psnr)
    assert psnr["plain"][0] >= 50, psnr  # ONNX Runtime's fused FP32 kernels hide the overflow ...
    assert psnr["plain"][1] < 40, psnr  # ... the true-FP16 check shows it
    assert min(psnr["range-safe"]) >= 50, psnr  # and the rewrite fixes it
