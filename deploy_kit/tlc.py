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
CumSum (:class:`LocalAvgPoolStatic`, :class:`BoxMean`): the mean down each column as constant
MatMuls (no transpose needed), then along the rows as a 1 x k AveragePool — its window far below
TensorRT's 100 000-element limit (a single 384 x 384 pool is 147 456; NVIDIA/TensorRT#2094) — or
as the same constant MatMuls. Down the columns the MatMul is a banded (h-k+1) x h matrix of 1/k,
or, on the large maps, block-wise: in-block suffix sums, then a shift and a spread across blocks
(:func:`box_block_matrices`), about b + (h-k)/b multiply-adds per element instead of h-k+1.
Measured on ONNX Runtime 1.32 CPU, 2 threads, spinning off, the three forms of a site timed in
turn (issue 12; NAFNet's SCA inputs for a 720 x 1280 image; ms per pooling site, medians of 10-40
runs; the outputs agree to 6e-8):

=====================  ====  ===========  ====================  ===============================
map (C x h x w)        k     two pools    banded MatMul + pool  chosen (down / along the rows)
=====================  ====  ===========  ====================  ===============================
32 x 720 x 1280        384   525          109                   57 (block 24 / block 32)
64 x 360 x 640         192   130          33                    29 (block 24 / pool)
128 x 180 x 320        96    15.2         8.5                   8.5 (banded / pool)
256 x 90 x 160         48    2.8          2.5                   2.4 (banded / pool)
512 x 45 x 80          24    1.1          0.9                   1.0 (banded / pool)
=====================  ====  ===========  ====================  ===============================

(Two pools: a k x 1 then a 1 x k AveragePool; the k x 1 one is the slow one.) The block form needs
no Slice: its last block repeats the last window, which is the replicate padding's first rows.
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


#: The block form replaces the banded MatMul (rows) or the AveragePool (columns) only where its
#: cost (:func:`box_block`) is this many times below theirs (n - k + 1 and k multiply-adds per
#: element): below that its extra passes over memory cost more than the arithmetic it saves
#: (measured per site, module docstring).
BLOCK_GAIN = 4


