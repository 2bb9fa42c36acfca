"""PVT v1: official layout, checkpoints, positional-embedding resizing, ONNX export, FP16 islands.

Tiny variants only (plus one forward of the official ``tiny`` at 224 and 512), one torch thread:
the whole file runs in well under a minute on 2 CPU cores.
"""

from __future__ import annotations


import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import torch.nn.functional as F  # noqa: E402

from deploy_kit.errors import CheckpointError, UsageError  # noqa: E402
from deploy_kit.models.checkpoint import load_model  # noqa: E402
from deploy_kit.models.pvt import ADAPTER  # noqa: E402
from deploy_kit.models.registry import get_spec  # noqa: E402
from deploy_kit.specs import ExportRequest  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _req(variant="test-tiny", h=64, w=64, head="cls"):
    return ExportRequest("pvt", variant, h, w, options=(("head", head),))


def _random(variant="test-tiny", seed=0):
    return load_model(ADAPTER, variant, None, seed=seed).model


def _outputs(y):
    return [t.detach().numpy() for t in (y if isinstance(y, (tuple, list)) else (y,))]


def _run(module, x):
    with torch.no_grad():
        return _outputs(module(torch.from_numpy(x)))


def _export(module, x, path, names):
    torch.onnx.export(
        module, (torch.from_numpy(x),), str(path), dynamo=False, opset_version=17,
        input_names=["input"], output_names=names,
    )
    return onnx.load(str(path))


def _ort(model_proto, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model_proto.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})


def _rel_max_abs(got, ref):
    """max |got - ref| / max |ref| (the spec's fp32_relative measure), worst over outputs."""
    return max(float(np.abs(g - r).max() / np.abs(r).max()) for g, r in zip(got, ref))


def _cos(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# --- spec and layout ------------------------------------------------------------------------
def test_spec_registered_with_requested_gates():
    spec = get_spec("pvt")
    assert spec is ADAPTER.spec
    tol = spec.tolerance
    assert (tol.fp32_max_abs, tol.fp32_relative, tol.fp16_min_psnr, tol.fp16_min_cosine) == (1e-4, True, None, 0.9999)
    assert (tol.int8_min_psnr, tol.int8_min_cosine) == (None, 0.99)
    assert spec.default_size == (224, 224) and spec.pad_multiple == 32 and not spec.supports_tlc
    assert spec.option_defaults() == {"head": "cls"}
    assert "32" in spec.summary
    assert [v.name for v in spec.variants if not v.tiny] == [
        "tiny", "small", "medium", "large", "v2-b0", "v2-b1", "v2-b2", "v2-b2-li", "v2-b3", "v2-b4", "v2-b5"
    ]
    assert ADAPTER.output_names(_req()) == ["logits"] and ADAPTER.output_kind(_req()) == "logits"
    feats = _req(head="features")
    assert ADAPTER.output_names(feats) == ["feat1", "feat2", "feat3", "feat4"]
    assert ADAPTER.output_kind(feats) == "features"


def _expected_layout(depths, dims=(64, 128, 320, 512), srs=(8, 4, 2, 1), ratios=(8, 8, 4, 4), classes=1000, grid=56):
    shapes = {}
    cin, patch = 3, 4
    for i in range(4):
        d, s = dims[i], i + 1
        shapes[f"patch_embed{s}.proj.weight"] = (d, cin, patch, patch)
        shapes[f"patch_embed{s}.proj.bias"] = (d,)
        shapes[f"patch_embed{s}.norm.weight"] = shapes[f"patch_embed{s}.norm.bias"] = (d,)
        g = grid // 2**i
        shapes[f"pos_embed{s}"] = (1, g * g + (1 if i == 3 else 0), d)
        for j in range(depths[i]):
            p = f"block{s}.{j}."
            for n in ("norm1", "norm2"):
                shapes[p + n + ".weight"] = shapes[p + n + ".bias"] = (d,)
            shapes[p + "attn.q.weight"], shapes[p + "attn.q.bias"] = (d, d), (d,)
            shapes[p + "attn.kv.weight"], shapes[p + "attn.kv.bias"] = (2 * d, d), (2 * d,)
            shapes[p + "attn.proj.weight"], shapes[p + "attn.proj.bias"] = (d, d), (d,)
            if srs[i] > 1:
                shapes[p + "attn.sr.weight"], shapes[p + "attn.sr.bias"] = (d, d, srs[i], srs[i]), (d,)
                shapes[p + "attn.norm.weight"] = shapes[p + "attn.norm.bias"] = (d,)
            shapes[p + "mlp.fc1.weight"], shapes[p + "mlp.fc1.bias"] = (d * ratios[i], d), (d * ratios[i],)
            shapes[p + "mlp.fc2.weight"], shapes[p + "mlp.fc2.bias"] = (d, d * ratios[i]), (d,)
        cin, patch = d, 2
    shapes["norm.weight"] = shapes["norm.bias"] = (dims[3],)
    shapes["cls_token"] = (1, 1, dims[3])
    shapes["head.weight"], shapes["head.bias"] = (classes, dims[3]), (classes,)
    return shapes


def test_small_state_dict_layout_matches_official():
    with torch.device("meta"):
        model = ADAPTER.build(ADAPTER.spec.variant("small"))
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == _expected_layout([3, 4, 6, 3])
    # the norms' eps: 1e-6 in blocks and the final norm, PyTorch's default 1e-5 in patch-embed/SR
    assert model.block1[0].norm1.eps == 1e-6 and model.norm.eps == 1e-6
    assert model.patch_embed1.norm.eps == 1e-5 and model.block1[0].attn.norm.eps == 1e-5
    assert model.block1[0].mlp.act.approximate == "none"  # exact (erf) GELU


@pytest.mark.parametrize(
    "name,millions", [("tiny", 13.23), ("small", 24.49), ("medium", 44.21), ("large", 61.37)]
)
def test_parameter_counts(name, millions):
    with torch.device("meta"):
        model = ADAPTER.build(ADAPTER.spec.variant(name))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 2) == millions


