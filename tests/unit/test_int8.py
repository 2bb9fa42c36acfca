"""INT8 Q/DQ: graph structure, exclusions, range cache, legacy TensorRT cache, accuracy on trained weights."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re

import numpy as np
import pytest

from deploy_kit.errors import CalibrationError, UsageError
from deploy_kit.precision import int8, legacy_cache
from deploy_kit.precision.calibration import MIN_IMAGES, eval_pairs, load_calibration_set
from deploy_kit.precision.int8 import Int8Options, quantize_int8

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

DEMO = os.path.join(os.path.dirname(int8.__file__), "..", "demo", "nafnet-demo-w16-noise25.pth")
S = 32


def export(tmp_dir, variant: str | None, size: int, weights: str | None = None, name: str = "m.onnx"):
    """Export a NAFNet the way the pipeline does (TorchScript exporter, opset 17, static size)."""
    import torch

    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_model
    from deploy_kit.specs import ExportRequest

    torch.set_num_threads(1)
    adapter = get_adapter("nafnet")
    loaded = load_model(adapter, variant, weights)
    req = ExportRequest("nafnet", loaded.variant.name, size, size)
    path = os.path.join(tmp_dir, name)
    x = torch.rand(1, 3, size, size)
    torch.onnx.export(adapter.wrap(loaded.model, req, static=True), x, path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])
    return path, adapter.int8_excluded(req)


def run(path, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def psnr(a, b):
    return 10 * np.log10(1.0 / np.mean((a.astype(np.float64) - b) ** 2))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("int8")
    src, islands = export(str(d), "tiny-notlc", S)
    calib = load_calibration_set(None, channels=3, height=S, width=S, count=MIN_IMAGES, degradation="noise:25")
    opts = Int8Options(fp32_patterns=tuple(islands), cache_dir=str(d / "cache"), threads=1)
    dst = str(d / "m.int8.onnx")
    report = quantize_int8(src, dst, calib, opts)
    return dict(dir=d, src=src, dst=dst, calib=calib, opts=opts, report=report, islands=islands)


def test_qdq_around_every_conv_but_first_and_last(tiny):
    q = onnx.load(tiny["dst"])
    producers = {o: n for n in q.graph.node for o in n.output}
    inits = {i.name: i for i in q.graph.initializer}
    convs = [n for n in q.graph.node if n.op_type == "Conv"]
    fed_by_dq = lambda t: t in producers and producers[t].op_type == "DequantizeLinear"  # noqa: E731
    assert tiny["report"].excluded == ("/intro/Conv", "/ending/Conv")
    for c in convs:
        if c.name in tiny["report"].excluded:
            assert not fed_by_dq(c.input[0]) and not fed_by_dq(c.input[1]), c.name
        else:
            assert fed_by_dq(c.input[0]) and fed_by_dq(c.input[1]), c.name
            assert len(c.input) < 3 or c.input[2] in inits and inits[c.input[2]].data_type == onnx.TensorProto.FLOAT
    assert tiny["report"].quantized_nodes == len(convs) - 2 > 20
    # symmetric int8 everywhere (zero point 0), per-channel weights, no Q/DQ inside the FP32 islands
    from onnx import numpy_helper

    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zp = numpy_helper.to_array(inits[n.input[2]])
            assert zp.dtype == np.int8 and not zp.any()
    w_dq = [producers[c.input[1]] for c in convs if fed_by_dq(c.input[1])]
    assert all(numpy_helper.to_array(inits[d.input[1]]).size > 1 for d in w_dq)
    island = re.compile("|".join(tiny["islands"]))
    consumers_of_dq = {i for n in q.graph.node if n.op_type != "DequantizeLinear" for i in n.input if fed_by_dq(i)}
    assert not any(island.search(n.name) for n in q.graph.node if set(n.input) & consumers_of_dq)
    # float ops (the encoder skip Adds) read the original tensor, not its INT8-rounded copy
    float_readers = [n.name for n in q.graph.node if n.op_type != "Conv" and any(fed_by_dq(i) for i in n.input)]
    assert not float_readers
    meta = {p.key: p.value for p in q.metadata_props}
    assert tiny["calib"].digest in meta["deploy_kit.int8"]


def test_range_cache_hit_is_bit_identical_and_keyed_by_data(tiny, tmp_path):
    r = tiny["report"]
    assert isinstance(r, int8.Int8Result) and not r.cache_hit and os.path.isfile(r.cache_file)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.cache_hit = True  # a result, not a record to edit
    dst2 = str(tmp_path / "again.onnx")
    r2 = quantize_int8(tiny["src"], dst2, tiny["calib"], tiny["opts"])
    assert r2.cache_hit and r2.cache_file == r.cache_file
    assert r2.scales_sha256 == r.scales_sha256
    digest = lambda p: hashlib.sha256(open(p, "rb").read()).hexdigest()  # noqa: E731
    assert digest(dst2) == digest(tiny["dst"])
    other = load_calibration_set(None, channels=3, height=S, width=S, count=MIN_IMAGES, seed=5, degradation="noise:25")
    r3 = quantize_int8(tiny["src"], str(tmp_path / "other.onnx"), other, tiny["opts"])
    assert not r3.cache_hit and r3.cache_file != r.cache_file and r3.scales_sha256 != r.scales_sha256
    r4 = quantize_int8(tiny["src"], str(tmp_path / "x.onnx"), tiny["calib"], tiny["opts"], cache_key_extra="v2")
    assert not r4.cache_hit


def test_default_cache_dir_follows_xdg(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert int8.default_cache_dir() == str(tmp_path / "xdg" / "deploy-kit" / "calib")
    opts = Int8Options(fp32_patterns=tiny["opts"].fp32_patterns, threads=1)
    r = quantize_int8(tiny["src"], str(tmp_path / "y.onnx"), tiny["calib"], opts)
    assert r.cache_file.startswith(str(tmp_path / "xdg" / "deploy-kit" / "calib"))


def test_percentile_method_gives_its_own_ranges(tiny, tmp_path):
    opts = Int8Options(method="percentile", percentile=99.9, fp32_patterns=tiny["opts"].fp32_patterns,
                       cache_dir=tiny["opts"].cache_dir, threads=1)
    dst = str(tmp_path / "percentile.onnx")
    r = quantize_int8(tiny["src"], dst, tiny["calib"], opts)
    assert r.method == "percentile" and r.quantized_nodes == tiny["report"].quantized_nodes
    assert r.scales_sha256 != tiny["report"].scales_sha256
    onnx.checker.check_model(onnx.load(dst))
    lo = int8.load_ranges(r.cache_file)
    hi = int8.load_ranges(tiny["report"].cache_file)
    # a percentile clips the tails: never wider than the min/max range, narrower somewhere
    assert all(lo[k] <= hi[k] * 1.001 for k in hi) and any(lo[k] < 0.9 * hi[k] for k in hi)


def test_entropy_method_on_a_small_conv_net(tmp_path):
    """onnxruntime's KL search is slow per tensor, so this uses a 3-conv net."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, padding=1),
                              torch.nn.ReLU(), torch.nn.Conv2d(8, 3, 3, padding=1)).eval()
    src = str(tmp_path / "small.onnx")
    torch.onnx.export(net, torch.rand(1, 3, S, S), src, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])
    calib = load_calibration_set(None, channels=3, height=S, width=S, count=MIN_IMAGES)
    reports = {
        m: quantize_int8(src, str(tmp_path / f"{m}.onnx"), calib, Int8Options(method=m, cache_dir=str(tmp_path), threads=1))
        for m in ("minmax", "entropy")
    }
    assert reports["entropy"].quantized_nodes == reports["minmax"].quantized_nodes == 1
    assert reports["entropy"].excluded == ("/0/Conv", "/4/Conv")
    assert reports["entropy"].scales_sha256 != reports["minmax"].scales_sha256
    x = calib.arrays[0]
    assert psnr(run(str(tmp_path / "entropy.onnx"), x), net(torch.from_numpy(x)).detach().numpy()) > 30


