"""Restormer / Restormer-Local spec table (torch-free; imported by ``registry._load_all``).

Hyper-parameters follow the official option files (https://github.com/swz30/Restormer,
``*/Options/*.yml``): every task uses dim 48, blocks [4,6,6,8], 4 refinement
blocks, heads [1,2,4,8], FFN expansion 2.66, no conv bias; they differ in LayerNorm type and
channel counts. Several tasks share identical hyper-parameters (motion deblurring / deraining /
single-image defocus; colour Gaussian / real denoising), so a checkpoint alone cannot tell them
apart: detection picks the first matching row and ``--variant`` names the task explicitly.

TLC (Restormer-Local) is on by default only for motion deblurring, the task the TLC paper
evaluates (GoPro 32.92 -> 33.57 dB, HIDE 31.22 -> 31.49 dB, reported).
"""

from __future__ import annotations

from typing import Any

from ..specs import ModelSpec, Tolerance, Variant
from .registry import register

_FULL = dict(dim=48, num_blocks=[4, 6, 6, 8], num_refinement_blocks=4, heads=[1, 2, 4, 8])
# width 8, one block per level: the whole U-Net (3 down / 3 up, skip convs, refinement) runs
# at 64 x 64 in milliseconds; heads [1,2,2,4] keeps multi-head reshapes exercised.
_TINY = dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4])


def _hp(base: dict, *, ch_in: int = 3, ch_out: int = 3, ln: str = "WithBias", dual: bool = False) -> dict[str, Any]:
    """All ten constructor kwargs of ``Restormer`` (what ``detect_hparams`` returns)."""
    return dict(
        inp_channels=ch_in,
        out_channels=ch_out,
        ffn_expansion_factor=2.66,
        bias=False,
        LayerNorm_type=ln,
        dual_pixel_task=dual,
        **base,
    )


V = Variant.make
# Variant.extra: what parity, INT8 calibration and quality images are degraded with
# (``degradation``, parsed by precision/calibration.py) so they match the task's inputs. Deraining
# and defocus have no synthetic stand-in there and use clean crops; real denoising uses Gaussian
# noise as a stand-in for sensor noise. The denoisers need it: their BiasFree network is
# ill-conditioned on exactly black flat regions, which noisy inputs never have (see deploy_kit/pipeline/graph.py).
_GAUSS25 = {"noise_sigma": 25, "degradation": "noise:25"}

RESTORMER = ModelSpec(
    name="restormer",
    module="deploy_kit.models.restormer",
    summary="Restormer (CVPR 2022) restoration transformer; motion deblurring uses TLC (Restormer-Local) by default",
    variants=(
        V("motion-deblurring", _hp(_FULL), tlc_default=True, extra={"degradation": "blur:9"},
          summary="GoPro motion deblur, WithBias LN (motion_deblurring.pth)"),
        V("deraining", _hp(_FULL), summary="rain streak removal, WithBias LN (deraining.pth)"),
        V("single-defocus", _hp(_FULL),
          summary="single-image defocus deblur, WithBias LN (single_image_defocus_deblurring.pth)"),
        V("dual-pixel-defocus", _hp(_FULL, ch_in=6, dual=True),
          summary="dual-pixel defocus deblur, 6-ch L/R input, 3-ch output (dual_pixel_defocus_deblurring.pth)"),
        V("gaussian-color-denoising", _hp(_FULL, ln="BiasFree"), extra=_GAUSS25,
          summary="Gaussian colour denoising, BiasFree LN (gaussian_color_denoising_blind.pth / _sigma{15,25,50})"),
        V("gaussian-gray-denoising", _hp(_FULL, ch_in=1, ch_out=1, ln="BiasFree"), extra=_GAUSS25,
          summary="Gaussian grey denoising, 1 channel, BiasFree LN (gaussian_gray_denoising_blind.pth)"),
        V("real-denoising", _hp(_FULL, ln="BiasFree"), extra={"degradation": "noise:10"},
          summary="real camera noise (SIDD/DND), BiasFree LN (real_denoising.pth)"),
        V("tiny", _hp(_TINY), tlc_default=True, tiny=True, extra={"degradation": "blur:9"},
          summary="test variant: dim 8, one block per level, WithBias LN, TLC on"),
        V("tiny-biasfree", _hp(_TINY, ln="BiasFree"), tiny=True, extra=_GAUSS25,
          summary="test variant: dim 8, BiasFree LN"),
        V("tiny-gray", _hp(_TINY, ch_in=1, ch_out=1, ln="BiasFree"), tiny=True, extra=_GAUSS25,
          summary="test variant: dim 8, 1-channel, BiasFree LN"),
        V("demo-d12", _hp(dict(dim=12, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 4, 8])),
          extra={"degradation": "blur:9"},
          summary="deploy-kit demo: dim 12, trained here on synthetic blur (deploy_kit/demo/restormer-demo-d12-blur9.pth)"),
        V("tiny-dual", _hp(_TINY, ch_in=6, dual=True), tiny=True,
          summary="test variant: dim 8, dual-pixel (6 -> 3 channels)"),
    ),
    default_variant="motion-deblurring",
    default_size=(256, 256),
    pad_multiple=8,
    supports_tlc=True,
    tolerance=Tolerance(fp32_max_abs=1e-4, fp16_min_psnr=50.0, int8_min_psnr=35.0),
    licence="Academic Public License, non-commercial use only (swz30/Restormer)",
)

register(RESTORMER)
