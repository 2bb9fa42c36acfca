"""TLC (Test-time Local Converter): the eager reference and the static unrolled export form.

Official semantics (megvii-research/TLC ``local_arch.py``, NAFNet's copy of it):

* A TLC site's kernel is frozen from the training size, never from the test image:
  ``K = feature_size_at_train_size * base // train`` (384/192/96/48/24 by level for 256/384).
* Pooling: when K covers both feature dims the result is the plain global average. Otherwise it
  is the stride-1 *valid* box mean with kernel (min(h, K), min(w, K)), replicate-padded back to
  (h, w) with ((k-1)//2, k//2) per axis.
* Restormer attention: static windows per axis (count ceil(n/k), evenly stepped, last clamped to
  the edge), attention per window, overlaps averaged.

The eager reference computes the box mean with the integral image (as upstream does, but in
float64 so the reference is not the noisier side). The export form is separable and free of
CumSum: the mean down each column as a MatMul with a constant banded (h-k1+1) x h matrix of 1/k1
(no transpose needed), then a 1 x k2 AveragePool along the rows — its window far below TensorRT's
100 000-element pooling limit (a single 384 x 384 pool is 147 456; NVIDIA/TensorRT#2094).
Measured on ONNX Runtime 1.32 CPU, 2 threads, NAFNet's level sizes (issue 12; the SCA input of
a 720 x 1280 image; ms per pooling site, the output equal to 2e-8):

=====================  ====  =================  ===================  ==================
map (C x h x w)        k     two AveragePools   two banded MatMuls   MatMul + 1 x k pool
=====================  ====  =================  ===================  ==================
32 x 720 x 1280        384   800                368                  272
64 x 360 x 640         192   201                109                  85
128 x 180 x 320        96    40                 32                   24
256 x 90 x 160         48    13.1               15.7                 8.0
=====================  ====  =================  ===================  ==================

(The k x 1 AveragePool down the columns is the slow one; MatMuls are listed with the smaller
axis first, the cheaper order.)
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------------------------------
# pooling (NAFNet SCA, and any AdaptiveAvgPool2d(1) site)
# ---------------------------------------------------------------------------------------
def spatial_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum over the last two axes, (..., h, w) -> (..., 1, 1), as two MatMuls with ones.

    Why not ``x.sum((-2, -1))``: ONNX Runtime's single ReduceSum/ReduceMean/GlobalAveragePool
    over h*w accumulates in FP32 and was measured 1.4e-5 off a float64 mean on one 32x720x1280
    map (NAFNet's SCA drifted 8e-4 from PyTorch at 720p, gate 1e-4); GEMM accumulation stays at
    ~1e-7. Two ReduceSums are no remedy: onnxsim 0.8.1 fuses them back into one over both axes.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    return x.new_ones(1, h) @ (x @ x.new_ones(w, 1))


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over the last two axes, (..., h, w) -> (..., 1, 1), as two MatMuls with 1/w and 1/h.

    Range-safe rewrite for FP16 (issue 11): the sum form (``spatial_sum(x) / (h * w)``) holds
    h*w*|x| before the division — 65 536 x |x| for a 256 x 256 map, far beyond FP16's 65 504, and
    the converter clamps the 65 536 divisor to 1e4 on top. Weighting each term by 1/w (then 1/h)
    keeps every partial sum within max|x|; exact in real arithmetic, and the GEMM accumulation
    keeps the FP32 precision :func:`spatial_sum` was chosen for.
    """
    h, w = int(x.shape[-2]), int(x.shape[-1])
    return x.new_full((1, h), 1.0 / h) @ (x @ x.new_full((w, 1), 1.0 / w))


