"""Run a fixed-size engine/ONNX over an image of any size: overlapping tiles, smooth blending.

numpy only (this is the device half: no torch, onnx or click). The model takes a float32
(N, C, th, tw) batch of tiles and returns (N, C2, s*th, s*tw), s being its output scale (1 for
restoration, 2, 3, 4, ... for super-resolution); outputs are accumulated, weighted, into one
preallocated (C2, s*H, s*W) array, so memory stays flat whatever the number of tiles.
:class:`TileGrid` is the reusable form the streaming runtime uses; :func:`tile_run` the one-call form.

Layout: tile origins are evenly spread over each axis, first at 0 and last clamped to the border,
so every overlap is at least the requested one. An image smaller than the tile along an axis is
reflect-padded up to the tile (and cropped back). Blending weights are a raised cosine over the
requested overlap on the tile sides that face a neighbour and 1 elsewhere (never zero at the image
border), divided by the weight sum at each pixel. The weights are separable and so is their sum
over a grid of tiles, so each origin's normalised weight is two 1-D arrays, computed once.

Scale s > 1: tiles are cut in input space exactly as for s = 1 (origins, overlap, alignment to the
size multiple, reflect padding); blending happens in output space, where a tile at (y, x) lands at
(s*y, s*x), its overlap ramps are s*overlap long and the padding cropped is s times the input's.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .._deps import opencv
from ..errors import MissingDependencyError, UsageError
from ..manifest import Manifest
from .imageio import LUMA

# Chosen by measurement: benchmarks/bench_tiling.py, tiled ONNX Runtime (FP32, 128x128 engine,
# origins on the model's stride) vs the full-image PyTorch FP32 output on a 448x480 astronaut
# photo degraded as the model's task, trained demo weights. Seam PSNR (+-3 px band) in dB:
#   overlap                        0     8     16    32    48    64    96
#   NAFNet demo-w16 TLC (train 64) 40.5  49.3  53.6  59.0  63.1  65.9  67.1
#   Restormer demo-d12 TLC         44.3  47.4  50.6  54.7  53.1  52.7  52.4
#   Restormer demo-d12 (global)    44.0  47.3  49.6  50.5  49.9  49.9  49.9
#   NAFNet demo-w16 (global SCA)   39.4  43.3  43.1  43.1  43.4  43.4  43.2
#   pixel-work factor              1.22  1.22  1.52  1.90  2.29  3.20  10.1
# 32 px: seam >= 50.5 dB on every model that can match the full image (Restormer global included),
# a 5.5-14 dB margin over the 45 dB goal; 16 px leaves 4.6-8.6 dB, and full-size models (more
# levels, wider receptive field) see further than these demos; 48+ px costs 20-70 % more pixels
# for at most a few dB. Models with global statistics
# (NAFNet without TLC, Restormer's global channel attention) plateau (43 / 50 dB) whatever the
# overlap: each tile normalises by its own statistics; export them with TLC for tiled use.
DEFAULT_OVERLAP = 32

# Extra reflect padding around the whole image before tiling. 0 by default: the full-image model
# sees its convolutions' zero padding at the border, and so does a tile that touches the border,
# so border tiles already match the full image. Measured (same bench, overlap 32, border 16):
# overall PSNR 59.3 -> 47.7 dB (NAFNet TLC), 53.8 -> 50.3 dB (Restormer TLC), worse on every model.
DEFAULT_BORDER = 0

TileFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class TilingPlan:
    """Where the tiles go for one image size (also what callers print as progress totals).

    Attributes:
        height, width: the image size.
        tile: (th, tw) model input size.
        overlap: the requested overlap in pixels (actual overlaps are >= this).
        pad: (top, bottom, left, right) reflect padding added before tiling.
        positions: tile origins (y, x) in the padded image.
    """

    height: int
    width: int
    tile: tuple[int, int]
    overlap: int
    pad: tuple[int, int, int, int]
    positions: tuple[tuple[int, int], ...]

    @property
    def tiles(self) -> int:
        return len(self.positions)

    @property
    def padded_size(self) -> tuple[int, int]:
        t, b, l, r = self.pad
        return self.height + t + b, self.width + l + r

    @property
    def pixel_factor(self) -> float:
        """Pixels the model computes per output pixel: sum of tile areas / image area."""
        return self.tiles * self.tile[0] * self.tile[1] / float(self.height * self.width)

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Each tile as (y0, y1, x0, x1) in image coordinates, clipped to the image."""
        t, _, l, _ = self.pad
        th, tw = self.tile
        out = []
        for y, x in self.positions:
            y0, x0 = max(0, y - t), max(0, x - l)
            y1, x1 = min(self.height, y - t + th), min(self.width, x - l + tw)
            out.append((y0, y1, x0, x1))
        return out


