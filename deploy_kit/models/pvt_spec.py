"""PVT v1 (whai362/PVT, Apache-2.0): variants and tolerances, importable without torch.

Hyper-parameters follow ../shared/reference/models.md §4.1: the four official sizes share the
per-stage settings (dims 64/128/320/512, heads 1/2/5/8, SR 8/4/2/1, MLP ratios 8/8/4/4,
patch 4 then 2) and differ only in depth. ``img_size`` is the *training* resolution, which fixes
the positional-embedding grids (224 -> 56/28/14/7); it is a hyper-parameter so the test
variants can keep a 64-pixel grid. The export size is free (any multiple of 32): the
embeddings are resized to it once, at wrap time (§5.12).
"""

from __future__ import annotations

from ..specs import ModelSpec, Tolerance, Variant
from .registry import register

_OFFICIAL = dict(
    img_size=224,
    patch_size=4,
    in_chans=3,
    num_classes=1000,
    embed_dims=[64, 128, 320, 512],
    num_heads=[1, 2, 5, 8],
    mlp_ratios=[8, 8, 4, 4],
    qkv_bias=True,
    sr_ratios=[8, 4, 2, 1],
)

# name -> (depths, README params, ImageNet-1k top-1)
_SIZES = {
    "tiny": ([2, 2, 2, 2], "13.2 M", 75.1),
    "small": ([3, 4, 6, 3], "24.5 M", 79.8),
    "medium": ([3, 4, 18, 3], "44.2 M", 81.2),
    "large": ([3, 8, 27, 3], "61.4 M", 81.7),
}


def _official(name: str) -> Variant:
    depths, params, top1 = _SIZES[name]
    return Variant.make(
        name,
        dict(_OFFICIAL, depths=depths),
        summary=f"PVT-{name.capitalize()} ImageNet-1k, {params} params, top-1 {top1} (pvt_{name}.pth)",
    )


def _test(name: str, dims, heads, depths, summary: str) -> Variant:
    return Variant.make(
        name,
        dict(
            _OFFICIAL,
            img_size=64,
            num_classes=10,
            embed_dims=dims,
            num_heads=heads,
            depths=depths,
        ),
        tiny=True,
        summary=summary,
    )


PVT = ModelSpec(
    name="pvt",
    module="deploy_kit.models.pvt",
    summary=(
        "PVT v1 (ICCV 2021) classifier/backbone; input [0,1] RGB (ImageNet normalisation inside), "
        "height and width multiples of 32; --head cls (logits) or features (4 NCHW maps)"
    ),
    variants=(
        _official("tiny"),
        _official("small"),
        _official("medium"),
        _official("large"),
        _test("test-tiny", [16, 32, 48, 64], [1, 1, 2, 2], [1, 1, 1, 1], "test variant: dims 16-64, one block per stage, 64 px grid"),
        _test("test-tiny2", [16, 32, 48, 64], [1, 2, 2, 4], [2, 1, 2, 1], "test variant: dims 16-64, uneven depths, 64 px grid"),
    ),
    default_variant="small",
    default_size=(224, 224),
    pad_multiple=32,
    supports_tlc=False,
    tolerance=Tolerance(
        fp32_max_abs=1e-4,
        fp32_relative=True,
        fp16_min_psnr=None,
        fp16_min_cosine=0.9999,
        int8_min_psnr=None,
        int8_min_cosine=0.99,
    ),
    licence="Apache-2.0 (whai362/PVT)",
    options=(("head", ("cls", "features")),),
)

register(PVT)
