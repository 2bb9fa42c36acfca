"""Range-safe rewrites for FP16 graphs, used by the model files' export forms (imports torch).

Every rewrite is exact in real arithmetic — it only moves power-of-two scales (exact in FP16 and
FP32) and turns sums into means, so that no intermediate leaves FP16's range (max 65 504) — and
is used only in a model's *export* form (``wrap(static=True)``): the eager reference keeps the
upstream formula, so parity still compares two independent computations.

Why: trained NAFNet activations reach |x| ≈ 175, so a channel LayerNorm's squared
deviations reach ~1e5 and their sum over C channels ~1.5e7; ONNX Runtime's CPU kernels compute
those in FP32 and hide it, TensorRT in FP16 gives inf/NaN (NVIDIA/TensorRT#4338). The same holds
for Restormer's q/k L2 norm, a sum of squares over h·w pixels.

:func:`channel_layernorm` (NAFNet ``LayerNorm2d``, Restormer's BiasFree/WithBias bodies):

* ``y = x·2^-s`` shrinks the values; eps is scaled by ``2^-2s``; LayerNorm is scale-invariant and
  power-of-two scaling commutes with rounding, so in FP32 the result is bit-identical.
* *Means instead of sums*: each term is scaled by the power of two b ≈ 1/√C before it is summed
  (and before squaring), so no partial sum exceeds about twice its largest term.
* ``s`` per site (:func:`record_ranges` / :func:`apply_scales`): the smallest one for which the
  largest per-pixel variance measured in FP32 on the sample inputs, scaled by 2^-2s, keeps 4x
  headroom below 65 504 — usually 0, so small activations do not underflow — capped where
  eps·2^-2s would stop being an FP16 subnormal.

Measured (true-FP16 check of deploy_kit.precision.truefp16, FP16 partial sums, against the FP32
ONNX on ONNX Runtime; feature PSNR, data range = reference range; 1x C x 8x8, eps 1e-6):

=================  ====  =====================  =========  =========  =========
input              C     plain (LayerNorm2d)    safe s=0   safe s=1   safe s=2
=================  ====  =====================  =========  =========  =========
randn * 300        256   23.4 dB (var inf)      24.8       88.0       88.5
randn * 300        512   26.0                   24.4       89.4       87.7
uniform +-175      512   22.3                   85.6       86.6       85.2
randn * 1          512   89.9                   88.4       89.6       87.8
randn * 0.01       512   90.0                   62.2       46.6       24.6
randn * 2000       512   inf/NaN (6656 values)  24.4       26.0       24.1  (needs s >= 4)
=================  ====  =====================  =========  =========  =========

BiasFree numerator (``centred_numerator=False``): randn*300, C=256: 27.4 (s=0), 87.7 (s=1).
FP32 change vs the plain formula on randn*{1, 300} (+ per-channel offsets), C in
{32, 48, 256, 384, 512}, s in {0, 2, 5}: max abs 0.0 (bit-identical; :func:`fp32_change`).
"""

from __future__ import annotations

import contextlib
import math

import torch

from ..tlc import spatial_mean


def _pow2_at_most(v: float) -> float:
    """The largest power of two <= v (v > 0)."""
    return 2.0 ** math.floor(math.log2(v))


def smallest_safe_eps_scale(eps: float) -> int:
    """The largest ``scale_log2`` whose scaled eps (``eps * 2^-2s``) stays >= FP16's smallest subnormal 2^-24."""
    return max(0, math.floor((math.log2(eps) + 24) / 2))


def choose_scale_log2(max_var: float) -> int:
    """Smallest ``s`` with ``max_var * 2^-2s <= 16384`` (4x headroom below FP16's 65504).

    Args:
        max_var: the largest per-pixel channel variance measured in FP32 on sample images.
    """
    if max_var <= 16384:
        return 0
    return math.ceil(math.log2(max_var / 16384) / 2)


MAX_SCALE_UP = 12  # never scale a site up by more than 2^12


def layernorm_scale_log2(max_var: float, max_abs: float, channels: int, eps: float) -> int:
    """``s`` for :func:`channel_layernorm` from a site's FP32 statistics; may be negative.

    As large as needed to keep the scaled variance ≤ 2^14 and the mean's partial sums
    (≤ √C·max|y|) ≤ 2^14 — and otherwise as *small* as allowed, scaling small activations *up*:
    squared deviations of |d| ≈ 0.01 over b ≈ 1/√C underflow FP16's normal range (6.1e-5) and
    lose their precision (measured on random-weight Restormer: 48.9 dB on the true-FP16 check at
    s = 0, the cancellation-free FP32 island gave 52.9). Positive ``s`` is capped where eps·2^-2s
    would underflow FP16 (:func:`smallest_safe_eps_scale`).
    """
    s_var = math.ceil(math.log2(max_var / 2.0**14) / 2) if max_var > 0 else -MAX_SCALE_UP
    s_abs = math.ceil(math.log2(max_abs * math.sqrt(channels) / 2.0**14)) if max_abs > 0 else -MAX_SCALE_UP
    return min(max(s_var, s_abs, -MAX_SCALE_UP), smallest_safe_eps_scale(eps))