# --- random weights ---------------------------------------------------------------------------
def test_random_weights_give_meaningful_outputs():
    model = _random()
    xs = ADAPTER.sample_inputs(_req(), 3)
    logits = [_run(ADAPTER.wrap(model, _req(), static=False), x)[0] for x in xs]
    for y in logits:
        assert np.isfinite(y).all() and y.std() > 0.1  # spread, not all equal
    assert max(np.abs(a - b).max() for a, b in zip(logits, logits[1:])) > 1e-2  # input matters
    feats = _run(ADAPTER.wrap(model, _req(head="features"), static=False), xs[0])
    for i, f in enumerate(feats):
        assert f.shape == (1, (16, 32, 48, 64)[i], 16 >> i, 16 >> i)
        assert np.isfinite(f).all() and f.std() > 0.1
        assert f.std(axis=(2, 3)).mean() > 0.05  # varies over space, not one vector copied


# --- checkpoints ----------------------------------------------------------------------------
@pytest.mark.parametrize("wrapped", [True, False], ids=["model-dict", "bare-dict"])
def test_checkpoint_roundtrip_and_detection(tmp_path, wrapped):
    src = _random(seed=3)
    sd = src.state_dict()
    path = tmp_path / "pvt.pth"
    torch.save({"model": sd, "epoch": 3} if wrapped else sd, path)
    loaded = load_model(ADAPTER, None, str(path))
    assert loaded.variant.name == "test-tiny"
    for size in (64, 128):
        x = ADAPTER.sample_inputs(_req(h=size, w=size), 1)[0]
        for head in ("cls", "features"):
            req = _req(h=size, w=size, head=head)
            ref = _run(ADAPTER.wrap(src, req, static=False), x)
            got = _run(ADAPTER.wrap(loaded.model, req, static=False), x)
            assert all(np.array_equal(a, b) for a, b in zip(ref, got))


def test_official_tiny_checkpoint_at_224_and_512(tmp_path):
    src = _random("tiny", seed=1)
    path = tmp_path / "pvt_tiny.pth"
    torch.save({"model": src.state_dict()}, path)
    loaded = load_model(ADAPTER, None, str(path))
    assert loaded.variant.name == "tiny" and loaded.variant.kwargs()["num_heads"] == [1, 2, 5, 8]
    for size in (224, 512):
        req = _req("tiny", size, size)
        x = ADAPTER.sample_inputs(req, 1)[0]
        ref = _run(ADAPTER.wrap(src, req, static=True), x)[0]
        got = _run(ADAPTER.wrap(loaded.model, req, static=True), x)[0]
        assert ref.shape == (1, 1000) and np.array_equal(ref, got)