def _starts(size: int, tile: int, overlap: int, align: int = 1) -> list[int]:
    """Evenly spread tile origins along one axis; first at 0, last at ``size - tile``.

    Interior origins are rounded down to multiples of ``align`` (the model's downsampling
    multiple): a U-Net with stride-2 levels is only shift-equivariant for shifts that are
    multiples of its total stride, so a tile starting at x = 59 computes different features
    from the full image at the same pixels. Measured (NAFNet demo TLC, 128 px tiles on
    448x480): 59.3 dB at overlap 32 with origins on multiples of 8, 40.7 dB at overlap 64 with
    origins that were not.
    """
    if size <= tile:
        return [0]
    step = tile - overlap
    n = math.ceil((size - tile) / step) + 1
    while True:
        starts = [(round(i * (size - tile) / (n - 1)) // align) * align for i in range(n - 1)] + [size - tile]
        if all(b - a <= step for a, b in zip(starts, starts[1:])):
            return sorted(set(starts))
        n += 1


def plan_tiles(height: int, width: int, tile: tuple[int, int], overlap: int, multiple: int = 1) -> list[tuple[int, int]]:
    """Tile origins (y, x) covering an image of ``height`` x ``width`` (each at least the tile);
    interior origins on multiples of ``multiple``.

    Raises:
        ValueError: overlap negative or not smaller than the tile.
    """
    th, tw = _check_tile(tile, overlap, multiple)
    return [(y, x) for y in _starts(height, th, overlap, multiple) for x in _starts(width, tw, overlap, multiple)]


def _check_tile(tile, overlap: int, multiple: int) -> tuple[int, int]:
    try:
        th, tw = (int(v) for v in tile)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"tile must be (height, width); got {tile!r}") from exc
    if th < 1 or tw < 1:
        raise ValueError(f"tile must be positive; got {th}x{tw}")
    if multiple < 1:
        raise ValueError(f"multiple must be >= 1; got {multiple}")
    if th % multiple or tw % multiple:
        raise ValueError(f"tile {th}x{tw} is not a multiple of the model's size multiple {multiple}")
    if overlap < 0 or overlap >= min(th, tw):
        raise ValueError(f"overlap must be in [0, {min(th, tw) - 1}] for a {th}x{tw} tile; got {overlap}")
    return th, tw


def make_plan(height: int, width: int, tile: tuple[int, int], overlap: int = DEFAULT_OVERLAP,
              border: int = DEFAULT_BORDER, multiple: int = 1) -> TilingPlan:
    """The full tiling plan (padding + tile origins) :func:`tile_run` uses for this image size.

    Raises:
        ValueError: bad tile/overlap/multiple, or a non-positive image size.
    """
    th, tw = _check_tile(tile, overlap, multiple)
    if height < 1 or width < 1:
        raise ValueError(f"image must be at least 1x1; got {height}x{width}")
    if border < 0:
        raise ValueError(f"border must be >= 0; got {border}")

    def axis(size: int, t: int) -> tuple[int, int]:
        short = max(0, t - (size + 2 * border))
        return border + short // 2, border + short - short // 2

    top, bottom = axis(height, th)
    left, right = axis(width, tw)
    hp, wp = height + top + bottom, width + left + right
    positions = tuple((y, x) for y in _starts(hp, th, overlap, multiple) for x in _starts(wp, tw, overlap, multiple))
    return TilingPlan(height, width, (th, tw), overlap, (top, bottom, left, right), positions)


def _ramp(length: int, overlap: int, rise: bool, fall: bool) -> np.ndarray:
    """1-D weight: raised cosine over ``overlap`` px at the sides facing a neighbour, 1 elsewhere.

    The ramp values are in (0, 1): never zero, so every pixel gets weight.
    """
    w = np.ones(length, dtype=np.float64)
    if overlap > 0:
        r = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap) + 0.5) / overlap)
        if rise:
            w[:overlap] = np.minimum(w[:overlap], r)
        if fall:
            w[length - overlap:] = np.minimum(w[length - overlap:], r[::-1])
    return w