def l2norm_scale_log2(max_abs: float) -> int:
    """``s`` for :func:`l2_normalize_spatial`: |x·2^-s| ≤ 128, so squares stay ≤ 2^14 (small q/k
    values are scaled up, so their squares do not underflow); may be negative."""
    return max(math.ceil(math.log2(max_abs / 128.0)), -MAX_SCALE_UP) if max_abs > 0 else 0


def channel_normalize(x, eps: float, scale_log2: int = 0, centred_numerator: bool = True):
    """The normalised part of :func:`channel_layernorm` (no affine): ``(x - mean_C) / sqrt(var_C + eps)``.

    Written in the doubly scaled domain z = x·2^-s·b (b ≈ 1/√C, a power of two) so the graph makes
    one elementwise pass fewer than scaling by 2^-s and by b separately: z - mean(z) is (x - mean)·2^-s·b
    exactly, its squares' channel mean is var·2^-2s·b², and dividing by sqrt(that + eps·2^-2s·b²)
    gives the same quotient — every step moves a power of two only, so FP32 results are bit-identical
    to the plain formula, and each partial sum stays within about √C·max|x·2^-s| (the FP16 bound).
    Used by the export forms that fold the LayerNorm's affine into the next 1×1 conv
    (:mod:`deploy_kit.models.fastpath`).
    """
    c = int(x.shape[1])  # a Python int: a traced shape would leave Shape->Cast nodes in the graph
    b = _pow2_at_most(c ** -0.5)  # ~1/sqrt(C), a power of two
    sb = 2.0 ** -scale_log2 * b
    z = x * sb
    dz = z - z.sum(1, keepdim=True) / c  # partial sums <= ~sqrt(C) max|x 2^-s|
    var = (dz * dz).sum(1, keepdim=True) / c  # partial sums of dz^2 stay <= ~2 max dz^2
    return (dz if centred_numerator else z) / torch.sqrt(var + eps * sb * sb)


def channel_affine(y, weight, bias):
    """``weight * y + bias`` per channel of an NCHW map (either may be None)."""
    if weight is not None:
        y = weight.view(1, -1, 1, 1) * y
    if bias is not None:
        y = y + bias.view(1, -1, 1, 1)
    return y


def channel_layernorm(x, weight, bias, eps: float, scale_log2: int = 0, centred_numerator: bool = True):
    """LayerNorm over the channel axis of an NCHW tensor, written so FP16 cannot overflow.

    Same function as ``w * (x - mean_C) / sqrt(var_C + eps) + b`` (biased variance), bit-identical
    in FP32 (:func:`channel_normalize`, then the affine). See the module docstring for the bounds.

    Args:
        x: (N, C, H, W) tensor.
        weight, bias: (C,) tensors, or None (BiasFree has no bias).
        eps: the LayerNorm's eps (unscaled).
        scale_log2: s in ``y = x * 2^-s`` (see :func:`choose_scale_log2`).
        centred_numerator: False gives Restormer's BiasFree numerator (``x``, not ``x - mean``).
    """
    return channel_affine(channel_normalize(x, eps, scale_log2, centred_numerator), weight, bias)


def plain_channel_normalize(x, eps: float, centred_numerator: bool = True):
    """The models' own statistics (upstream formula, no affine): ``(x - mean_C) / sqrt(var_C + eps)``."""
    d = x - x.mean(1, keepdim=True)
    var = (d * d).mean(1, keepdim=True)  # biased variance, as upstream
    return (d if centred_numerator else x) / torch.sqrt(var + eps)


def plain_layernorm_channels(x, weight, bias, eps: float, centred_numerator: bool = True):
    """The models' formula (NAFNet LayerNorm2d / Restormer WithBias; BiasFree when not centred)."""
    return channel_affine(plain_channel_normalize(x, eps, centred_numerator), weight, bias)


