"""Restormer / Restormer-Local: layout, detection, padding, TLC forms, ONNX parity, FP16 islands.

Tiny variants only (dim 8, one block per level, 32-80 px); the whole file runs in seconds on
2 CPU cores. The 26 M-parameter official model is built once (no forward) for its layout.
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from deploy_kit.errors import CheckpointError, UsageError  # noqa: E402
from deploy_kit.models import get_adapter, get_spec  # noqa: E402
from deploy_kit.models.checkpoint import load_model, match_variant  # noqa: E402
from deploy_kit.models.restormer import (  # noqa: E402
    BiasFreeLayerNorm,
    Downsample,
    StaticWindows,
    WithBiasLayerNorm,
    _ffn_factor,
    window_plan,
)
from deploy_kit.specs import ExportRequest, TLCConfig  # noqa: E402
from deploy_kit.tlc import window_starts  # noqa: E402

A = get_adapter("restormer")
SMALL_TLC = TLCConfig((32, 32), (48, 48))  # kernels 48/24/12/6: several windows at 60x76
H, W = 60, 76  # not multiples of 8: exercises the reflect pad (-> 64x80) and the crop
TINY = ("tiny", "tiny-biasfree", "tiny-gray", "tiny-dual")
FORBIDDEN = {"ScatterND", "ScatterElements", "CumSum", "Loop", "If"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def tiny_model(name: str = "tiny", seed: int = 0):
    m = A.build(A.spec.variant(name))
    A.randomize_(m, seed)
    return m


def req(h: int = H, w: int = W, tlc: TLCConfig | None = SMALL_TLC, variant: str = "tiny") -> ExportRequest:
    return ExportRequest("restormer", variant, h, w, tlc=tlc)


def image(ch: int = 3, h: int = H, w: int = W, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, ch, h, w, generator=torch.Generator().manual_seed(seed))


def run(net, x):
    with torch.no_grad():
        return net(x)


# --- spec ------------------------------------------------------------------------------------
def test_spec_fields_and_torch_free_import():
    spec = get_spec("restormer")
    assert spec.pad_multiple == 8 and spec.supports_tlc and spec.default_size == (256, 256)
    assert spec.default_variant == "motion-deblurring" and spec.variant("motion-deblurring").tlc_default
    assert spec.tolerance.fp32_max_abs == 1e-4 and spec.tolerance.fp16_min_psnr == 50
    assert "non-commercial" in spec.licence
    assert {v.name for v in spec.variants if v.tiny} == set(TINY)
    assert spec.variant("gaussian-gray-denoising").kwargs()["inp_channels"] == 1
    assert spec.variant("dual-pixel-defocus").kwargs()["dual_pixel_task"] is True
    assert spec.variant("real-denoising").kwargs()["LayerNorm_type"] == "BiasFree"
    from deploy_kit.precision.calibration import parse_degradation

    for v in spec.variants:  # calibration degradations must parse (INT8 uses them)
        parse_degradation(v.get_extra("degradation"))
    assert spec.variant("gaussian-color-denoising").get_extra("noise_sigma") == 25
    code = (
        "import sys; from deploy_kit.models.registry import get_spec; get_spec('restormer');"
        "assert 'torch' not in sys.modules, 'restormer spec imported torch'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- layout ----------------------------------------------------------------------------------
def test_official_state_dict_layout_and_param_count():
    m = A.build(A.spec.variant("motion-deblurring"))
    sd = m.state_dict()
    keys = list(sd)
    assert keys[0] == "patch_embed.proj.weight" and keys[-1] == "output.weight"
    tops = []
    for k in keys:
        t = k.split(".")[0]
        if t not in tops:
            tops.append(t)
    assert tops == [
        "patch_embed", "encoder_level1", "down1_2", "encoder_level2", "down2_3", "encoder_level3",
        "down3_4", "latent", "up4_3", "reduce_chan_level3", "decoder_level3", "up3_2",
        "reduce_chan_level2", "decoder_level2", "up2_1", "decoder_level1", "refinement", "output",
    ]
    block = [k[len("encoder_level1.0."):] for k in keys if k.startswith("encoder_level1.0.")]
    assert block == [
        "norm1.body.weight", "norm1.body.bias", "attn.temperature", "attn.qkv.weight",
        "attn.qkv_dwconv.weight", "attn.project_out.weight", "norm2.body.weight", "norm2.body.bias",
        "ffn.project_in.weight", "ffn.dwconv.weight", "ffn.project_out.weight",
    ]
    counts = {lv: len({k.split(".")[1] for k in keys if k.startswith(lv + ".")}) for lv in
              ("encoder_level1", "encoder_level2", "encoder_level3", "latent", "decoder_level3",
               "decoder_level2", "decoder_level1", "refinement")}
    assert list(counts.values()) == [4, 6, 6, 8, 6, 6, 4, 4]
    shapes = {
        "patch_embed.proj.weight": (48, 3, 3, 3),
        "encoder_level1.0.attn.temperature": (1, 1, 1),
        "latent.0.attn.temperature": (8, 1, 1),
        "encoder_level1.0.ffn.project_out.weight": (48, 127, 1, 1),
        "latent.0.ffn.project_in.weight": (2042, 384, 1, 1),
        "down1_2.body.0.weight": (24, 48, 3, 3),
        "up4_3.body.0.weight": (768, 384, 3, 3),
        "reduce_chan_level3.weight": (192, 384, 1, 1),
        "decoder_level1.0.attn.qkv.weight": (288, 96, 1, 1),
        "refinement.3.ffn.dwconv.weight": (510, 1, 3, 3),
        "output.weight": (3, 96, 3, 3),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert not any(k.endswith(".bias") and "norm" not in k for k in keys)  # bias=False convs
    assert sum(p.numel() for p in m.parameters()) == pytest.approx(26.13e6, abs=0.01e6)  # 26 126 644


def test_other_official_layouts():
    with torch.device("meta"):
        bf = A.build(A.spec.variant("real-denoising"))
        dual = A.build(A.spec.variant("dual-pixel-defocus"))
        gray = A.build(A.spec.variant("gaussian-gray-denoising"))
    assert not any(k.endswith("norm1.body.bias") for k in bf.state_dict())
    assert tuple(dual.state_dict()["skip_conv.weight"].shape) == (96, 48, 1, 1)
    assert tuple(dual.state_dict()["patch_embed.proj.weight"].shape) == (48, 6, 3, 3)
    assert tuple(gray.state_dict()["output.weight"].shape) == (1, 96, 3, 3)
    assert sum(p.numel() for p in bf.parameters()) == pytest.approx(26.11e6, abs=0.01e6)
    assert sum(p.numel() for p in dual.parameters()) == pytest.approx(26.13e6, abs=0.01e6)


# --- detection and loading -------------------------------------------------------------------
@pytest.mark.parametrize("name", [v.name for v in get_spec("restormer").variants])
def test_detect_hparams_round_trip(name):
    variant = A.spec.variant(name)
    with torch.device("meta"):
        sd = A.build(variant).state_dict()
    hp = A.detect_hparams(sd)
    assert hp == variant.kwargs()
    if variant.tiny:  # tiny rows are unique; official tasks share hyper-parameters by design
        assert match_variant(A.spec, hp).name == name


def test_ffn_factor_recovery():
    assert _ffn_factor([(48, 127), (96, 255), (192, 510), (384, 1021)]) == 2.66  # not 2.65
    assert _ffn_factor([(8, 16), (16, 32)]) == 2.0
    assert _ffn_factor([(8, 12), (16, 24), (32, 48)]) == 1.5
    with pytest.raises(CheckpointError):
        _ffn_factor([(8, 16), (16, 40)])


@pytest.mark.parametrize("name", TINY)
def test_load_params_checkpoint_gives_identical_outputs(tmp_path, name):
    m = tiny_model(name, seed=3)
    path = tmp_path / f"{name}.pth"
    torch.save({"params": m.state_dict()}, path)
    loaded = load_model(A, None, str(path))
    assert loaded.variant.name == name
    x = image(A.in_channels(A.spec.variant(name)), 32, 40)
    assert torch.equal(run(m, x), run(loaded.model, x))


def test_nafnet_checkpoint_rejected(tmp_path):
    naf = get_adapter("nafnet")
    m = naf.build(naf.spec.variant("tiny"))
    path = tmp_path / "nafnet.pth"
    torch.save({"params": m.state_dict()}, path)
    with pytest.raises(CheckpointError, match="not a Restormer checkpoint: missing patch_embed.proj.weight") as ei:
        load_model(A, None, str(path))
    assert "\n" not in str(ei.value)


# --- random weights --------------------------------------------------------------------------
def test_randomize_exercises_every_branch():
    m = tiny_model("tiny")
    temps = torch.cat([p.flatten() for n, p in m.named_parameters() if n.endswith("temperature")])
    assert temps.min() >= 0.5 and temps.max() <= 2.0 and temps.std() > 0.1
    nb = torch.cat([p.flatten() for n, p in m.named_parameters() if n.endswith("body.bias")])
    nw = torch.cat([p.flatten() for n, p in m.named_parameters() if n.endswith("body.weight")])
    assert (nb != 0).all() and (nw - 1).abs().max() < 0.6 and (nw != 1).all()
    x = image(3, 32, 32)
    y = run(m, x)
    resid = (y - x).abs().mean().item()
    assert 0.005 < resid < 0.5  # image-like: input + a modest, non-zero correction


# --- layer numerics --------------------------------------------------------------------------
def test_layernorm_hand_check():
    x = torch.tensor([1.0, 3.0]).view(1, 2, 1, 1)  # mean 2, biased var 1
    s = np.sqrt(1.0 + 1e-5)
    wb = WithBiasLayerNorm(2)
    bf = BiasFreeLayerNorm(2)
    with torch.no_grad():
        wb.weight.copy_(torch.tensor([2.0, 0.5]))
        wb.bias.copy_(torch.tensor([0.1, -0.1]))
        bf.weight.copy_(torch.tensor([2.0, 0.5]))
    np.testing.assert_allclose(run(wb, x).flatten().numpy(), [-2 / s + 0.1, 0.5 / s - 0.1], rtol=1e-6)
    # BiasFree divides the UNcentred x by the (centred) std
    np.testing.assert_allclose(run(bf, x).flatten().numpy(), [2 / s, 1.5 / s], rtol=1e-6)
    # WithBias equals a channel-last standard LayerNorm (eps 1e-5) on a random map
    z = torch.randn(2, 5, 3, 4)
    wb_w, wb_b = torch.rand(5), torch.rand(5)
    ref = torch.nn.functional.layer_norm(z.permute(0, 2, 3, 1), (5,), wb_w, wb_b, 1e-5)
    wb5 = WithBiasLayerNorm(5)
    with torch.no_grad():
        wb5.weight.copy_(wb_w)
        wb5.bias.copy_(wb_b)
    torch.testing.assert_close(run(wb5, z), ref.permute(0, 3, 1, 2), atol=1e-5, rtol=1e-5)


def test_pixel_unshuffle_and_shuffle_onnx(tmp_path):
    down = Downsample(8).eval()
    x = torch.randn(1, 8, 6, 10)
    with torch.no_grad():
        c = down.body[0](x)
        y = down(x)
    # PyTorch's channel order: out[ch*4 + i*2 + j, h, w] = in[ch, 2h+i, 2w+j]
    hand = torch.stack([c[:, :, i::2, j::2] for i in range(2) for j in range(2)], 2).reshape(1, 16, 3, 5)
    assert torch.equal(y, hand)
    for name, mod, inp in (
        ("down", down, x),
        ("up", torch.nn.PixelShuffle(2), torch.randn(1, 16, 3, 5)),
    ):
        path = str(tmp_path / f"{name}.onnx")
        torch.onnx.export(mod, inp, path, dynamo=False, opset_version=17, input_names=["x"])
        ops = {n.op_type for n in onnx.load(path).graph.node}
        assert "SpaceToDepth" not in ops  # DCR channel order would be silently wrong
        out = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": inp.numpy()})[0]
        np.testing.assert_allclose(out, run(mod, inp).numpy(), atol=1e-6)


# --- padding ---------------------------------------------------------------------------------
def test_reflect_pad_matches_official_script_and_crops():
    m = tiny_model("tiny")
    x = image(3, 13, 21)
    official = run(m, torch.nn.functional.pad(x, (0, 3, 0, 3), mode="reflect"))[..., :13, :21]
    for static in (False, True):
        y = run(A.wrap(m, req(13, 21, tlc=None), static=static), x)
        assert y.shape == x.shape
        torch.testing.assert_close(y, official, atol=1e-6, rtol=0)
    zero_pad = run(m, torch.nn.functional.pad(x, (0, 3, 0, 3)))[..., :13, :21]
    assert (zero_pad - official).abs().max() > 1e-4  # the test can tell reflect from zero padding


@pytest.mark.parametrize("h,w", [(4, 64), (64, 1), (3, 3)])
def test_too_small_for_reflect_pad(h, w):
    m = tiny_model("tiny")
    with pytest.raises(UsageError, match="reflect") as ei:
        A.wrap(m, req(h, w, tlc=None), static=True)
    assert "\n" not in str(ei.value)
    eager = A.wrap(m, req(16, 16, tlc=None), static=False)  # shape-generic: checks at run time
    with pytest.raises(UsageError, match="reflect"):
        run(eager, image(3, h, w))


# --- TLC -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "n,kernel,k,starts",
    [
        (720, 384, 384, [0, 336]),
        (1280, 384, 384, [0, 299, 598, 896]),
        (90, 48, 48, [0, 42]),
        (160, 48, 48, [0, 38, 76, 112]),
        (1080, 384, 384, [0, 348, 696]),
        (1920, 384, 384, [0, 384, 768, 1152, 1536]),
        (512, 384, 384, [0, 128]),
        (256, 384, 256, [0]),
        (384, 384, 384, [0]),
    ],
)
def test_window_starts_table(n, kernel, k, starts):
    assert window_starts(n, kernel) == (k, starts)


def test_static_window_plan_per_level_at_720p():
    net = A.wrap(tiny_model("tiny"), req(720, 1280, tlc=TLCConfig()), static=True)  # no forward
    plan = {name.split(".attn")[0]: (k, rows, cols) for name, k, rows, cols in window_plan(net)}
    assert plan["encoder_level1.0"] == ((384, 384), [0, 336], [0, 299, 598, 896])
    assert plan["latent.0"] == ((48, 48), [0, 42], [0, 38, 76, 112])
    # decoder level 1 and refinement run at full resolution (96 ch): kernel 384 as level 1
    assert plan["decoder_level1.0"] == plan["refinement.0"] == plan["encoder_level1.0"]
    assert plan["decoder_level3.0"][0] == plan["encoder_level3.0"][0] == (96, 96)
    assert all(len(r) * len(c) == 8 for _, r, c in plan.values())


@pytest.mark.parametrize("name", ["tiny", "tiny-biasfree"])
def test_tlc_static_equals_eager_and_differs_from_global(name):
    m = tiny_model(name)
    x = image()
    r = req(variant=name)
    eager = run(A.wrap(m, r, static=False), x)
    static_net = A.wrap(m, r, static=True)
    assert all(not s.is_global for s in static_net.modules() if isinstance(s, StaticWindows))
    static = run(static_net, x)
    plain = run(A.wrap(m, req(tlc=None, variant=name), static=False), x)
    assert (static - eager).abs().max().item() <= 1e-5
    assert (eager - plain).abs().max().item() > 1e-3  # TLC really engaged


def test_tlc_single_window_is_global_attention():
    m = tiny_model("tiny")
    x = image(3, 64, 64)
    r = req(64, 64, tlc=TLCConfig())  # kernels 384..48 cover every level of a 64x64 input
    static_net = A.wrap(m, r, static=True)
    assert all(s.is_global for s in static_net.modules() if isinstance(s, StaticWindows))
    plain = run(A.wrap(m, req(64, 64, tlc=None), static=True), x)
    assert torch.equal(run(static_net, x), plain)
    plain_eager = run(A.wrap(m, req(64, 64, tlc=None), static=False), x)
    assert torch.equal(run(A.wrap(m, r, static=False), x), plain_eager)
    # the export form folds LayerNorm affines into the next conv (models/fastpath.py): same
    # function, other FP32 rounding
    torch.testing.assert_close(plain, plain_eager, atol=1e-5, rtol=0)


def test_eager_tlc_is_shape_generic():
    m = tiny_model("tiny")
    eager = A.wrap(m, req(), static=False)
    for h, w in ((48, 56), (72, 40)):
        x = image(3, h, w)
        static = run(A.wrap(m, req(h, w), static=True), x)
        torch.testing.assert_close(run(eager, x), static, atol=1e-5, rtol=0)


# --- ONNX ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tlc_onnx(tmp_path_factory):
    m = tiny_model("tiny")
    r = req()
    path = str(tmp_path_factory.mktemp("rst") / "tiny-tlc.onnx")
    torch.onnx.export(A.wrap(m, r, static=True), image(), path, dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["output"])
    ref = run(A.wrap(m, r, static=False), image()).numpy()
    return path, ref, r


def test_onnx_tlc_matches_eager_reference(tlc_onnx):
    path, ref, _ = tlc_onnx
    model = onnx.load(path)
    onnx.checker.check_model(model)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & FORBIDDEN
    assert tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim) == (1, 3, H, W)
    out = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": image().numpy()})[0]
    assert out.shape == (1, 3, H, W)
    assert np.abs(out - ref).max() <= 1e-4


@pytest.mark.parametrize("name", ["tiny-gray", "tiny-dual"])
def test_onnx_global_gray_and_dual(tmp_path, name):
    m = tiny_model(name)
    ch = A.in_channels(A.spec.variant(name))
    r = req(32, 40, tlc=None, variant=name)
    x = image(ch, 32, 40)
    ref = run(A.wrap(m, r, static=False), x)
    assert ref.shape == (1, 1 if name == "tiny-gray" else 3, 32, 40) and torch.isfinite(ref).all()
    path = str(tmp_path / f"{name}.onnx")
    torch.onnx.export(A.wrap(m, r, static=True), x, path, dynamo=False, opset_version=17, input_names=["input"])
    out = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    assert np.abs(out - ref.numpy()).max() <= 1e-4


def test_fp16_without_islands_and_int8_exclusions_cover_the_norm_means(tlc_onnx, tmp_path):
    """The range-safe rewrites leave no FP32 island (softmax subtracts its max); the q/k norms'
    means are MatMuls with constant 1/w vectors, which INT8 must not take for weighted layers."""
    from deploy_kit.precision.fp16 import convert_fp16
    from deploy_kit.precision.truefp16 import true_fp16_outputs

    path, ref, r = tlc_onnx
    assert A.fp32_islands(r) == []
    model = onnx.load(path)
    names = [n.name for n in model.graph.node]
    by_op = {n.name: n.op_type for n in model.graph.node}
    excluded = [n for n in names if any(re.search(p, n) for p in A.int8_excluded(r))]
    assert excluded and {by_op[n] for n in excluded} >= {"MatMul"}
    assert not any(by_op[n] == "Conv" for n in excluded)
    dst = str(tmp_path / "m16.onnx")
    convert_fp16(path, dst, [])
    out = ort.InferenceSession(dst, providers=["CPUExecutionProvider"]).run(None, {"input": image().numpy()})[0]
    true16 = true_fp16_outputs(dst, [image().numpy()], fp16_path=dst)[0][0]
    for o in (out, true16):
        assert np.isfinite(o).all()
        assert 10 * np.log10(1.0 / np.mean((o - ref) ** 2)) >= A.spec.tolerance.fp16_min_psnr


def test_parity_inputs_are_degraded_as_the_task_sees_them():
    """Denoisers get noisy photos (reproducible per seed); 'none' gives the clean photos."""
    req = ExportRequest("restormer", "tiny-biasfree", 40, 48)
    noisy, again = A.sample_inputs(req, 2), A.sample_inputs(req, 2)
    clean = A.sample_inputs(ExportRequest("restormer", "tiny-biasfree", 40, 48, degradation="none"), 2)
    other_seed = A.sample_inputs(ExportRequest("restormer", "tiny-biasfree", 40, 48, seed=3), 2)
    assert A.input_degradation(req) == "noise:25"
    for n, a, c, o in zip(noisy, again, clean, other_seed):
        assert n.shape == c.shape == (1, 3, 40, 48) and n.dtype == np.float32
        np.testing.assert_array_equal(n, a)
        assert 0.0 <= n.min() and n.max() <= 1.0
        resid = (n - c)[(c > 0.1) & (c < 0.9)]  # unclipped pixels: Gaussian noise of std 25/255
        assert abs(resid.std() - 25 / 255) < 0.01
        assert not np.array_equal(n, o) and not np.array_equal(n, c)
    assert A.input_degradation(ExportRequest("restormer", "tiny-dual", 40, 48)) is None  # no synthetic stand-in


def test_fp32_failure_diagnosis_tells_export_errors_from_the_input():
    """A real export difference is blamed on the export: the float64 re-run agrees with FP32."""
    from deploy_kit.pipeline.graph import _fp32_failure_diagnosis
    from deploy_kit.reference import reference_outputs

    req = ExportRequest("restormer", "tiny", H, W, tlc=SMALL_TLC)
    inputs = A.sample_inputs(req, 2)
    refs = reference_outputs(A, load_model(A, "tiny", None).model, req, inputs)
    outs = [[r + np.float32(1e-3) * (k == 1) for r in ref] for k, ref in enumerate(refs)]  # sample 1 is "wrong"
    note = _fp32_failure_diagnosis(A, req, inputs, refs, outs)
    assert note.startswith("fp32 diagnosis, sample 1:") and "the reference is stable" in note
    ref_err = float(re.search(r"PyTorch FP32 is ([0-9.e+-]+)", note).group(1))
    assert ref_err < 1e-5