class SeparableGlobalMean(nn.Module):
    """Global average pooling (exact same value) computed with :func:`spatial_mean`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spatial_mean(x)


class LocalAvgPoolEager(nn.Module):
    """Eager TLC pooling, shape-generic, as upstream computes it (integral image + replicate pad)."""

    def __init__(self, kernel: tuple[int, int]):
        super().__init__()
        self.kernel = tuple(int(k) for k in kernel)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, eager"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        kh, kw = self.kernel
        if kh >= h and kw >= w:
            return F.adaptive_avg_pool2d(x, 1)
        k1, k2 = min(h, kh), min(w, kw)
        s = F.pad(x.double().cumsum(-1).cumsum(-2), (1, 0, 1, 0))
        box = s[..., k1:, k2:] - s[..., :-k1, k2:] - s[..., k1:, :-k2] + s[..., :-k1, :-k2]
        out = (box / (k1 * k2)).to(x.dtype)
        oh, ow = out.shape[-2:]
        pad = ((w - ow) // 2, (w - ow + 1) // 2, (h - oh) // 2, (h - oh + 1) // 2)
        return F.pad(out, pad, mode="replicate")

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        """Post-conv hook (the eager form already padded before the conv, as upstream)."""
        return y


class LocalAvgPoolStatic(nn.Module):
    """TLC pooling unrolled for one fixed feature size (h, w): only static ONNX ops.

    ``forward`` returns the *valid* map (or 1 x 1 in the global case); ``finish`` replicate-pads
    it back to (h, w). The caller runs its 1 x 1 conv in between: a 1 x 1 conv commutes with edge
    padding, so this is exact and the conv runs on the smaller map (as TLC's MPRNetLocal does).
    The box mean is a banded MatMul down the columns, then a 1 x k2 AveragePool (module docstring).
    """

    def __init__(self, kernel: tuple[int, int], size: tuple[int, int]):
        super().__init__()
        kh, kw = (int(k) for k in kernel)
        h, w = (int(s) for s in size)
        self.kernel, self.size = (kh, kw), (h, w)
        self.is_global = kh >= h and kw >= w
        self.k1, self.k2 = min(h, kh), min(w, kw)
        oh, ow = h - self.k1 + 1, w - self.k2 + 1
        self.pads = ((w - ow) // 2, (w - ow + 1) // 2, (h - oh) // 2, (h - oh + 1) // 2)
        band = None
        if not self.is_global and self.k1 > 1:
            band = torch.zeros(oh, h)
            for i in range(oh):
                band[i, i : i + self.k1] = 1.0 / self.k1
        self.register_buffer("band_h", band, persistent=False)

    def extra_repr(self) -> str:
        mode = "global" if self.is_global else f"window=({self.k1},{self.k2}) pads={self.pads}"
        return f"kernel={self.kernel}, size={self.size}, {mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            raise RuntimeError(f"static TLC pool built for {self.size}, got {tuple(x.shape[-2:])}")
        if self.is_global:
            return spatial_mean(x)  # see spatial_mean
        if self.band_h is not None:
            x = self.band_h @ x  # (oh, h) @ (..., h, w): the mean of k1 rows, no transpose
        if self.k2 > 1:
            x = F.avg_pool2d(x, (1, self.k2), stride=1)
        return x

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        if self.is_global or not any(self.pads):
            return y
        return F.pad(y, self.pads, mode="replicate")


def pool_windows(module: nn.Module) -> list[tuple[int, int]]:
    """Every AveragePool window a module will emit (for the TensorRT 100 000 limit check)."""
    return [(1, m.k2) for m in module.modules() if isinstance(m, LocalAvgPoolStatic) and not m.is_global and m.k2 > 1]


# ---------------------------------------------------------------------------------------
# windows (Restormer-Local attention)
# ---------------------------------------------------------------------------------------
def window_starts(n: int, kernel: int) -> tuple[int, list[int]]:
    """Window size and start offsets along one axis, by the TLC ``grids`` rule.

    The count is ceil(n / k); windows are evenly stepped, the last one clamped to end at n.

    Returns:
        (k, starts) with k = min(n, kernel).
    """
    k = min(n, kernel)
    count = (n - 1) // k + 1
    if count == 1:
        return k, [0]
    step = math.ceil((n - k) / (count - 1) - 1e-8)
    starts: list[int] = []
    i = 0
    while True:
        if i + k >= n:
            starts.append(n - k)
            break
        starts.append(i)
        i += step
    return k, starts


def cut_windows(x: torch.Tensor, k: tuple[int, int], rows: list[int], cols: list[int]) -> torch.Tensor:
    """Static slices of a (1, C, H, W) map, stacked on the batch axis (row-major order)."""
    kh, kw = k
    return torch.cat([x[..., i : i + kh, j : j + kw] for i in rows for j in cols], dim=0)


class WindowMerge(nn.Module):
    """Average overlapping window outputs back onto the (H, W) canvas with static ops only.

    Windows are padded to the canvas and summed (separably: columns within a row band, then the
    bands), then multiplied by a constant reciprocal-count map. No ScatterND / index_put / Loop.
    """

    def __init__(self, size: tuple[int, int], k: tuple[int, int], rows: list[int], cols: list[int]):
        super().__init__()
        h, w = size
        kh, kw = k
        self.size, self.k, self.rows, self.cols = (h, w), (kh, kw), list(rows), list(cols)
        rc = torch.zeros(h)
        cc = torch.zeros(w)
        for i in rows:
            rc[i : i + kh] += 1
        for j in cols:
            cc[j : j + kw] += 1
        self.register_buffer("inv_count", (1.0 / rc)[:, None] * (1.0 / cc)[None, :], persistent=False)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        h, w = self.size
        kh, kw = self.k
        if len(self.rows) == 1 and len(self.cols) == 1 and (kh, kw) == (h, w):
            return y
        nc = len(self.cols)
        total = None
        for r, i in enumerate(self.rows):
            band = None
            for c, j in enumerate(self.cols):
                part = F.pad(y[r * nc + c : r * nc + c + 1], (j, w - j - kw, 0, 0))
                band = part if band is None else band + part
            band = F.pad(band, (0, 0, i, h - i - kh))
            total = band if total is None else total + band
        return total * self.inv_count


def merge_windows_eager(y: torch.Tensor, size: tuple[int, int], k: tuple[int, int], rows, cols) -> torch.Tensor:
    """Upstream-style merge (canvas += window, count += 1, divide): the eager reference."""
    h, w = size
    kh, kw = k
    canvas = y.new_zeros((1, y.shape[1], h, w))
    count = y.new_zeros((1, 1, h, w))
    n = 0
    for i in rows:
        for j in cols:
            canvas[..., i : i + kh, j : j + kw] += y[n : n + 1]
            count[..., i : i + kh, j : j + kw] += 1
            n += 1
    return canvas / count