def test_detection_tells_variants_apart_and_reads_custom_shapes():
    other = ADAPTER.build(ADAPTER.spec.variant("test-tiny2")).state_dict()
    hp = ADAPTER.detect_hparams(other)
    assert hp == ADAPTER.spec.variant("test-tiny2").kwargs()  # heads taken from the registry row
    custom = ADAPTER.build(ADAPTER.spec.variant("test-tiny")).state_dict()
    custom = {k: v for k, v in custom.items() if not k.startswith("block3.0.")}  # a stage with no blocks
    with pytest.raises(CheckpointError, match="block3"):
        ADAPTER.detect_hparams(custom)
    kw = dict(ADAPTER.spec.variant("test-tiny").kwargs(), depths=[2, 1, 1, 1], num_classes=7, img_size=96)
    from deploy_kit.models.pvt import PyramidVisionTransformer

    hp = ADAPTER.detect_hparams(PyramidVisionTransformer(**kw).state_dict())
    assert hp["depths"] == [2, 1, 1, 1] and hp["num_classes"] == 7 and hp["img_size"] == 96
    assert hp["sr_ratios"] == [8, 4, 2, 1] and hp["mlp_ratios"] == [8, 8, 4, 4]
    assert hp["num_heads"] == [1, 1, 1, 1]  # no registry match: official head-dim-64 rule
    # such a checkpoint loads as variant "custom"; sample inputs must not need a registry row
    xs = ADAPTER.sample_inputs(_req("custom", 64, 96), 2)
    assert [x.shape for x in xs] == [(1, 3, 64, 96)] * 2 and 0 <= min(x.min() for x in xs) < max(x.max() for x in xs) <= 1


def test_foreign_checkpoints_are_rejected_naming_pvt(tmp_path):
    from deploy_kit.models.nafnet import ADAPTER as NAFNET

    naf = NAFNET.build(NAFNET.spec.variant("tiny")).state_dict()
    for i, sd in enumerate([{"params": naf}, {"weight": torch.zeros(3), "layer.bias": torch.zeros(2)}]):
        path = tmp_path / f"foreign{i}.pth"
        torch.save(sd, path)
        with pytest.raises(CheckpointError, match="PVT"):
            load_model(ADAPTER, None, str(path))


# --- positional embeddings --------------------------------------------------------------------
def _upstream_resize(pos, train, grid):
    """Upstream _get_pos_embed, written out independently: view as the training grid, bilinear."""
    c = pos.shape[-1]
    img = pos.reshape(1, train[0], train[1], c).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=grid, mode="bilinear", align_corners=False)
    return img.reshape(1, c, -1).permute(0, 2, 1)