def test_bad_options_and_mismatched_calibration(tiny, tmp_path):
    with pytest.raises(UsageError):
        quantize_int8(tiny["src"], str(tmp_path / "a.onnx"), tiny["calib"], Int8Options(method="kl"))
    with pytest.raises(UsageError):
        quantize_int8(tiny["src"], str(tmp_path / "a.onnx"), tiny["calib"], Int8Options(remainder="bf16"))
    wrong = load_calibration_set(None, channels=3, height=48, width=48, count=MIN_IMAGES)
    with pytest.raises(CalibrationError) as e:
        quantize_int8(tiny["src"], str(tmp_path / "a.onnx"), wrong, tiny["opts"])
    assert "1x3x48x48" in str(e.value) and "1x3x32x32" in str(e.value) and "\n" not in str(e.value)
    assert not os.path.exists(tmp_path / "a.onnx")


def test_failed_write_leaves_no_partial_file(tiny, tmp_path):
    target = tmp_path / "occupied.onnx"
    target.mkdir()  # os.replace onto a directory fails after the graph was written to a temp file
    with pytest.raises(OSError):
        quantize_int8(tiny["src"], str(target), tiny["calib"], tiny["opts"])
    assert target.is_dir() and not os.listdir(target)
    assert sorted(os.listdir(tmp_path)) == ["occupied.onnx"]  # no temp file left behind


