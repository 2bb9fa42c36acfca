"""Tiles that see the whole image's statistics: the runtime half of synchronised statistics (torch-free).

A model with global context (NAFNet's channel attention without TLC, Restormer's channel attention)
normalises each tile by that tile's own statistics, so tiles cannot equal the full image. Its sync
graph (deploy_kit/models/sync.py) outputs each site's statistics over the tile's *core* and takes
whole-image statistics in. Here:

* :func:`core_boxes` partitions the image among the tiles: along each axis the boundary between
  two neighbours is the middle of their overlap, on the model's size multiple; every pixel belongs
  to exactly one tile's core (halos and reflect padding to none).
* :func:`sync_tile_run` runs the tiles ``passes`` times. Pass 1 uses each tile's own statistics
  (``use`` 0: the plain tiled result) and collects core statistics; their sum, scaled by tile area /
  image area, is the whole-image mean of each statistic, fed back (``use`` 1) in the next pass, which
  collects again. Only the last pass's outputs are blended (:class:`~deploy_kit.runtime.tiling.TileGrid`).

The statistics are exact sums over the image of what the tiles compute; they equal the full image's
where each core's features equal the full image's, i.e. where the halo covers the receptive field of
the layers before a site. Context modes: ``tile`` (today's tiles) and ``sync[:passes]``.
"""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from ..errors import UsageError
from .tiling import DEFAULT_BORDER, TileGrid, TilingPlan

SyncFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
DEFAULT_PASSES = 2
#: the sync graph's I/O names, in order (deploy_kit/models/sync.py exports them)
SYNC_INPUTS = ("input", "mask", "stats_in", "use")
SYNC_OUTPUTS = ("output", "stats_out")