def _axis_weights(starts: list[int], tile: int, size: int, overlap: int,
                  scale: int = 1) -> dict[int, tuple[np.ndarray, int, int]]:
    """Per origin on one axis (input space): its normalised weight in output space (float32, ``scale * tile``
    long; the tiles' weights sum to 1 at every output pixel), and the span [a, b) of the output tile where
    that weight is exactly 1 (no other tile covers it: copied, not blended)."""
    tile, size, overlap = scale * tile, scale * size, scale * overlap
    ramps = {s: _ramp(tile, overlap, s > 0, scale * s + tile < size) for s in starts}
    norm = np.zeros(size)
    for s, r in ramps.items():
        norm[scale * s:scale * s + tile] += r
    out = {}
    for s, r in ramps.items():
        w = (r / norm[scale * s:scale * s + tile]).astype(np.float32)
        ones = np.flatnonzero(w == 1.0)
        a, b = (int(ones[0]), int(ones[-1]) + 1) if ones.size else (0, 0)
        if ones.size and not np.all(w[a:b] == 1.0):  # never for one tile's ramp: its ones are contiguous
            a = b = 0
        out[s] = (w, a, b)
    return out


def _reflect_pad(image: np.ndarray, pad: tuple[int, int, int, int]) -> np.ndarray:
    """Reflect-pad an HWC image (axis 0 and 1); a 1-pixel axis can only repeat itself."""
    t, b, l, r = pad
    if not any(pad):
        return image
    h, w = image.shape[:2]
    rest = [(0, 0)] * (image.ndim - 2)
    out = np.pad(image, [(t, b), (0, 0), *rest], mode="reflect" if h > 1 else "edge")
    return np.pad(out, [(0, 0), (l, r), *rest], mode="reflect" if w > 1 else "edge")


_SCALE = {np.dtype(np.uint8): np.float32(255.0), np.dtype(np.uint16): np.float32(65535.0)}


