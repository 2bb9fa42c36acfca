"""Model registry: names, variants and tolerances, importable without torch.

Hyper-parameter tables follow the official option files (NAFNet: https://github.com/megvii-research/NAFNet;
Restormer and PVT: see restormer_spec.py, pvt_spec.py).
Tiny variants (``tiny=True``) exist so tests and CI stay in minutes on 2 CPU cores.
"""

from __future__ import annotations

import importlib
from dataclasses import replace
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..specs import USER_KINDS, ExportRequest, ModelSpec, Tolerance, Variant

if TYPE_CHECKING:  # pragma: no cover
    from .base import ModelAdapter

V = Variant.make


def _nafnet(name: str, width: int, enc, mid: int, dec, tlc: bool, summary: str, tiny=False, ch=3, degradation=None):
    return V(
        name,
        dict(img_channel=ch, width=width, middle_blk_num=mid, enc_blk_nums=enc, dec_blk_nums=dec),
        tlc_default=tlc,
        tiny=tiny,
        summary=summary,
        extra={"degradation": degradation} if degradation else {},
    )


NAFNET = ModelSpec(
    name="nafnet",
    module="deploy_kit.models.nafnet",
    summary="NAFNet (ECCV 2022) deblurring/denoising; GoPro/REDS use TLC (NAFNetLocal) by default",
    variants=(
        _nafnet("gopro-w32", 32, [1, 1, 1, 28], 1, [1, 1, 1, 1], True, "GoPro motion deblur, width 32 (NAFNet-GoPro-width32.pth)", degradation="blur:9"),
        _nafnet("gopro-w64", 64, [1, 1, 1, 28], 1, [1, 1, 1, 1], True, "GoPro motion deblur, width 64 (NAFNet-GoPro-width64.pth)", degradation="blur:9"),
        _nafnet("sidd-w32", 32, [2, 2, 4, 8], 12, [2, 2, 2, 2], False, "SIDD real denoising, width 32 (NAFNet-SIDD-width32.pth)", degradation="noise:10"),
        _nafnet("sidd-w64", 64, [2, 2, 4, 8], 12, [2, 2, 2, 2], False, "SIDD real denoising, width 64 (NAFNet-SIDD-width64.pth)", degradation="noise:10"),
        _nafnet("reds-w64", 64, [1, 1, 1, 28], 1, [1, 1, 1, 1], True, "REDS deblur+JPEG, width 64 (NAFNet-REDS-width64.pth)", degradation="blur:9"),
        _nafnet("demo-w16", 16, [1, 1, 1], 1, [1, 1, 1], False, "deploy-kit demo: width 16, trained here on noise sigma 25 (deploy_kit/demo/nafnet-demo-w16-noise25.pth)", degradation="noise:25"),
        _nafnet("tiny", 8, [1, 1, 1, 1], 1, [1, 1, 1, 1], True, "test variant: width 8, one block per level", tiny=True),
        _nafnet("tiny-notlc", 8, [1, 1], 1, [1, 1], False, "test variant: width 8, two levels", tiny=True),
    ),
    default_variant="gopro-w32",
    default_size=(256, 256),
    pad_multiple=16,
    supports_tlc=True,
    tolerance=Tolerance(fp32_max_abs=1e-4, fp16_min_psnr=50.0, int8_min_psnr=35.0),
    licence="MIT (megvii-research/NAFNet)",
)

_MODELS: dict[str, ModelSpec] = {"nafnet": NAFNET}

# A user's own nn.Module (``export --module``) or ONNX file (``export model.onnx``): no variants,
# default parity gates; what a family's spec would say travels in the request (specs.UserSource).
_USER = {kind: ModelSpec(name=kind, module="deploy_kit.models.user", variants=(), default_variant="",
                         summary="your own model: --module FILE.py:NAME" if kind == "module" else "your own ONNX file",
                         supports_tlc=kind == "module", licence="yours")
         for kind in USER_KINDS}


def register(spec: ModelSpec) -> None:
    """Add a model spec (used by the model families defined in sibling modules)."""
    _MODELS[spec.name] = spec


def _load_all() -> None:
    # Torch-free spec tables of the other families live next to this module.
    for mod in ("restormer_spec", "pvt_spec"):
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{mod}":
                raise


def model_names() -> list[str]:
    """Registered model names, without importing torch."""
    _load_all()
    return list(_MODELS)


def get_spec(name: str) -> ModelSpec:
    """Spec by CLI name.

    Raises:
        UsageError: unknown model (lists the known ones).
    """
    _load_all()
    if name in _USER:
        return _USER[name]
    try:
        return _MODELS[name]
    except KeyError:
        raise UsageError(
            f"unknown model '{name}'; choose one of: {', '.join(_MODELS)} (see 'deploy-kit list-models')"
        ) from None


def get_adapter(name: str) -> "ModelAdapter":
    """The model's PyTorch adapter (imports torch)."""
    spec = get_spec(name)
    module = importlib.import_module(spec.module)
    return module.ADAPTERS[name] if name in _USER else module.ADAPTER


def spec_for(req: ExportRequest) -> ModelSpec:
    """The spec a request is served by: its family's, or for a user's model one carrying its size rule."""
    spec = get_spec(req.model)
    if req.source is not None:
        spec = replace(spec, pad_multiple=req.source.pad_multiple)
    return spec