def graph_fn(runner) -> SyncFn:
    """A :data:`SyncFn` running a sync graph on ``runner`` (an ONNX Runtime runner: ``run_feeds``)."""
    def run(x: np.ndarray, mask: np.ndarray, stats: np.ndarray, use: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out, stats_out = runner.run_feeds(dict(zip(SYNC_INPUTS, (x, mask, stats, use))))
        return out, stats_out

    return run


def parse_context(text: str | None) -> tuple[str, int]:
    """``tile`` -> ("tile", 1); ``sync`` -> ("sync", DEFAULT_PASSES); ``sync:N`` -> ("sync", N).

    Raises:
        UsageError: anything else (one line).
    """
    if text is None or text == "tile":
        return "tile", 1
    kind, _, passes = text.partition(":")
    if kind == "sync":
        if not passes:
            return "sync", DEFAULT_PASSES
        if passes.isdigit() and 1 <= int(passes) <= 16:
            return "sync", int(passes)
    raise UsageError(f"--context must be 'tile', 'sync' or 'sync:N' with N passes from 1 to 16; got {text!r}")


def _axis_cores(starts: list[int], tile: int, lo: int, hi: int, multiple: int) -> dict[int, tuple[int, int]]:
    """Per tile origin, its core [a, b) along one axis (padded coordinates); the cores partition [lo, hi)."""
    bounds = [lo]
    for s0, s1 in zip(starts, starts[1:]):
        mid = (s1 + s0 + tile) // 2 // multiple * multiple
        b = min(max(mid, s1), s0 + tile)  # inside both tiles
        bounds.append(min(max(b, bounds[-1]), hi))
    bounds.append(hi)
    return {s: (max(lo, bounds[i]), min(hi, max(bounds[i + 1], lo))) for i, s in enumerate(starts)}


def core_boxes(plan: TilingPlan, multiple: int = 1) -> list[tuple[int, int, int, int]]:
    """Each tile's core as (y0, y1, x0, x1) in that tile's own coordinates (empty when y0 == y1 or x0 == x1).

    The cores of all tiles partition the image (not its reflect padding): every image pixel is in
    exactly one core.
    """
    t, _, l, _ = plan.pad
    th, tw = plan.tile
    ys = sorted({y for y, _ in plan.positions})
    xs = sorted({x for _, x in plan.positions})
    cy = _axis_cores(ys, th, t, t + plan.height, multiple)
    cx = _axis_cores(xs, tw, l, l + plan.width, multiple)
    return [(cy[y][0] - y, cy[y][1] - y, cx[x][0] - x, cx[x][1] - x) for y, x in plan.positions]


def pad_like_model(image: np.ndarray, pad: str, multiple: int, axes: tuple[int, int] = (0, 1)) -> np.ndarray:
    """Pad an image bottom/right up to ``multiple`` as the model pads a whole image itself
    (``zero``: NAFNet, ``reflect``: Restormer, ``none``: not at all), so the tiles and the whole-image
    statistics see what the full-image model sees; crop the output back afterwards.
    """
    if pad == "none" or multiple <= 1:
        return image
    h, w = image.shape[axes[0]], image.shape[axes[1]]
    widths = [(0, 0)] * image.ndim
    widths[axes[0]], widths[axes[1]] = (0, (-h) % multiple), (0, (-w) % multiple)
    if widths[axes[0]] == (0, 0) and widths[axes[1]] == (0, 0):
        return image
    return np.pad(image, widths, mode="constant" if pad == "zero" else "reflect")


def run_passes(grid: TileGrid, padded: np.ndarray, fn: SyncFn, *, passes: int, stats: int, channels: int,
               on_output: Callable[[int, np.ndarray], None],
               on_pass: Optional[Callable[[int, np.ndarray], None]] = None) -> None:
    """The sync passes over one prepared image; the last pass's outputs go to ``on_output(call, output)``.

    Args:
        grid: the image's tiling; padded: :meth:`TileGrid.prepare`'s result.
        fn: (input (N, C, th, tw), mask (N, 1, th, tw), stats_in (N, S), use (N, 1)) ->
            (output (N, C2, s*th, s*tw), stats_out (N, S)), float32.
        passes: 1 = each tile's own statistics (the plain tiled result); each further pass feeds
            back the whole-image statistics the previous one collected.
        stats: S, the graph's statistics length; channels: C.
        on_pass: called as ``on_pass(pass_index, estimate)`` after each pass that collects.
    """
    batch = grid.batch
    th, tw = grid.plan.tile
    cores = core_boxes(grid.plan, grid.multiple)
    x_buf = np.empty((batch, channels, th, tw), np.float32)
    masks = np.zeros((batch, 1, th, tw), np.float32)
    estimate = np.zeros(stats, np.float32)
    area = float(grid.plan.height * grid.plan.width)
    for p in range(passes):
        last = p == passes - 1
        total = np.zeros(stats, np.float64)
        stats_in = np.ascontiguousarray(np.broadcast_to(estimate, (batch, stats)))
        use = np.full((batch, 1), 0.0 if p == 0 else 1.0, np.float32)
        for call in range(grid.calls):
            n = grid.fill(padded, call, x_buf)
            masks[:] = 0.0
            for i in range(n):
                y0, y1, x0, x1 = cores[call * batch + i]
                masks[i, 0, y0:y1, x0:x1] = 1.0
            out, s_out = fn(x_buf, masks, stats_in, use)
            if last:
                on_output(call, np.asarray(out, np.float32))
            else:
                total += np.asarray(s_out, np.float64)[:n].sum(0)
        if not last:
            # a tile's statistics are means over its own pixels: x (tile area / image area) sums them to the image's
            estimate = (total * (th * tw / area)).astype(np.float32)
            if on_pass is not None:
                on_pass(p, estimate)


def sync_tile_run(image: np.ndarray, fn: SyncFn, tile: tuple[int, int], overlap: int, multiple: int = 1, *,
                  passes: int = DEFAULT_PASSES, stats: int, batch: int = 1, scale: int = 1,
                  border: int = DEFAULT_BORDER, on_pass: Optional[Callable[[int, np.ndarray], None]] = None,
                  pad: tuple[str, int] = ("none", 1)) -> np.ndarray:
    """Tile ``image`` (float32 (C, H, W)) through a sync graph ``passes`` times (:func:`run_passes`);
    the last pass's outputs, blended: float32 (C2, s*H, s*W).

    Args:
        tile, overlap, multiple, batch, scale, border: as :func:`deploy_kit.runtime.tiling.tile_run`.
        pad: (mode, multiple) of the model's own padding (:func:`pad_like_model`; the manifest's ``sync_pad``).
    """
    image = np.asarray(image, dtype=np.float32)
    _, h0, w0 = image.shape
    image = pad_like_model(image, pad[0], pad[1], axes=(1, 2))
    c, h, w = image.shape
    grid = TileGrid(h, w, tile, overlap, multiple, border=border, batch=batch, scale=scale)
    padded = grid.prepare(image.transpose(1, 2, 0))
    acc: list[np.ndarray] = []

    def blend(call: int, out: np.ndarray) -> None:
        if not acc:
            acc.append(grid.new_accumulator(out.shape[1]))
        grid.accumulate(acc[0], call, out)

    run_passes(grid, padded, fn, passes=passes, stats=stats, channels=c, on_output=blend, on_pass=on_pass)
    return np.ascontiguousarray(grid.result(acc[0])[:, : scale * h0, : scale * w0])
