"""Run a fixed-size engine/ONNX over an image of any size: overlapping tiles, smooth blending.

numpy only (this is the device half: no torch, onnx or click). The model function takes a
float32 (1, C, th, tw) tile and returns (1, C2, th, tw); outputs are accumulated, weighted, into
one preallocated (C2, H, W) array, so memory stays flat whatever the number of tiles.

Layout: tile origins are evenly spread over each axis, first at 0 and last clamped to the border,
so every overlap is at least the requested one. An image smaller than the tile along an axis is
reflect-padded up to the tile (and cropped back). Blending weights are a raised cosine over the
requested overlap on the tile sides that face a neighbour and 1 elsewhere (never zero at the image
border), and the sum is normalised by the weight sum. The weights are separable and so is their
sum over a grid of tiles, so normalising needs two 1-D arrays, not an (H, W) one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

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


# Kept for callers that think of the plan as statistics (tiles, pixel_factor).
TilingStats = TilingPlan


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


def _reflect_pad(image: np.ndarray, pad: tuple[int, int, int, int]) -> np.ndarray:
    t, b, l, r = pad
    if not any(pad):
        return image
    _, h, w = image.shape
    # numpy's reflect needs at least 2 samples; a 1-pixel axis can only repeat itself
    mode_h = "reflect" if h > 1 else "edge"
    mode_w = "reflect" if w > 1 else "edge"
    out = np.pad(image, ((0, 0), (t, b), (0, 0)), mode=mode_h)
    return np.pad(out, ((0, 0), (0, 0), (l, r)), mode=mode_w)


def tile_run(image: np.ndarray, fn: TileFn, tile: tuple[int, int], overlap: int = DEFAULT_OVERLAP,
             multiple: int = 1, *, border: int = DEFAULT_BORDER,
             progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """Run ``fn`` (a fixed-size model) over ``image`` tile by tile and blend the outputs.

    Args:
        image: float32 (C, H, W), any H and W >= 1.
        fn: float32 (1, C, th, tw) -> (1, C2, th, tw) (restoration: same spatial size out).
        tile: (th, tw), the model's fixed input size.
        overlap: pixels shared by neighbouring tiles (raised-cosine blended).
        multiple: the model's size multiple (total stride); ``tile`` must be a multiple of it,
            and interior tile origins are placed on multiples of it (see :func:`_starts`).
        border: extra reflect padding around the whole image before tiling.
        progress: called as ``progress(done, total)`` after each tile.

    Returns:
        float32 (C2, H, W).

    Raises:
        ValueError: image not (C, H, W); bad tile, overlap or multiple; ``fn`` returned a
            tile of another spatial size.
    """
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"image must be (C, H, W); got shape {image.shape}")
    _, h, w = image.shape
    plan = make_plan(h, w, tile, overlap, border, multiple)
    th, tw = plan.tile
    padded = _reflect_pad(image.astype(np.float32, copy=False), plan.pad)
    hp, wp = plan.padded_size
    ys = sorted({y for y, _ in plan.positions})
    xs = sorted({x for _, x in plan.positions})
    wy = {y: _ramp(th, overlap, y > 0, y + th < hp) for y in ys}
    wx = {x: _ramp(tw, overlap, x > 0, x + tw < wp) for x in xs}
    # the sum of separable weights over a full grid of tiles is separable too
    norm_y = np.zeros(hp)
    norm_x = np.zeros(wp)
    for y in ys:
        norm_y[y:y + th] += wy[y]
    for x in xs:
        norm_x[x:x + tw] += wx[x]

    acc = None
    total = plan.tiles
    for i, (y, x) in enumerate(plan.positions):
        out = np.asarray(fn(np.ascontiguousarray(padded[None, :, y:y + th, x:x + tw])))
        if out.ndim != 4 or out.shape[0] != 1 or out.shape[2:] != (th, tw):
            raise ValueError(f"the model returned {out.shape} for a (1, C, {th}, {tw}) tile; tiling needs the same spatial size out")
        if acc is None:
            acc = np.zeros((out.shape[1], hp, wp), dtype=np.float32)
        weight = (wy[y][:, None] * wx[x][None, :]).astype(np.float32)
        acc[:, y:y + th, x:x + tw] += out[0] * weight
        if progress is not None:
            progress(i + 1, total)
    acc /= (norm_y[:, None] * norm_x[None, :]).astype(np.float32)
    t, _, l, _ = plan.pad
    return np.ascontiguousarray(acc[:, t:t + h, l:l + w])


# what `run` and the Triton tiled model say when the graph's context is the whole input (manifest
# "global_context", e.g. NAFNet without TLC)
GLOBAL_CONTEXT_NOTE = ("this graph pools over its whole input, so tiles cannot match the full-image output exactly "
                       "(measured ~43 dB seams on NAFNet without TLC); export it with --tlc for tiled use")


def tiling_defaults(manifest: dict, overlap: int | None) -> tuple[int, int]:
    """(overlap, multiple) for tiling images through a fixed-size model (``deploy-kit run``, Triton).

    The overlap defaults to :data:`DEFAULT_OVERLAP`, capped at a quarter tile for small engines; tiles
    start on the model's size multiple, so each sees the downsampling grid the whole image does.

    Raises:
        UsageError: an overlap the engine size cannot take.
    """
    from ..errors import UsageError

    _, _, th, tw = manifest["input_shape"]
    if overlap is None:  # the measured default, capped at a quarter tile for small engines
        overlap = min(DEFAULT_OVERLAP, min(th, tw) // 4)
    if overlap < 0 or 2 * overlap >= min(th, tw):
        raise UsageError(f"--overlap must be between 0 and {min(th, tw) // 2 - 1} for a {th}x{tw} engine; got {overlap}")
    multiple = int(manifest["input"].get("pad_multiple", 1))
    return overlap, multiple if th % multiple == 0 and tw % multiple == 0 else 1