class ChannelLayerNorm(torch.nn.Module):
    """LayerNorm over the channel axis of an NCHW map: NAFNet's LayerNorm2d, Restormer's bodies.

    State-dict keys ``weight`` (and ``bias`` unless ``bias=False``), as upstream. The eager form is
    the upstream formula; the export form switches on ``range_safe`` (:func:`channel_normalize`,
    scale from :func:`record_ranges`/:func:`apply_scales`) and ``affine_folded`` (the next 1×1 conv
    carries the affine, :mod:`deploy_kit.models.fastpath`).

    Args:
        channels: C.
        eps: added to the biased variance.
        bias: False for Restormer's BiasFree norm.
        centred: False for BiasFree's numerator (``x``, not ``x - mean``).
    """

    def __init__(self, channels: int, eps: float, bias: bool = True, centred: bool = True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(channels))
        self.bias = torch.nn.Parameter(torch.zeros(channels)) if bias else None
        self.eps, self.centred = eps, centred
        self.range_safe = False  # export form (FP16 overflow: see the module docstring)
        self.scale_log2 = 0  # set per site from the FP32 activations (apply_scales)
        self.affine_folded = False  # export form: the affine lives in the next conv (fastpath.py)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}, bias={self.bias is not None}, centred={self.centred}"

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if self.range_safe:  # squared deviations and their channel sum leave FP16 on trained weights
            return channel_normalize(x, self.eps, self.scale_log2, self.centred)
        return plain_channel_normalize(x, self.eps, self.centred)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.normalize(x)
        return y if self.affine_folded else channel_affine(y, self.weight, self.bias)

    @staticmethod
    def range_statistic(x: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the rewrite must fit: the largest per-pixel channel variance and max |x|."""
        return {"var": x.var(1, unbiased=False).max(), "abs": x.abs().max()}

    def choose_scale_log2(self, stats: dict[str, float]) -> int:
        return layernorm_scale_log2(stats.get("var", 0.0), stats.get("abs", 0.0), self.weight.numel(), self.eps)


def fp32_change(channels=(32, 48, 256, 384, 512), scales=(1.0, 300.0), scale_log2: int = 0, seed: int = 0) -> float:
    """Max |range-safe - plain| in FP32 on random data (the docstring's measurement)."""

    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for c in channels:
        w = torch.randn(c, generator=g)
        b = torch.randn(c, generator=g)
        for amp in scales:
            x = torch.randn(2, c, 16, 16, generator=g) * amp + torch.randn(1, c, 1, 1, generator=g) * amp * 0.1
            for centred in (True, False):
                ref = plain_layernorm_channels(x, w, b, 1e-6, centred)
                got = channel_layernorm(x, w, b, 1e-6, scale_log2, centred)
                worst = max(worst, float((ref - got).abs().max()))
    return worst


def l2_normalize_spatial(x: torch.Tensor, eps: float, scale_log2: int = 0) -> torch.Tensor:
    """x / max(‖x‖₂, eps) over the last two axes (…, h, w), range-safe (Restormer's q/k norm).

    ‖x‖ = sqrt(mean(x²))·sqrt(h·w): the plain sum of squares over h·w pixels leaves FP16 at
    |x| ≈ 1 and 65 536 pixels; the mean runs as MatMuls with 1/w and 1/h
    (:func:`deploy_kit.tlc.spatial_mean`), so every partial sum stays ≤ max x². With
    xs = x·2^-s: x / max(‖x‖, eps) = xs / max(‖xs‖, eps·2^-s), for |x| beyond 256.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    s = 2.0 ** -scale_log2
    xs = x * s if scale_log2 else x
    norm = torch.sqrt(spatial_mean(xs * xs)) * float(h * w) ** 0.5
    return xs / norm.clamp_min(eps * s)


def set_range_safe(module: torch.nn.Module, on: bool = True) -> int:
    """Switch every submodule with a ``range_safe`` attribute (export form only); returns the count."""
    n = 0
    for m in module.modules():
        if hasattr(m, "range_safe"):
            m.range_safe = on
            n += 1
    return n


@contextlib.contextmanager
def record_ranges(module: torch.nn.Module):
    """Record, per range-safe site, the largest statistic its rewrite must keep in FP16 range.

    Every submodule with ``range_safe`` defines ``range_statistic(x)`` (a dict of the largest
    values its rewrite must fit, e.g. per-pixel channel variance and max |x|) and
    ``choose_scale_log2(stats)``. Yields ``{module name: {statistic: largest value seen}}``,
    filled while the block runs forward passes.
    """
    seen: dict[str, dict[str, float]] = {}
    hooks = []
    for name, m in module.named_modules():
        if hasattr(m, "range_safe"):
            def hook(mod, args, _out, name=name):
                stats = seen.setdefault(name, {})
                for key, v in mod.range_statistic(args[0].detach()).items():
                    stats[key] = max(stats.get(key, 0.0), float(v))
            hooks.append(m.register_forward_hook(hook))
    try:
        yield seen
    finally:
        for h in hooks:
            h.remove()


def apply_scales(module: torch.nn.Module, ranges: dict[str, dict[str, float]]) -> dict[int, int]:
    """Set each range-safe site's ``scale_log2`` from :func:`record_ranges`; returns {s: sites}."""
    used: dict[int, int] = {}
    for name, m in module.named_modules():
        if hasattr(m, "range_safe"):
            s = m.choose_scale_log2(ranges.get(name, {}))
            m.scale_log2 = s
            used[s] = used.get(s, 0) + 1
    return used
