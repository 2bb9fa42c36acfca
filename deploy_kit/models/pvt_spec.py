"""PVT v1 and v2 (whai362/PVT, Apache-2.0): variants and tolerances, importable without torch.

Hyper-parameters follow the official configs (https://github.com/whai362/PVT): the four sizes share the
per-stage settings (dims 64/128/320/512, heads 1/2/5/8, SR 8/4/2/1, MLP ratios 8/8/4/4,
patch 4 then 2) and differ only in depth. ``img_size`` is the *training* resolution, which fixes
the positional-embedding grids (224 -> 56/28/14/7); it is a hyper-parameter so the test
variants can keep a 64-pixel grid. The export size is free (any multiple of 32): the
embeddings are resized to it once, at wrap time (pytorch/pytorch#124884).

PVT v2 variants (``v2-*``, hyper-parameter ``version=2``) follow https://arxiv.org/abs/2106.13797; they have no positional
embeddings, and b2-li's ``AdaptiveAvgPool2d(7)`` is frozen to constant pooling matrices at export.
Height and width must be multiples of 32 (the total stride) for every variant.
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


# PVT v2 (https://arxiv.org/abs/2106.13797): no positional embeddings, so no training size. name -> (dims,
# depths, mlp ratios, linear SRA, README params, top-1)
_V2 = {
    "v2-b0": ([32, 64, 160, 256], [2, 2, 2, 2], [8, 8, 4, 4], False, "3.7 M", 70.5),
    "v2-b1": ([64, 128, 320, 512], [2, 2, 2, 2], [8, 8, 4, 4], False, "14.0 M", 78.7),
    "v2-b2": ([64, 128, 320, 512], [3, 4, 6, 3], [8, 8, 4, 4], False, "25.4 M", 82.0),
    "v2-b2-li": ([64, 128, 320, 512], [3, 4, 6, 3], [8, 8, 4, 4], True, "22.6 M", 82.1),
    "v2-b3": ([64, 128, 320, 512], [3, 4, 18, 3], [8, 8, 4, 4], False, "45.2 M", 83.1),
    "v2-b4": ([64, 128, 320, 512], [3, 8, 27, 3], [8, 8, 4, 4], False, "62.6 M", 83.6),
    "v2-b5": ([64, 128, 320, 512], [3, 6, 40, 3], [4, 4, 4, 4], False, "82.0 M", 83.8),
}


def _v2(name: str, dims, depths, ratios, linear: bool, **kw) -> Variant:
    hp = dict(
        version=2,
        in_chans=3,
        num_classes=kw.pop("num_classes", 1000),
        embed_dims=dims,
        num_heads=kw.pop("heads", [1, 2, 5, 8]),
        mlp_ratios=ratios,
        qkv_bias=True,
        depths=depths,
        sr_ratios=[8, 4, 2, 1],
        linear=linear,
    )
    return Variant.make(name, hp, **kw)


def _v2_official(name: str) -> Variant:
    dims, depths, ratios, linear, params, top1 = _V2[name]
    file = name.replace("v2-", "pvt_v2_").replace("-", "_")
    return _v2(name, dims, depths, ratios, linear, summary=f"PVT v2-{name[3:]} ImageNet-1k, {params} params, top-1 {top1} ({file}.pth)")


PVT = ModelSpec(
    name="pvt",
    module="deploy_kit.models.pvt",
    summary=(
        "PVT v1 (ICCV 2021) and v2 (v2-b0..b5, b2-li) classifier/backbone; input [0,1] RGB (ImageNet "
        "normalisation inside), height and width multiples of 32; --head cls (logits) or features (4 NCHW maps)"
    ),
    variants=(
        _official("tiny"),
        _official("small"),
        _official("medium"),
        _official("large"),
        _test("test-tiny", [16, 32, 48, 64], [1, 1, 2, 2], [1, 1, 1, 1], "test variant: dims 16-64, one block per stage, 64 px grid"),
        _test("test-tiny2", [16, 32, 48, 64], [1, 2, 2, 4], [2, 1, 2, 1], "test variant: dims 16-64, uneven depths, 64 px grid"),
        *(_v2_official(n) for n in _V2),
        _v2("test-v2-tiny", [16, 32, 48, 64], [1, 1, 1, 1], [8, 8, 4, 4], False, heads=[1, 1, 2, 2], num_classes=10,
            tiny=True, summary="test variant: PVT v2, dims 16-64, one block per stage"),
        _v2("test-v2-li-tiny", [16, 32, 48, 64], [1, 1, 1, 1], [8, 8, 4, 4], True, heads=[1, 1, 2, 2], num_classes=10,
            tiny=True, summary="test variant: PVT v2 linear SRA (b2-li form), dims 16-64"),
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
    image_outputs=False,  # class logits or the four stage feature maps, whichever --head
)

register(PVT)