@pytest.mark.parametrize("head", ["cls", "features"])
def test_static_pos_embeds_equal_upstream_resize(head):
    model = _random()
    h, w = 128, 96  # training grid is 64x64 -> every stage is resized, non-square
    static = ADAPTER.wrap(model, _req(h=h, w=w, head=head), static=True)
    for i in range(4):
        stride = 4 * 2**i
        train, grid = (64 // stride, 64 // stride), (h // stride, w // stride)
        pos = getattr(model, f"pos_embed{i + 1}").detach()
        if i == 3:
            want = _upstream_resize(pos[:, 1:], train, grid)
            if head == "cls":
                want = torch.cat([pos[:, :1], want], dim=1)
        else:
            want = _upstream_resize(pos, train, grid)
        got = getattr(static, f"pos{i + 1}")
        assert got.shape == want.shape and torch.equal(got, want)
    # at the training size nothing is resized: the constants are the parameters themselves
    same = ADAPTER.wrap(model, _req(head=head), static=True)
    assert torch.equal(same.pos1, model.pos_embed1) and torch.equal(same.pos3, model.pos_embed3)


@pytest.mark.parametrize("head", ["cls", "features"])
def test_static_form_equals_eager_form(head):
    model = _random(seed=5)
    req = _req(h=96, w=160, head=head)
    x = ADAPTER.sample_inputs(req, 1)[0]
    eager = _run(ADAPTER.wrap(model, req, static=False), x)
    static = _run(ADAPTER.wrap(model, req, static=True), x)
    assert _rel_max_abs(static, eager) <= 1e-6
    # and the resize matters: the embeddings of the training grid give other numbers
    with torch.no_grad():
        model.pos_embed1.mul_(0)
    changed = _run(ADAPTER.wrap(model, req, static=True), x)
    assert _rel_max_abs(changed, eager) > 1e-3


@pytest.mark.parametrize("size", [(200, 224), (224, 100), (16, 64)])
def test_sizes_not_divisible_by_32_are_a_usage_error(size):
    with pytest.raises(UsageError) as err:
        ADAPTER.wrap(_random(), _req(h=size[0], w=size[1]), static=True)
    msg = str(err.value)
    assert "divisible by 32" in msg and f"{size[0]}x{size[1]}" in msg and "\n" not in msg
    assert {(200, 224): "192 or 224", (224, 100): "96 or 128", (16, 64): "use 32"}[size] in msg


def test_unknown_head_is_a_usage_error():
    with pytest.raises(UsageError, match="head"):
        ADAPTER.wrap(_random(), _req(head="segmentation"), static=True)


# --- ONNX ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "head,h,w", [("cls", 64, 64), ("features", 64, 64), ("cls", 96, 128), ("features", 96, 128), ("cls", 512, 512), ("features", 224, 224)]
)
def test_onnx_export_matches_eager_and_has_no_resize(tmp_path, head, h, w):
    model = _random(seed=2)
    req = _req(h=h, w=w, head=head)
    x = ADAPTER.sample_inputs(req, 1)[0]
    proto = _export(ADAPTER.wrap(model, req, static=True), x, tmp_path / "pvt.onnx", ADAPTER.output_names(req))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"Resize", "Upsample", "Loop", "If", "Scan"}, ops
    assert "LayerNormalization" in ops  # opset 17 norms, found by the FP16 islands
    assert [o.name for o in proto.graph.output] == ADAPTER.output_names(req)
    got = _ort(proto, x)
    ref = _run(ADAPTER.wrap(model, req, static=False), x)
    assert [g.shape for g in got] == [r.shape for r in ref]
    # the spec's measure: max |ONNX - eager| relative to the output's max |value|
    assert _rel_max_abs(got, ref) <= ADAPTER.spec.tolerance.fp32_max_abs


@pytest.mark.parametrize("variant,head", [("test-tiny", "cls"), ("test-tiny", "features"), ("test-v2-li-tiny", "features")])
def test_fp16_end_to_end_meets_cosine_gate(tmp_path, variant, head):
    """No FP32 island: the LayerNorms are range-safe in the export form (scales from the FP32
    reference) and pass the cosine gate on ONNX Runtime and on the true-FP16 check."""
    from onnxconverter_common import float16

    from deploy_kit.models.rangesafe import apply_scales, record_ranges
    from deploy_kit.precision.truefp16 import true_fp16_outputs

    model = _random(variant, seed=4)
    req = _req(variant, h=96, w=96, head=head)
    xs = ADAPTER.sample_inputs(req, 2)
    assert ADAPTER.fp32_islands(req) == []
    eager = ADAPTER.wrap(model, req, static=False)
    with torch.no_grad(), record_ranges(eager) as ranges:
        for x in xs:
            eager(torch.from_numpy(x))
    static = ADAPTER.wrap(model, req, static=True)
    assert sum(apply_scales(static, ranges).values()) >= 8  # every LayerNorm is a range-safe site
    proto = _export(static, xs[0], tmp_path / "pvt.onnx", ADAPTER.output_names(req))
    assert any(n.op_type == "LayerNormalization" for n in proto.graph.node)
    half = float16.convert_float_to_float16(proto, keep_io_types=True)
    onnx.checker.check_model(half)
    onnx.save(half, str(tmp_path / "pvt16.onnx"))
    true16 = true_fp16_outputs(str(tmp_path / "pvt16.onnx"), xs, fp16_path=str(tmp_path / "pvt16.onnx"))
    for x, t in zip(xs, true16):
        ref, got = _ort(proto, x), _ort(half, x)
        for r, g, tt in zip(ref, got, t):
            assert _cos(g, r) >= ADAPTER.spec.tolerance.fp16_min_cosine
            assert _cos(tt, r) >= ADAPTER.spec.tolerance.fp16_min_cosine
        if head == "cls":
            assert int(ref[0].argmax()) == int(got[0].argmax()) == int(t[0].argmax())