def box_block(n: int, k: int) -> tuple[int, int]:
    """Block size b for a k-wide stride-1 box sum along an axis of n, and its cost per element.

    b divides both n and k, so every window starts at an offset s < b into a block and ends at the
    same offset into a later one. The cost is b (the in-block suffix sums) + 2 x the number of
    output blocks, (n - k) / b + 1 (the shift across blocks: a skinny MatMul, measured at about
    half the in-block rate in ONNX Runtime); b minimises it. b - 1 <= k // 2: the b - 1 entries
    the form appends must fit in the end padding (k // 2).
    """
    g = math.gcd(n, k)
    sizes = [b for b in range(1, min(g, k // 2 + 1) + 1) if g % b == 0]
    return min(((b, b + 2 * ((n - k) // b + 1)) for b in sizes), key=lambda t: (t[1], -t[0]))


def block_pays(n: int, k: int, axis: int) -> bool:
    """Whether the block form is :data:`BLOCK_GAIN` times cheaper than the other form of the axis:
    the banded MatMul down the columns (axis -2, n - k + 1 multiply-adds per element) or the 1 x k
    AveragePool along the rows (axis -1, k adds)."""
    return (n - k + 1 if axis == -2 else k) > BLOCK_GAIN * box_block(n, k)[1]


def box_block_matrices(n: int, k: int, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The three constant matrices of the block-wise k-box mean along an axis of n (b | n, b | k).

    The axis is cut into m = n / b blocks; S[q, s] = (1/k) sum_{t >= s} x[q, t] is the suffix
    mean of block q and K = k / b. The window starting at q*b + s sums to
    S[q, s] - S[q + K, s] + sum_{j = q+1 .. q+K} S[j, 0] (the suffix of block q, the whole blocks
    after it, minus what of block q + K lies past the window). The last output block,
    q = m - K, holds the last window, [n - k, n), at s = 0 only; there the shift row is zero and
    the spread row covers q .. m - 1, so the block's every row equals that last window: the rows
    past the valid n - k + 1 are its replicate padding, already in place.

    Returns:
        suffix (b x b, 1/k on and above the diagonal), shift (mo x m, +1 at q and -1 at q + K) and
        spread (mo x m, ones over q+1 .. q+K), with mo = m - K + 1 output blocks.
    """
    m, kb = n // b, k // b
    mo = m - kb + 1
    suffix = torch.triu(torch.full((b, b), 1.0 / k))
    shift, spread = torch.zeros(mo, m), torch.zeros(mo, m)
    for q in range(mo - 1):
        shift[q, q], shift[q, q + kb] = 1.0, -1.0
        spread[q, q + 1 : q + kb + 1] = 1.0
    spread[mo - 1, mo - 1 :] = 1.0
    return suffix, shift, spread


class BoxMean(nn.Module):
    """Stride-1 valid k-box mean along one axis (-2: rows, -1: columns) of a fixed length n.

    Two exact forms, both MatMuls with constant matrices, no transpose, no CumSum, no Slice:
    * banded: an (n-k+1) x n matrix of 1/k (rows only; k multiply-adds per output element);
    * block-wise (:func:`box_block_matrices`): in-block suffix sums, then a shift and a spread
      across blocks, about b + (n-k)/b + 1 multiply-adds per element. Its output is ``length`` =
      n - k + b long: the valid n - k + 1 entries, then the last one repeated.

    ``form="auto"`` picks by :func:`block_pays` down the columns; along the rows the block form is
    the only MatMul form (whether it beats the AveragePool is :class:`LocalAvgPoolStatic`'s choice).
    """

    def __init__(self, n: int, k: int, axis: int, form: str = "auto"):
        super().__init__()
        if axis not in (-2, -1) or form not in ("auto", "block", "band"):
            raise ValueError(f"BoxMean: axis must be -2 or -1 and form auto|block|band, got {axis}, {form!r}")
        self.n, self.k, self.axis = n, k, axis
        b = box_block(n, k)[0]
        use_block = form == "block" or (form == "auto" and (axis == -1 or block_pays(n, k, axis)))
        self.block = b if use_block else 0
        self.length = n - k + (b if use_block else 1)
        if self.block:
            suffix, shift, spread = box_block_matrices(n, k, b)
            # rows: suffix @ (.., m, b, w); columns: (.., m, b) @ suffix^T
            self.register_buffer("suffix", suffix if axis == -2 else suffix.t().contiguous(), persistent=False)
            self.register_buffer("shift", shift, persistent=False)
            self.register_buffer("spread", spread, persistent=False)
        else:
            if axis != -2:
                raise ValueError("BoxMean: the banded form runs down the rows only")
            band = torch.zeros(n - k + 1, n)
            for i in range(n - k + 1):
                band[i, i : i + k] = 1.0 / k
            self.register_buffer("band", band, persistent=False)

    def extra_repr(self) -> str:
        return f"n={self.n}, k={self.k}, axis={self.axis}, " + (f"block={self.block}" if self.block else "banded")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.block:
            return self.band @ x  # (n-k+1, n) @ (..., n, w)
        b, m = self.block, self.n // self.block
        mo = self.shift.shape[0]
        n_, c, h, w = x.shape
        if self.axis == -2:
            s = self.suffix @ x.reshape(n_, c, m, b, w)                     # (N, C, m, b, w)
            part = self.shift @ s.reshape(n_, c, m, b * w)                  # (N, C, mo, b*w)
            whole = self.spread @ s[:, :, :, :1, :].reshape(n_, c, m, w)    # (N, C, mo, w)
            y = part.reshape(n_, c, mo, b, w) + whole.reshape(n_, c, mo, 1, w)
            return y.reshape(n_, c, mo * b, w)
        s = x.reshape(n_, c, h, m, b) @ self.suffix                         # (N, C, h, m, b)
        y = self.shift @ s + self.spread @ s[..., :1]                       # (N, C, h, mo, b)
        return y.reshape(n_, c, h, mo * b)


class LocalAvgPoolStatic(nn.Module):
    """TLC pooling unrolled for one fixed feature size (h, w): only static ONNX ops.

    ``forward`` returns the *valid* map (or 1 x 1 in the global case); ``finish`` replicate-pads
    it back to (h, w). The caller runs its 1 x 1 conv in between: a 1 x 1 conv commutes with edge
    padding, so this is exact and the conv runs on the smaller map (as TLC's MPRNetLocal does).
    The box mean runs down the columns, then along the rows, each a :class:`BoxMean` (banded or
    block-wise MatMuls); along the rows a 1 x k2 AveragePool where that is cheaper (module docstring).
    """

    def __init__(self, kernel: tuple[int, int], size: tuple[int, int]):
        super().__init__()
        kh, kw = (int(k) for k in kernel)
        h, w = (int(s) for s in size)
        self.kernel, self.size = (kh, kw), (h, w)
        self.is_global = kh >= h and kw >= w
        self.k1, self.k2 = min(h, kh), min(w, kw)
        self.rows = self.cols = None
        if not self.is_global and self.k1 > 1:
            self.rows = BoxMean(h, self.k1, axis=-2)
        if not self.is_global and self.k2 > 1 and block_pays(w, self.k2, axis=-1):
            self.cols = BoxMean(w, self.k2, axis=-1)  # else the 1 x k2 AveragePool (cheaper there)

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """Replicate padding back to (h, w), F.pad order: the valid map starts at ((k-1)//2, ...) as
        upstream; a block-wise BoxMean's output already carries the first rows/columns of the end
        padding."""
        (h, w), (k1, k2) = self.size, (self.k1, self.k2)
        top, left = (k1 - 1) // 2, (k2 - 1) // 2
        oh = self.rows.length if self.rows is not None else h - k1 + 1
        ow = self.cols.length if self.cols is not None else w - k2 + 1
        return (left, w - left - ow, top, h - top - oh)

    def extra_repr(self) -> str:
        mode = "global" if self.is_global else f"window=({self.k1},{self.k2}) pads={self.pads}"
        return f"kernel={self.kernel}, size={self.size}, {mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            raise RuntimeError(f"static TLC pool built for {self.size}, got {tuple(x.shape[-2:])}")
        if self.is_global:
            return spatial_mean(x)  # see spatial_mean
        if self.rows is not None:
            x = self.rows(x)
        if self.cols is not None:
            x = self.cols(x)
        elif self.k2 > 1:
            x = F.avg_pool2d(x, (1, self.k2), stride=1)
        return x

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        if self.is_global or not any(self.pads):
            return y
        return F.pad(y, self.pads, mode="replicate")


def pool_windows(module: nn.Module) -> list[tuple[int, int]]:
    """Every AveragePool window a module will emit (for the TensorRT 100 000 limit check)."""
    return [(1, m.k2) for m in module.modules()
            if isinstance(m, LocalAvgPoolStatic) and not m.is_global and m.k2 > 1 and m.cols is None]


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