class TileGrid:
    """The tiles of one image size through a model of fixed (N, C, th, tw) input, N tiles per call.

    The runtime's hot path, built once per image size and reused for every frame of that size: the
    tile origins (:func:`make_plan`), and per origin the blending weights already divided by their
    sum (so the blend is one multiply-add per pixel and no normalisation pass), with the span where
    a tile alone covers the image (weight exactly 1) copied rather than multiplied.

    With ``scale`` s the plan (tile origins, padding) stays in input space; accumulator, weights and
    result are in output space: s times the plan's sizes and coordinates.

    Args:
        height, width: the image size.
        tile: (th, tw), the model's input size; batch: N, the model's batch.
        overlap, multiple, border: as :func:`make_plan`.
        scale: the model's output size over its input size (super-resolution factor; 1 = same size).

    Raises:
        ValueError: bad tile, overlap, multiple, border, batch, scale or image size.
    """

    def __init__(self, height: int, width: int, tile: tuple[int, int], overlap: int = DEFAULT_OVERLAP,
                 multiple: int = 1, *, border: int = DEFAULT_BORDER, batch: int = 1, scale: int = 1):
        if batch < 1:
            raise ValueError(f"batch must be >= 1; got {batch}")
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
            raise ValueError(f"scale must be a positive integer; got {scale!r}")
        self.plan = make_plan(height, width, tile, overlap, border, multiple)
        self.multiple = multiple
        self.batch = batch
        self.scale = int(scale)
        th, tw = self.plan.tile
        hp, wp = self.plan.padded_size
        self._wy = _axis_weights(sorted({y for y, _ in self.plan.positions}), th, hp, overlap, self.scale)
        self._wx = _axis_weights(sorted({x for _, x in self.plan.positions}), tw, wp, overlap, self.scale)

    @property
    def out_tile(self) -> tuple[int, int]:
        """(s*th, s*tw): the spatial size of one model output."""
        return self.scale * self.plan.tile[0], self.scale * self.plan.tile[1]

    @property
    def out_size(self) -> tuple[int, int]:
        """(s*H, s*W): the restored image's size."""
        return self.scale * self.plan.height, self.scale * self.plan.width

    @property
    def out_padded_size(self) -> tuple[int, int]:
        """The accumulator's spatial size: the padded image's, times s."""
        hp, wp = self.plan.padded_size
        return self.scale * hp, self.scale * wp

    @property
    def calls(self) -> int:
        """Model calls per image: the tiles in batches of N, the last one padded."""
        return -(-self.plan.tiles // self.batch)

    def tiles_in(self, call: int) -> list[tuple[int, int]]:
        """The tile origins that model call ``call`` carries."""
        return list(self.plan.positions[call * self.batch:(call + 1) * self.batch])

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """The image as :meth:`fill` reads it: HWC, reflect-padded where smaller than a tile (a view otherwise).

        Args:
            image: HWC (or HW) uint8, uint16 or float32 (float in [0, 1]); colour channels only.
        """
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[:2] != (self.plan.height, self.plan.width):
            raise ValueError(f"image must be {self.plan.height}x{self.plan.width}xC; got shape {arr.shape}")
        return _reflect_pad(arr, self.plan.pad)

    def fill(self, padded: np.ndarray, call: int, out: np.ndarray) -> int:
        """Write the tiles of model call ``call`` into ``out`` (N, C, th, tw) float32, in [0, 1].

        Integer images are divided by 255 / 65535 as they are copied; a gray image feeds a
        3-channel model as three equal channels and an RGB image a 1-channel model as luma. Slots
        after the last tile of the last call are zeroed (the batch is static).

        Returns:
            how many slots hold tiles.
        """
        th, tw = self.plan.tile
        positions = self.tiles_in(call)
        scale = _SCALE.get(padded.dtype)
        channels = out.shape[1]
        for i, (y, x) in enumerate(positions):
            src = padded[y:y + th, x:x + tw].transpose(2, 0, 1)
            if src.shape[0] == 3 and channels == 1:
                src = np.tensordot(LUMA, src, axes=(0, 0))[None]
            if scale is None:
                np.copyto(out[i], src, casting="unsafe")
            else:
                np.divide(src, scale, out=out[i], casting="unsafe")
        if len(positions) < len(out):
            out[len(positions):] = 0.0
        return len(positions)

    def new_accumulator(self, channels: int) -> np.ndarray:
        """A zeroed (channels, s * padded H, s * padded W) float32 accumulator for :meth:`accumulate`."""
        return np.zeros((channels, *self.out_padded_size), dtype=np.float32)

    def accumulate(self, acc: np.ndarray, call: int, outputs: np.ndarray) -> None:
        """Blend the outputs (N, C2, s*th, s*tw) of model call ``call`` into ``acc`` (from :meth:`new_accumulator`).

        Calls must come in order 0, 1, ... for one image (each pixel's sum is then taken in one order,
        so a pipelined run equals a serial one bit for bit). The weighted frame of each tile is
        multiplied and added through this thread's scratch buffers (``out=``), so no temporary is
        allocated per tile; the products and sums are the same float32 operations, in the same order,
        as ``region += o * (wy * wx)``.

        Raises:
            ValueError: outputs of another spatial size than s times the tile.
        """
        th, tw = self.out_tile
        if outputs.ndim != 4 or outputs.shape[2:] != (th, tw):
            raise ValueError(_size_error(outputs.shape, self.plan.tile, self.scale))
        s = self.scale
        c = outputs.shape[1]
        for i, (y, x) in enumerate(self.tiles_in(call)):
            wy, ya, yb = self._wy[y]
            wx, xa, xb = self._wx[x]
            y, x = s * y, s * x
            o = outputs[i]
            region = acc[:, y:y + th, x:x + tw]
            # the span only this tile covers: copied; the frame around it: weighted sums
            if ya < yb and xa < xb:
                region[:, ya:yb, xa:xb] = o[:, ya:yb, xa:xb]
                for r0, r1 in ((0, ya), (yb, th)):
                    if r0 < r1:
                        w2 = np.multiply(wy[r0:r1, None], wx[None, :], out=_scratch("w2", (r1 - r0, tw)))
                        _madd(region[:, r0:r1], o[:, r0:r1], w2, _scratch("prod", (c, r1 - r0, tw)))
                for c0, c1 in ((0, xa), (xb, tw)):
                    if c0 < c1:
                        _madd(region[:, ya:yb, c0:c1], o[:, ya:yb, c0:c1], wx[None, c0:c1],
                              _scratch("prod", (c, yb - ya, c1 - c0)))
            else:
                w2 = np.multiply(wy[:, None], wx[None, :], out=_scratch("w2", (th, tw)))
                _madd(region, o, w2, _scratch("prod", (c, th, tw)))

    def rows_done(self, call: int) -> int:
        """How many rows of the restored image (s*H) are final once calls 0 .. ``call`` are blended.

        Tiles come in row-major order of their origins, so no later tile touches the rows above the
        next tile's origin: those rows can be quantised (:meth:`quantise` with ``rows``) while the
        tiles below are still in the model.
        """
        nxt = (call + 1) * self.batch
        h = self.out_size[0]
        if nxt >= self.plan.tiles:
            return h
        return min(h, max(0, self.scale * (self.plan.positions[nxt][0] - self.plan.pad[0])))

    def result(self, acc: np.ndarray) -> np.ndarray:
        """The blended float32 (C2, s*H, s*W) image (the padding cropped; values as the model gave them)."""
        t, _, l, _ = self.plan.pad
        t, l = self.scale * t, self.scale * l
        h, w = self.out_size
        return np.ascontiguousarray(acc[:, t:t + h, l:l + w])

    def quantise(self, acc: np.ndarray, out: np.ndarray, strip: int = 16,
                 rows: tuple[int, int] | None = None) -> np.ndarray:
        """Write the blended image into ``out`` (s*H, s*W, C2): uint8/uint16 rounded from [0, 1], float32
        clipped to [0, 1]; in strips of rows, so no full-frame temporary is made.

        Integers are ``floor(clip(v, 0, 1) * top + 0.5)`` in float32 (top = 255 or 65535), computed as
        ``clip(v * top + 0.5, 0.5, top + 0.5)`` and a truncating cast: the same bits, since rounding is
        monotonic and 0 and 1 map to 0.5 and top + 0.5 exactly (NaN stays NaN up to the cast, as before:
        tests/unit/test_tiling.py checks edge values against the clip-first form). The arithmetic runs on
        contiguous channel planes; only the integer strip is interleaved into ``out`` (OpenCV's ``merge``
        where it is installed, a strided numpy copy otherwise: the same bytes).

        Args:
            acc: the accumulator (:meth:`accumulate`).
            out: the destination (s*H, s*W, C2) uint8, uint16 or float32.
            strip: rows per strip (small enough that a strip's planes stay in the CPU cache).
            rows: (r0, r1): only these rows of the restored image (the rows :meth:`rows_done` says are final).

        Returns:
            ``out``.
        """
        t, _, l, _ = self.plan.pad
        t, l = self.scale * t, self.scale * l
        h, w = self.out_size
        r_start, r_stop = (0, h) if rows is None else (max(0, rows[0]), min(h, rows[1]))
        top = _SCALE.get(out.dtype)
        c = acc.shape[0]
        buf = _scratch("quantise", (c, min(strip, h), w))
        ints = None if top is None or c == 1 else _scratch(f"quantise-{out.dtype}", (c, min(strip, h), w), out.dtype)
        merge = _merge() if c > 1 else None
        for r0 in range(r_start, r_stop, strip):
            r1 = min(r_stop, r0 + strip)
            src = acc[:, t + r0:t + r1, l:l + w]
            part = buf[:, :r1 - r0]
            if top is None:
                np.clip(src, 0.0, 1.0, out=part)
                _interleave(part, out[r0:r1], merge)
                continue
            np.multiply(src, top, out=part)
            part += np.float32(0.5)
            np.clip(part, np.float32(0.5), top + np.float32(0.5), out=part)
            if c == 1:
                np.copyto(out[r0:r1, :, 0], part[0], casting="unsafe")
            else:
                np.copyto(ints[:, :r1 - r0], part, casting="unsafe")  # the contiguous cast the old path used
                _interleave(ints[:, :r1 - r0], out[r0:r1], merge)
        return out


_LOCAL = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """This thread's reusable buffer ``name``, at least ``shape`` (a view of that shape; contents undefined).

    Per thread, since one :class:`TileGrid` serves every stream of a Restorer; a few MB per thread at most.
    """
    bufs = _LOCAL.__dict__.setdefault("bufs", {})
    need = math.prod(shape)
    buf = bufs.get(name)
    if buf is None or buf.size < need or buf.dtype != dtype:
        buf = bufs[name] = np.empty(need, dtype)
    return buf[:need].reshape(shape)


def _madd(acc: np.ndarray, values: np.ndarray, weight: np.ndarray, tmp: np.ndarray) -> None:
    """``acc += values * weight`` through ``tmp`` (values' shape): the same float32 operations, no temporaries."""
    np.multiply(values, weight, out=tmp)
    np.add(acc, tmp, out=acc)


def _merge():
    """OpenCV's ``merge`` (planes -> interleaved, releases the GIL), or None without OpenCV."""
    try:
        return opencv().merge
    except MissingDependencyError:
        return None


def _interleave(planes: np.ndarray, out: np.ndarray, merge) -> None:
    """Copy (C, rows, W) planes into (rows, W, C) ``out`` of their dtype."""
    if merge is not None and out.flags.c_contiguous:
        got = merge(list(planes), dst=out)
        if not np.may_share_memory(got, out):  # OpenCV made a new array rather than fill ``out``
            out[...] = got
        return
    for ch in range(planes.shape[0]):  # per channel: ~4x faster than copying the transposed view at once
        out[..., ch] = planes[ch]


def tile_run(image: np.ndarray, fn: TileFn, tile: tuple[int, int], overlap: int = DEFAULT_OVERLAP,
             multiple: int = 1, *, border: int = DEFAULT_BORDER, batch: int = 1,
             progress: Optional[Callable[[int, int], None]] = None, scale: int = 1) -> np.ndarray:
    """Run ``fn`` (a fixed-size model) over ``image`` tile by tile and blend the outputs.

    Args:
        image: float32 (C, H, W), any H and W >= 1.
        fn: float32 (N, C, th, tw) -> (N, C2, s*th, s*tw) (restoration: s = 1, the same spatial size out).
        tile: (th, tw), the model's fixed input size.
        overlap: pixels shared by neighbouring tiles (raised-cosine blended).
        multiple: the model's size multiple (total stride); ``tile`` must be a multiple of it,
            and interior tile origins are placed on multiples of it (see :func:`_starts`).
        border: extra reflect padding around the whole image before tiling.
        batch: N, tiles per call of ``fn`` (the last call is padded with zeros).
        progress: called as ``progress(done, total)`` after each tile.
        scale: s, the model's output size over its input size (super-resolution factor).

    Returns:
        float32 (C2, s*H, s*W).

    Raises:
        ValueError: image not (C, H, W); bad tile, overlap, multiple or scale; ``fn`` returned a
            tile of another spatial size than s times the tile.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W); got shape {image.shape}")
    c, h, w = image.shape
    grid = TileGrid(h, w, tile, overlap, multiple, border=border, batch=batch, scale=scale)
    padded = grid.prepare(image.astype(np.float32, copy=False).transpose(1, 2, 0))
    buf = np.empty((batch, c, *grid.plan.tile), dtype=np.float32)
    acc, done = None, 0
    for call in range(grid.calls):
        n = grid.fill(padded, call, buf)
        out = np.asarray(fn(buf))
        if out.ndim != 4 or out.shape[0] != batch:
            raise ValueError(f"the model returned {out.shape} for a ({batch}, {c}, {grid.plan.tile[0]}, "
                             f"{grid.plan.tile[1]}) tile batch; tiling needs the same batch out, and "
                             f"{'the same spatial size' if scale == 1 else f'{scale} x the spatial size'}")
        if acc is None:
            acc = grid.new_accumulator(out.shape[1])
        grid.accumulate(acc, call, out)
        done += n
        if progress is not None:
            for i in range(done - n, done):
                progress(i + 1, grid.plan.tiles)
    return grid.result(acc)


def _size_error(shape: tuple[int, ...], tile: tuple[int, int], scale: int) -> str:
    """The message for a model output of the wrong spatial size (naming the scale it seems to have)."""
    th, tw = tile
    want = "the same spatial size" if scale == 1 else f"{scale} x the tile's spatial size"
    got = (f"the model returned {tuple(shape)} for (N, C, {th}, {tw}) tiles; tiling needs {want} out "
           f"({scale * th}x{scale * tw})")
    if len(shape) == 4 and shape[2] % th == 0 and shape[3] % tw == 0 and shape[2] // th == shape[3] // tw >= 1:
        k = shape[2] // th
        return f"{got}: the model upscales by {k} but its manifest says scale {scale}; re-export it with scale {k}"
    return got


# what `run` and the Triton tiled model say when the graph's context is the whole input (manifest
# "global_context", e.g. NAFNet without TLC)
GLOBAL_CONTEXT_NOTE = ("this graph pools over its whole input, so tiles cannot match the full-image output exactly "
                       "(measured ~43 dB seams on NAFNet without TLC); export it with --tlc for tiled use")


def tiling_defaults(manifest: Manifest, overlap: int | None) -> tuple[int, int]:
    """(overlap, multiple) for tiling images through a fixed-size model (``deploy-kit run``, Triton).

    The overlap defaults to :data:`DEFAULT_OVERLAP`, capped at a quarter tile for small engines; tiles
    start on the model's size multiple, so each sees the downsampling grid the whole image does.

    Raises:
        UsageError: an overlap the engine size cannot take.
    """
    _, _, th, tw = manifest.input_shape
    if overlap is None:  # the measured default, capped at a quarter tile for small engines
        overlap = min(DEFAULT_OVERLAP, min(th, tw) // 4)
    if overlap < 0 or 2 * overlap >= min(th, tw):
        raise UsageError(f"--overlap must be between 0 and {min(th, tw) // 2 - 1} for a {th}x{tw} engine; got {overlap}")
    multiple = manifest.pad_multiple
    return overlap, multiple if th % multiple == 0 and tw % multiple == 0 else 1