# --- PVT v2 (stretch) -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name,millions",
    [("v2-b0", 3.7), ("v2-b1", 14.0), ("v2-b2", 25.4), ("v2-b2-li", 22.6), ("v2-b3", 45.2), ("v2-b4", 62.6), ("v2-b5", 82.0)],
)
def test_v2_parameter_counts_match_readme(name, millions):
    with torch.device("meta"):
        model = ADAPTER.build(ADAPTER.spec.variant(name))
    assert abs(sum(p.numel() for p in model.parameters()) / 1e6 - millions) < 0.05


def test_v2_layout_and_detection_of_official_variants():
    sds = {}
    with torch.device("meta"):
        for name in ("v2-b0", "v2-b2", "v2-b2-li", "v2-b5"):
            sds[name] = {k: v for k, v in ADAPTER.build(ADAPTER.spec.variant(name)).state_dict().items()}
    li, b2 = sds["v2-b2-li"], sds["v2-b2"]
    assert not any(k.startswith(("pos_embed", "cls_token")) for k in b2)
    assert tuple(b2["patch_embed1.proj.weight"].shape) == (64, 3, 7, 7)
    assert tuple(b2["patch_embed2.proj.weight"].shape) == (128, 64, 3, 3)
    assert tuple(b2["block1.0.mlp.dwconv.dwconv.weight"].shape) == (512, 1, 3, 3)
    assert tuple(b2["block1.0.attn.sr.weight"].shape) == (64, 64, 8, 8) and "block4.0.attn.sr.weight" not in b2
    assert all(f"norm{i}.weight" in b2 for i in range(1, 5)) and "norm.weight" not in b2
    assert tuple(li["block4.0.attn.sr.weight"].shape) == (512, 512, 1, 1) and "block4.0.attn.norm.weight" in li
    for name, sd in sds.items():
        assert ADAPTER.detect_hparams(sd) == ADAPTER.spec.variant(name).kwargs(), name


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 10, 13, 16, 64])
def test_static_adaptive_pool_equals_pytorch(n):
    from deploy_kit.models.pvt import StaticAdaptiveAvgPool

    x = torch.randn(1, 4, n, n + 3)  # non-square, sizes not divisible by 7
    got = StaticAdaptiveAvgPool(7, (n, n + 3))(x)
    assert torch.allclose(got, F.adaptive_avg_pool2d(x, 7), rtol=0, atol=1e-6)


def test_v2_checkpoint_roundtrip(tmp_path):
    for name in ("test-v2-tiny", "test-v2-li-tiny"):
        src = _random(name, seed=6)
        path = tmp_path / f"{name}.pth"
        torch.save({"model": src.state_dict()}, path)
        loaded = load_model(ADAPTER, None, str(path))
        assert loaded.variant.name == name
        req = _req(name, 96, 96)
        x = ADAPTER.sample_inputs(req, 1)[0]
        assert np.array_equal(_run(ADAPTER.wrap(src, req, static=True), x)[0], _run(ADAPTER.wrap(loaded.model, req, static=True), x)[0])


@pytest.mark.parametrize("variant,head,size", [("test-v2-li-tiny", "cls", 96), ("test-v2-li-tiny", "features", 256), ("test-v2-tiny", "cls", 64)])
def test_v2_onnx_export_static_pools(tmp_path, variant, head, size):
    model = _random(variant, seed=7)
    req = _req(variant, size, size, head)
    x = ADAPTER.sample_inputs(req, 1)[0]
    ref = _run(ADAPTER.wrap(model, req, static=False), x)  # upstream AdaptiveAvgPool2d(7)
    static = ADAPTER.wrap(model, req, static=True)
    assert _rel_max_abs(_run(static, x), ref) <= 1e-6
    proto = _export(static, x, tmp_path / "v2.onnx", ADAPTER.output_names(req))
    ops = {n.op_type for n in proto.graph.node}
    assert not ops & {"Resize", "Loop", "If", "AveragePool", "GlobalAveragePool"}, ops
    got = _ort(proto, x)
    assert [g.shape for g in got] == [r.shape for r in ref]
    assert _rel_max_abs(got, ref) <= ADAPTER.spec.tolerance.fp32_max_abs
    for r in ref:
        assert np.isfinite(r).all() and r.std() > 0.1