def test_legacy_cache_format(tiny):
    # 1/127 encodes as 3c010204 (amax 1.0, the scale of a [0, 1] image input)
    assert legacy_cache.trt_version_number("8.6.1") == 8601
    assert legacy_cache.trt_version_number("10.3.0") == 100300
    assert legacy_cache.trt_version_number("10.14.1") == 101401
    quantize_int8(tiny["src"], tiny["dst"], tiny["calib"], tiny["opts"])  # other tests rewrote it
    path = tiny["report"].legacy_cache
    assert path == os.path.splitext(tiny["src"])[0] + ".int8.calib"
    assert legacy_cache.legacy_cache_path("/o/nafnet-x-64x64.fp32.onnx") == "/o/nafnet-x-64x64.int8.calib"
    lines = open(path).read().splitlines()
    assert lines[0] == "TRT-100300-EntropyCalibration2"
    assert all(re.fullmatch(r"[^:]+: [0-9a-f]{8}", ln) for ln in lines[1:]) and len(lines) > 40
    header, amax = legacy_cache.read_legacy_calibration_cache(path)
    ranges = int8.load_ranges(tiny["report"].cache_file)
    q = onnx.load(tiny["src"])
    conv_io = {t for n in q.graph.node if n.op_type == "Conv" for t in (n.input[0], n.output[0])}
    island = re.compile("|".join(tiny["islands"]))
    island_outputs = {o for n in q.graph.node if island.search(n.name) for o in n.output}
    # scales for the layers the Q/DQ graph quantizes (conv inputs/outputs), none for FP32 islands
    assert set(amax) == (set(ranges) & conv_io) - island_outputs and set(amax) <= conv_io
    assert island_outputs & set(ranges) and len(amax) > 30
    for name, v in amax.items():
        assert v == pytest.approx(ranges[name], rel=1e-6)
    intro = next(n for n in q.graph.node if n.name == "/intro/Conv")
    assert 0.9 < amax[intro.input[0]] <= 1.0  # the (padded) noisy crops in [0, 1]
    cmd = tiny["report"].trtexec
    assert cmd.startswith("trtexec ") and f"--onnx={tiny['src']}" in cmd and f"--calib={path}" in cmd
    assert "--int8" in cmd and "/intro/Conv:fp32" in cmd and "--saveEngine=" in cmd


def test_legacy_cache_writer_roundtrip(tmp_path):
    p = str(tmp_path / "c.calib")
    legacy_cache.write_legacy_calibration_cache({"images": 1.0, "feat": 12.7}, p, trt_version="8.6.1")
    assert open(p).read() == "TRT-8601-EntropyCalibration2\nfeat: 3dcccccd\nimages: 3c010204\n"
    header, amax = legacy_cache.read_legacy_calibration_cache(p)
    assert header == "TRT-8601-EntropyCalibration2" and amax == pytest.approx({"images": 1.0, "feat": 12.7})


def test_first_last_detection_with_tlc(tmp_path):
    """The TLC form (extra pools and pads) must not change which layers count as first/last."""
    import torch

    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_model
    from deploy_kit.specs import ExportRequest, TLCConfig

    torch.set_num_threads(1)
    adapter = get_adapter("nafnet")
    m = load_model(adapter, "tiny", None)
    req = ExportRequest("nafnet", "tiny", 48, 48, tlc=TLCConfig.from_train_size(32))
    path = str(tmp_path / "tlc.onnx")
    torch.onnx.export(adapter.wrap(m.model, req, static=True), torch.rand(1, 3, 48, 48), path, dynamo=False,
                      opset_version=17, input_names=["input"], output_names=["output"])
    first, last = int8.first_last_weighted(onnx.load(path))
    assert (first, last) == (["/intro/Conv"], ["/ending/Conv"])


@pytest.mark.skipif(not os.path.isfile(DEMO), reason="demo checkpoint not trained (python -m deploy_kit.demo.train)")
def test_int8_psnr_on_trained_demo_checkpoint(tmp_path):
    size = 64
    src, islands = export(str(tmp_path), None, size, weights=DEMO)
    calib = load_calibration_set(None, channels=3, height=size, width=size, count=16, degradation="noise:25")
    dst = str(tmp_path / "demo.int8.onnx")
    quantize_int8(src, dst, calib, Int8Options(fp32_patterns=tuple(islands), cache_dir=str(tmp_path / "c"), threads=1))
    pairs = eval_pairs(channels=3, height=size, width=size, count=4, degradation="noise:25")
    vs_fp32 = [psnr(run(dst, x), run(src, x)) for x, _ in pairs]
    assert min(vs_fp32) >= 35.0, vs_fp32


def test_tensorrt_rtx_accepts_the_qdq_graph(tiny):
    trt = pytest.importorskip("tensorrt_rtx")
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(tiny["dst"]), [parser.get_error(i).desc() for i in range(parser.num_errors)]
    kinds = {network.get_layer(i).type for i in range(network.num_layers)}
    assert trt.LayerType.QUANTIZE in kinds and trt.LayerType.DEQUANTIZE in kinds
    plan = builder.build_serialized_network(network, builder.create_builder_config())
    assert plan is not None and plan.nbytes > 0


def test_fp16_remainder(tiny, tmp_path):
    opts = Int8Options(remainder="fp16", fp32_patterns=tiny["opts"].fp32_patterns, cache_dir=tiny["opts"].cache_dir, threads=1)
    dst = str(tmp_path / "fp16rem.onnx")
    r = quantize_int8(tiny["src"], dst, tiny["calib"], opts)
    q = onnx.load(dst)
    assert r.quantized_nodes == tiny["report"].quantized_nodes
    assert any(n.op_type == "Cast" for n in q.graph.node)
    x = tiny["calib"].arrays[0]
    assert psnr(run(dst, x), run(tiny["src"], x)) > 30
