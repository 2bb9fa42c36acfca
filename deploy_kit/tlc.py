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
CumSum (:class:`LocalAvgPoolStatic`, :class:`BoxMean`): down the columns, then along the rows,
each axis in one of three exact forms. On NAFNet's large maps the window splits as k = b x K and
the mean is two stages: a b-wide stride-1 AveragePool, then a depthwise Conv of K taps of 1/K
dilated by b (b + K ops per output instead of k; both stages run in ONNX Runtime's blocked channel
layout next to the convolutions, and TensorRT's pooling window, limited to 100 000 elements
(NVIDIA/TensorRT#2094; a single 384 x 384 pool is 147 456), stays at b). Where that does not pay,
a banded (h-k+1) x h constant MatMul down the columns and a 1 x k AveragePool along the rows.
Measured on ONNX Runtime 1.32 CPU, 2 threads, spinning off: one NAFNet SCA site in
context (1 x 1 convs and the gate before it, its 1 x 1 conv, the replicate pad and the product
after it), ms, and in brackets what it costs over the global-mean site; the forms agree to 1e-5:

=====================  ====  ==========  ===============  ==================  ==========================
map (C x h x w)        k     global      two pools        band + pool         chosen (both axes)
=====================  ====  ==========  ===============  ==================  ==========================
32 x 720 x 1280        384   62.8        582.3 (+519.6)   181.2 (+118.4)      124.9 (+62.1), 24 x 16
64 x 360 x 640         192   34.8        162.2 (+127.4)   70.1 (+35.3)        56.3 (+21.5), 12 x 16
128 x 180 x 320        96    21.6        36.6 (+15.0)     33.0 (+11.4)        29.6 (+8.0), 12 x 8
256 x 90 x 160         48    15.5        19.9 (+4.5)      20.1 (+4.6)         19.6 (+4.1), 6 x 8
512 x 45 x 80          24    12.6        15.2 (+2.6)      15.3 (+2.7)         15.4 (+2.8), band + pool
=====================  ====  ==========  ===============  ==================  ==========================

(Two pools: a k x 1 then a 1 x k AveragePool; the k x 1 one is the slow one.) An earlier form,
block-wise suffix sums with a shift across blocks as constant MatMuls, measured slower than the two-stage form wherever it had been chosen, and was removed.
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

    Range-safe rewrite for FP16 (models/rangesafe.py explains the overflow): the sum form (``spatial_sum(x) / (h * w)``) holds
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


#: The two-stage form replaces the banded MatMul (rows) or the k-wide AveragePool (columns) only
#: where its op count b + K (:func:`box_cascade`) is this many times below theirs (n - k + 1
#: multiply-adds, k adds per output element): it makes two passes over memory where they make one.
#: Measured in ONNX Runtime (module docstring): k = 48 (6 + 8 against 43 and 48) still gains, k = 24
#: (6 + 4 against 22 and 24) loses.
CASCADE_GAIN = 3


def box_cascade(k: int) -> tuple[int, int] | None:
    """(b, K) with b * K = k for the two-stage k-box mean, b + K smallest; None where k has no split.

    Between splits of equal cost a power-of-two K wins: the dilated stage's weight 1/K is then
    exact in FP16 (1/24 rounds to FP16 2.4e-4 low, a bias on every mean); the first stage is an
    AveragePool, whose divisor is no stored weight.
    """
    splits = [(k // big, big) for big in range(2, k // 2 + 1) if k % big == 0]
    if not splits:
        return None
    return min(splits, key=lambda s: (s[0] + s[1], (s[1] & (s[1] - 1)) != 0))


class BoxMean(nn.Module):
    """Stride-1 valid k-box mean along one axis (-2: rows, -1: columns) of a fixed length n.

    Output length n - k + 1. Three exact forms, all static ONNX ops (no CumSum, no transpose):

    * ``band``: an (n-k+1) x n constant matrix of 1/k, one MatMul (rows only; n-k+1 multiply-adds
      per output element);
    * ``pool``: a k-wide stride-1 AveragePool (k adds);
    * ``cascade``: a b-wide AveragePool, then a depthwise Conv of K taps of 1/K spaced b apart
      (dilation b), k = b * K (:func:`box_cascade`): window [i, i+k) is the mean of the K b-wide
      means starting at i, i+b, ..., i+(K-1)b. b + K ops per output element in two passes; both
      stages stay in ONNX Runtime's blocked channel layout (NCHWc) next to the convolutions, and
      TensorRT's pooling window stays at b (its limit is 100 000 elements).

    ``form="auto"``: cascade where it is :data:`CASCADE_GAIN` times cheaper than the axis' one-pass
    form (band down the columns, pool along the rows), else that form.
    """

    def __init__(self, n: int, k: int, axis: int, form: str = "auto"):
        super().__init__()
        if axis not in (-2, -1) or form not in ("auto", "band", "pool", "cascade"):
            raise ValueError(f"BoxMean: axis must be -2 or -1 and form auto|band|pool|cascade, got {axis}, {form!r}")
        if form == "band" and axis != -2:
            raise ValueError("BoxMean: the banded form runs down the rows only")
        self.n, self.k, self.axis = n, k, axis
        split = box_cascade(k)
        if form == "auto":
            one_pass = ("band", n - k + 1) if axis == -2 else ("pool", k)
            pays = split is not None and CASCADE_GAIN * sum(split) <= one_pass[1]
            form = "cascade" if pays else one_pass[0]
        if form == "cascade" and split is None:
            raise ValueError(f"BoxMean: k={k} has no two-stage split")
        self.form = form
        self.split = split if form == "cascade" else None
        if form == "band":
            band = torch.zeros(n - k + 1, n)
            for i in range(n - k + 1):
                band[i, i : i + k] = 1.0 / k
            self.register_buffer("band", band, persistent=False)

    def _along(self, size: int) -> tuple[int, int]:
        return (size, 1) if self.axis == -2 else (1, size)

    @property
    def pool_window(self) -> tuple[int, int] | None:
        """The AveragePool window this form emits (None: no AveragePool)."""
        if self.form == "pool":
            return self._along(self.k)
        return self._along(self.split[0]) if self.form == "cascade" else None

    def extra_repr(self) -> str:
        how = f"cascade={self.split[0]}x{self.split[1]}" if self.form == "cascade" else self.form
        return f"n={self.n}, k={self.k}, axis={self.axis}, {how}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.form == "band":
            return self.band @ x  # (n-k+1, n) @ (..., n, w)
        if self.form == "pool":
            return F.avg_pool2d(x, self._along(self.k), stride=1)
        b, taps = self.split
        x = F.avg_pool2d(x, self._along(b), stride=1)
        c = int(x.shape[1])
        weight = x.new_full((c, 1) + self._along(taps), 1.0 / taps)
        return F.conv2d(x, weight, dilation=self._along(b), groups=c)


class LocalAvgPoolStatic(nn.Module):
    """TLC pooling unrolled for one fixed feature size (h, w): only static ONNX ops.

    ``forward`` returns the *valid* map (or 1 x 1 in the global case); ``finish`` replicate-pads
    it back to (h, w). The caller runs its 1 x 1 conv in between: a 1 x 1 conv commutes with edge
    padding, so this is exact and the conv runs on the smaller map (as TLC's MPRNetLocal does).
    The box mean runs down the columns, then along the rows, each a :class:`BoxMean`.
    """

    def __init__(self, kernel: tuple[int, int], size: tuple[int, int]):
        super().__init__()
        kh, kw = (int(k) for k in kernel)
        h, w = (int(s) for s in size)
        self.kernel, self.size = (kh, kw), (h, w)
        self.is_global = kh >= h and kw >= w
        self.k1, self.k2 = min(h, kh), min(w, kw)
        local = not self.is_global
        self.rows = BoxMean(h, self.k1, axis=-2) if local and self.k1 > 1 else None
        self.cols = BoxMean(w, self.k2, axis=-1) if local and self.k2 > 1 else None

    @property
    def pads(self) -> tuple[int, int, int, int]:
        """Replicate padding of the valid map back to (h, w), F.pad order, as upstream."""
        k1, k2 = self.k1, self.k2
        return ((k2 - 1) // 2, k2 // 2, (k1 - 1) // 2, k1 // 2)

    def extra_repr(self) -> str:
        mode = "global" if self.is_global else f"window=({self.k1},{self.k2}) pads={self.pads}"
        return f"kernel={self.kernel}, size={self.size}, {mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.size:
            raise RuntimeError(f"static TLC pool built for {self.size}, got {tuple(x.shape[-2:])}")
        if self.is_global:
            return spatial_mean(x)  # see spatial_mean
        for box in (self.rows, self.cols):
            if box is not None:
                x = box(x)
        return x

    def finish(self, y: torch.Tensor) -> torch.Tensor:
        if self.is_global or not any(self.pads):
            return y
        return F.pad(y, self.pads, mode="replicate")


def pool_windows(module: nn.Module) -> list[tuple[int, int]]:
    """Every AveragePool window a module will emit (for the TensorRT 100 000 limit check)."""
    return [m.pool_window for m in module.modules() if isinstance(m, BoxMean) and m.pool_window is not None]


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
    """Static slices of an (N, C, H, W) map, stacked on the batch axis: window-major (row-major
    window order), so window w of batch element b is item ``w * N + b`` (:class:`WindowMerge`)."""
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
        """Merge window outputs ``y`` (count * N, C, kh, kw), laid out as :func:`cut_windows`
        cuts them, into (N, C, H, W)."""
        h, w = self.size
        kh, kw = self.k
        if len(self.rows) == 1 and len(self.cols) == 1 and (kh, kw) == (h, w):
            return y
        nc = len(self.cols)
        # the batch is static in an export (int() makes it a constant of the traced graph)
        n = int(y.shape[0]) // (len(self.rows) * nc)
        total = None
        for r, i in enumerate(self.rows):
            band = None
            for c, j in enumerate(self.cols):
                first = (r * nc + c) * n
                part = F.pad(y[first : first + n], (j, w - j - kw, 0, 0))
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


# ---------------------------------------------------------------------------------------
# any module: global average pooling sites found while it runs
# ---------------------------------------------------------------------------------------
def _global_pool_call(func, args, kwargs) -> str | None:
    """``"pool"`` for a keepdim global average over H and W of an NCHW tensor, ``"flat"`` for one
    without keepdim (TLC cannot stand in for it), None for anything else."""
    x = args[0] if args else kwargs.get("input")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        return None
    if func is F.adaptive_avg_pool2d:
        size = args[1] if len(args) > 1 else kwargs.get("output_size")
        return "pool" if size in (1, (1, 1), [1, 1]) else None
    if func in (torch.mean, torch.Tensor.mean):
        dims = args[1] if len(args) > 1 else kwargs.get("dim")
        keep = args[2] if len(args) > 2 else kwargs.get("keepdim", False)
        if dims is None or isinstance(dims, int):
            return None
        if {int(d) % 4 for d in dims} != {2, 3} or len(dims) != 2:
            return None
        return "pool" if keep else "flat"
    return None


class GlobalPoolSites(torch.overrides.TorchFunctionMode):
    """While active, finds (and optionally replaces) every global average pooling of a module.

    A site is an ``nn.AdaptiveAvgPool2d(1)`` / ``F.adaptive_avg_pool2d(x, 1)`` call or an
    ``x.mean((-2, -1), keepdim=True)`` (any spelling of the H and W axes), counted in call order,
    which is fixed for a given module and input size. Modes:

    * ``record``: the sites run unchanged; ``sizes`` gets each site's (h, w), ``flat`` counts the
      global means without keepdim (their result has no H, W for a local pool to fill).
    * ``eager``: site i runs :class:`LocalAvgPoolEager` with ``kernels[i]`` (TLC as upstream).
    * ``static``: site i runs ``pools[i]`` (a :class:`LocalAvgPoolStatic` built for its size), then
      its replicate padding.
    * ``replace``: site i returns ``replace(x)`` (e.g. synchronised statistics, deploy_kit/models/sync.py).

    The kernels come from a ``record`` run at the training size (:func:`tlc_kernels`), as upstream's
    converter freezes them with one forward pass at the training size.
    """

    def __init__(self, mode: str = "record", kernels=None, pools=None, replace=None):
        super().__init__()
        self.mode, self.kernels, self.pools, self.replace = mode, kernels or [], pools, replace
        self.sizes: list[tuple[int, int]] = []
        self.flat = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = _global_pool_call(func, args, kwargs)
        if kind == "flat":
            self.flat += 1
        if kind != "pool":
            return func(*args, **kwargs)
        x = args[0] if args else kwargs["input"]
        i = len(self.sizes)
        self.sizes.append((int(x.shape[-2]), int(x.shape[-1])))
        if self.mode == "record":
            return func(*args, **kwargs)
        if self.mode == "replace":
            return self.replace(x)
        if i >= len(self.kernels):
            raise RuntimeError(f"global pooling site {i} was not seen at the training size")
        if self.mode == "eager":
            return LocalAvgPoolEager(self.kernels[i])(x)
        pool = self.pools[i]
        return pool.finish(pool(x))


def record_global_pools(module: nn.Module, x: torch.Tensor) -> GlobalPoolSites:
    """Run ``module`` on ``x`` once (no grad) and return the sites found (``sizes``, ``flat``)."""
    sites = GlobalPoolSites("record")
    with torch.no_grad(), sites:
        module(x)
    return sites


def tlc_kernels(module: nn.Module, channels: int, train_size: tuple[int, int], base_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Each site's frozen TLC kernel: its feature size at the training size x base / train."""
    th, tw = train_size
    sites = record_global_pools(module, torch.zeros(1, channels, th, tw))
    return [(h * base_size[0] // th, w * base_size[1] // tw) for h, w in sites.sizes]
