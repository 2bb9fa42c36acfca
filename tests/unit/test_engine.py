import os

import pytest
import torch

from deploy_kit._deps import available
from deploy_kit.backends import RTXBuildOptions
from deploy_kit.backends import get as get_backend
from deploy_kit.errors import EngineBuildError, UsageError
from deploy_kit.export import export_onnx
from deploy_kit.models import get_adapter
from deploy_kit.models.checkpoint import load_model
from deploy_kit.precision.fp16 import convert_fp16
from deploy_kit.runners.cuda import gpu_available
from deploy_kit.specs import ExportRequest, TLCConfig

needs_rtx = pytest.mark.skipif(not available("tensorrt_rtx"), reason="tensorrt-rtx not installed (pip install 'deploy-kit[rtx]')")
ADAPTER = get_adapter("nafnet")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("eng")
    req = ExportRequest("nafnet", "tiny", 64, 64, tlc=TLCConfig.from_train_size(32))
    model = load_model(ADAPTER, "tiny", None).model
    src = str(d / "m.fp32.onnx")
    export_onnx(ADAPTER.wrap(model, req, static=True), torch.rand(1, 3, 64, 64), src, input_names=["input"], output_names=["output"], metadata={})
    dst = str(d / "m.fp16.onnx")
    convert_fp16(src, dst, ADAPTER.fp32_islands(req))
    return src, dst


def _rtx_build(onnx_path: str):
    """Build ``onnx_path`` with TensorRT-RTX ahead of time; (backend, plan path, build result)."""
    eng = get_backend("tensorrt-rtx")
    plan = onnx_path.replace(".onnx", f".{eng.major()}.plan")
    return eng, plan, eng.build(onnx_path, plan)


@needs_rtx
@pytest.mark.parametrize("which", [0, 1], ids=["fp32", "fp16"])
def test_rtx_builds_real_engine_ahead_of_time(tiny_onnx, which):
    eng, plan, res = _rtx_build(tiny_onnx[which])
    assert os.path.getsize(plan) == res.size > 100_000
    with open(plan, "rb") as fh:
        head = fh.read(4)
    assert head[:1] != b"{"  # nothing prepended: trtexec and Triton load the plan as is
    import tensorrt_rtx as trt

    # the plan deserializes only on a GPU; on CPU we check the builder really produced bytes of an engine
    assert eng.major() == "rtx" + trt.__version__.split(".")[0]
    # what the manifest records for run/verify: the default targets of the support matrix
    assert res.details["compute_capabilities"] == ["sm86", "sm89", "sm120"] and res.details["default_targets"]


@needs_rtx
@pytest.mark.parametrize("target", ["sm999", "sm80", "sm90"])
def test_rtx_rejects_what_it_does_not_target(tiny_onnx, tmp_path, target):
    """sm80 is in tensorrt_rtx 1.7's ComputeCapability enum, but in no TensorRT-RTX support matrix."""
    with pytest.raises(UsageError, match=f"unknown compute capability '{target}' for TensorRT-RTX .*; choose from sm75, sm86"):
        get_backend("tensorrt-rtx").build(tiny_onnx[0], str(tmp_path / "x.plan"), RTXBuildOptions((target,)))
    assert not os.path.exists(tmp_path / "x.plan")


@needs_rtx
def test_rtx_records_the_targets_it_was_built_for(tiny_onnx, tmp_path):
    eng = get_backend("tensorrt-rtx")
    options = eng.build_options(compute_capability=["SM89", "sm120", "sm89"])  # what --compute-capability gives
    res = eng.build(tiny_onnx[1], str(tmp_path / "x.plan"), options)
    assert res.details["compute_capabilities"] == ["sm89", "sm120"] and not res.details["default_targets"]
    assert options == RTXBuildOptions(("SM89", "sm120", "sm89"))  # the build stored nothing in its options
    assert os.path.getsize(tmp_path / "x.plan") == res.size > 100_000


@pytest.mark.skipif(gpu_available()[0], reason="a GPU is present: the no-GPU error path does not apply")
@pytest.mark.skipif(not available("tensorrt"), reason="desktop tensorrt not installed")
def test_desktop_tensorrt_without_gpu_is_a_clear_error(tiny_onnx, tmp_path):
    with pytest.raises(EngineBuildError, match="builds on the target GPU"):
        get_backend("tensorrt").build(tiny_onnx[0], str(tmp_path / "x.plan"))


def test_unknown_backend():
    with pytest.raises(UsageError, match="unknown backend"):
        get_backend("no-such-backend")


class _CascadeBoxSite(torch.nn.Module):
    """A TLC pooling site (NAFNet's SCA) with both axes in the two-stage form (a 6-wide AveragePool,
    then 4 taps dilated by 6), as on NAFNet's large maps (at this small size the cost rule would
    pick the banded MatMul and the AveragePool)."""

    def __init__(self):
        super().__init__()
        from deploy_kit.tlc import BoxMean, LocalAvgPoolStatic

        self.pool = LocalAvgPoolStatic((24, 24), (48, 64))
        self.pool.rows, self.pool.cols = BoxMean(48, 24, -2, "cascade"), BoxMean(64, 24, -1, "cascade")
        self.conv = torch.nn.Conv2d(8, 8, 1)

    def forward(self, x):
        return x * self.pool.finish(self.conv(self.pool(x)))


@pytest.fixture(scope="module")
def cascade_box_onnx(tmp_path_factory):
    d = tmp_path_factory.mktemp("cascadebox")
    torch.manual_seed(0)
    site = _CascadeBoxSite().eval()
    x = torch.rand(1, 8, 48, 64)
    src = str(d / "site.fp32.onnx")
    export_onnx(site, x, src, input_names=["input"], output_names=["output"], metadata={})
    dst = str(d / "site.fp16.onnx")
    convert_fp16(src, dst, [])
    with torch.no_grad():
        return src, dst, x.numpy(), site(x).numpy()


def test_cascade_box_mean_runs_in_onnx_runtime(cascade_box_onnx):
    import numpy as np

    from deploy_kit.runners.ort import ort_session

    src, dst, x, ref = cascade_box_onnx
    for path, tol in ((src, 1e-5), (dst, 2e-3)):  # measured 1.1e-7 and 1.6e-4 (max |output| 0.46)
        sess = ort_session(path, threads=1)
        got = sess.run(None, {"input": x})[0]
        assert np.abs(got.astype(np.float32) - ref).max() < tol, path
    # ONNX Runtime computes the FP16 graph in FP32 between Casts; the true-FP16 emulation rounds
    # every FP16 tensor (the b-wide means, their dilated mean) as an FP16 engine would
    from deploy_kit.precision.truefp16 import psnr_of, true_fp16_check

    check = true_fp16_check(src, [x], fp16_path=dst, threads=1)
    assert check.status == "pass" and psnr_of(check) > 60, psnr_of(check)


@needs_rtx
@pytest.mark.parametrize("which", [0, 1], ids=["fp32", "fp16"])
def test_rtx_builds_the_cascade_box_mean(cascade_box_onnx, which):
    _, plan, res = _rtx_build(cascade_box_onnx[which])
    assert os.path.getsize(plan) == res.size > 0
