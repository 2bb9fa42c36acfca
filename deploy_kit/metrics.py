"""Image metrics every report uses: PSNR (parity, INT8 quality, seam check, demo training, benchmarks)."""

from __future__ import annotations

import math

import numpy as np


def psnr_from_mse(mse: float, data_range: float = 1.0) -> float:
    """PSNR in dB of a mean squared error: inf when it is 0, -inf when it is not finite (NaN/Inf outputs)."""
    if mse == 0:
        return math.inf
    if not math.isfinite(mse):
        return -math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def psnr(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """PSNR in dB of ``a`` against ``b`` (computed in float64; nan for empty arrays).

    Args:
        data_range: the signal's peak-to-peak range (1 for images in [0, 1]).
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.size == 0:
        return math.nan
    diff = a64 - b64
    return psnr_from_mse(float(np.mean(diff * diff)), data_range)
