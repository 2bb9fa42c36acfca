"""``deploy-kit seam-check``: how far tiled inference is from the full-image PyTorch output.

A fixed-size ONNX runs over a photo several times its size through :mod:`deploy_kit.runtime.tiling`;
the PyTorch FP32 reference, rebuilt from the ONNX's metadata exactly as ``verify`` does, runs on the
whole photo at once. Reported: overall PSNR (data range 1), PSNR in a band around every tile
boundary ("seam PSNR") and elsewhere, the worst boundary (where), and the times. A super-resolution
graph (metadata ``scale`` S) is compared in output space: S times the photo, tile boundaries and band.

Build-machine side: torch is imported inside functions only.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import backends
from .artifact import artifact_request, source_onnx_outputs
from .data.samples import available_samples, fit, sample_images
from .errors import UsageError
from .manifest import output_scale
from .memory import map_large_allocations
from .metrics import psnr_from_mse
from .models import get_adapter
from .onnxmeta import read_metadata
from .reference import reference_runner
from .runtime.context import graph_fn, parse_context, sync_tile_run
from .runtime.imageio import read_image, to_model_channels
from .runtime.tiling import DEFAULT_OVERLAP, TilingPlan, make_plan, tile_run

SEAM_BAND = 3  # half-width in pixels of the band measured around each tile boundary
# default photo: 3.5 x 3.75 engine heights/widths; kept a multiple of the engine size / 8 so the
# full-image reference does not zero-pad its own border to the model's multiple (that padding is a
# border effect of the reference, not a seam, and it showed up as the "worst seam" at 422x474)
PHOTO_SCALE = (3.5, 3.75)


@dataclass
class SeamResult:
    """One tiled run against the full-image reference.

    Attributes:
        psnr: tiled vs full image over all pixels (dB, data range 1).
        seam_psnr / other_psnr: inside / outside the band of ``band`` px around tile boundaries.
        worst_seam: the tile boundary segment with the largest error: ``axis`` ("y" for a horizontal
            boundary at row ``at``, "x" for a vertical one at column ``at``), ``span`` along the
            boundary, its ``psnr`` and ``max_abs``, and ``peak`` (y, x) of its largest error.
        tiled_s: tiled time on ``backend``; tile_s: one model call of `batch` tiles (median); reference_s: full-image PyTorch.
        time_factor: tiled time / (tiles x single-tile time), i.e. measured time per output pixel
            over (single-tile time per pixel x pixel_factor); 1.0 = no tiling overhead.
        scale: the graph's output scale S; ``image_size``, ``overlap``, ``border`` and ``band`` are in
            input pixels, ``worst_seam`` in output pixels (S times them).
        context: ``tile`` (each tile its own statistics) or ``sync:N`` (synchronised, N passes).
        backend: the graph runner that ran the tiles (a :mod:`deploy_kit.backends` name).
    """

    onnx: str
    model: str
    variant: str
    tlc: bool
    engine_size: tuple[int, int]
    image_size: tuple[int, int]
    overlap: int
    border: int
    tiles: int
    pixel_factor: float
    psnr: float
    seam_psnr: float
    other_psnr: float
    max_abs: float
    band: int
    worst_seam: dict = field(default_factory=dict)
    tiled_s: float = 0.0
    tile_s: float = 0.0
    reference_s: float = 0.0
    time_factor: float = 0.0
    photo: str = ""
    scale: int = 1
    context: str = "tile"
    backend: str = ""

    def line(self) -> str:
        w = self.worst_seam
        where = (f"worst seam {w['axis']}={w['at']} ({'x' if w['axis'] == 'y' else 'y'} {w['span'][0]}-{w['span'][1]}) "
                 f"{w['psnr']:.1f} dB, peak at y={w['peak'][0]} x={w['peak'][1]}") if w else "no interior seam (one tile)"
        sr = f" (x{self.scale} out)" if self.scale > 1 else ""
        sr += f", context {self.context}" if self.context != "tile" else ""
        return (f"{self.model} {self.variant}{' TLC' if self.tlc else ''} {self.engine_size[0]}x{self.engine_size[1]} "
                f"on {self.image_size[0]}x{self.image_size[1]}{sr}, overlap {self.overlap}: {self.tiles} tiles "
                f"(x{self.pixel_factor:.2f} pixels), PSNR {self.psnr:.2f} dB, seam {self.seam_psnr:.2f} dB, "
                f"elsewhere {self.other_psnr:.2f} dB, max abs {self.max_abs:.2e}; {where}; "
                f"tiled {self.tiled_s:.2f} s (x{self.time_factor:.2f} of tile cost), reference {self.reference_s:.2f} s")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def seam_metrics(ref: np.ndarray, out: np.ndarray, boxes, band: int = SEAM_BAND) -> dict:
    """PSNR overall / in the seam band / elsewhere, and the worst boundary segment.

    Args:
        ref, out: (C, H, W) full-image and tiled outputs.
        boxes: tiles as (y0, y1, x0, x1) in the outputs' coordinates (``TilingPlan.boxes()``, times the
            model's scale).
        band: half-width of the band around each interior tile edge.
    """
    _, h, w = ref.shape
    err = (np.asarray(out, np.float64) - np.asarray(ref, np.float64)) ** 2
    err_px = err.mean(axis=0)
    mask = np.zeros((h, w), dtype=bool)
    segments = []  # (axis, at, span, y-slice, x-slice)
    for y0, y1, x0, x1 in boxes:
        for at, interior in ((y0, y0 > 0), (y1, y1 < h)):
            if interior:
                segments.append(("y", at, (x0, x1), slice(max(0, at - band), min(h, at + band)), slice(x0, x1)))
        for at, interior in ((x0, x0 > 0), (x1, x1 < w)):
            if interior:
                segments.append(("x", at, (y0, y1), slice(y0, y1), slice(max(0, at - band), min(w, at + band))))
    for *_, ys, xs in segments:
        mask[ys, xs] = True
    worst = {}
    worst_mse = -1.0
    for axis, at, span, ys, xs in segments:
        m = float(err_px[ys, xs].mean())
        if m > worst_mse:
            worst_mse = m
            sub = err_px[ys, xs]
            py, px = np.unravel_index(int(np.argmax(sub)), sub.shape)
            worst = {"axis": axis, "at": int(at), "span": [int(span[0]), int(span[1])],
                     "psnr": psnr_from_mse(m),
                     "max_abs": float(np.sqrt(sub.max())) if sub.size else 0.0,
                     "peak": [int(ys.start + py), int(xs.start + px)]}

    def band_psnr(sel: np.ndarray) -> float:
        if not sel.any():
            return float("nan")
        return psnr_from_mse(float(err_px[sel].mean()))

    mse = float(err_px.mean())
    return {"psnr": psnr_from_mse(mse),
            "seam_psnr": band_psnr(mask), "other_psnr": band_psnr(~mask),
            "max_abs": float(np.abs(np.asarray(out, np.float64) - ref).max()), "worst_seam": worst}


def tiled_vs_full(x: np.ndarray, ref: np.ndarray, fn, tile: tuple[int, int], overlap: int, multiple: int = 1, *,
                  border: int = 0, batch: int = 1, scale: int = 1,
                  band: int = SEAM_BAND, tiler=None) -> tuple[TilingPlan, np.ndarray, dict]:
    """Tile ``x`` through ``fn`` and measure the result against the full-image output ``ref`` (:func:`seam_metrics`).

    Args:
        x: the photo, float32 (C, H, W).
        ref: the model's full-image output, (C2, S*H, S*W) for output scale S.
        fn: one model call, (N, C, th, tw) -> (N, C2, S*th, S*tw).
        tile, overlap, multiple, border, batch: as :func:`deploy_kit.runtime.tiling.tile_run` (input pixels).
        scale: S; tile boundaries and the seam band (``band`` input pixels: S*band output pixels) are
            measured in output space.
        tiler: ``tiler(x) -> tiled output`` instead of :func:`~deploy_kit.runtime.tiling.tile_run` with
            ``fn`` (synchronised statistics: :func:`~deploy_kit.runtime.context.sync_tile_run`).

    Returns:
        (the tiling plan, the tiled output, the metrics).

    Raises:
        UsageError: overlap or border out of range for this engine size; a reference of another size
            than S times the photo.
    """
    _, H, W = x.shape
    try:
        plan = make_plan(H, W, tile, overlap, border, multiple)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if ref.shape[1:] != (scale * H, scale * W):
        raise UsageError(f"the full-image output is {ref.shape[1]}x{ref.shape[2]} for a {H}x{W} photo; a model of scale "
                         f"{scale} gives {scale * H}x{scale * W} (is the artifact's scale right?)")
    out = tiler(x) if tiler is not None else tile_run(x, fn, tile, overlap, multiple, border=border, batch=batch,
                                                      scale=scale)
    boxes = [tuple(scale * v for v in box) for box in plan.boxes()]
    return plan, out, seam_metrics(ref, out, boxes, scale * band)


def open_graph_runner(backend: str, path: str, threads: int = 0):
    """A runner of the graph runner ``backend`` (:func:`deploy_kit.backends.names` with ``engines=False``) on ``path``.

    Args:
        backend: the backend's registry name.
        path: an ONNX graph.
        threads: inference threads (0: the backend's default).

    Returns:
        the backend's :class:`deploy_kit.runners.base.Runner`.

    Raises:
        UsageError: an unknown backend or an engine backend (seam-check tiles a graph), one that cannot
            run here (why, from :meth:`~deploy_kit.backends.base.Backend.can_run`), or it cannot open the graph.
    """
    b = backends.get(backend)
    if b.engine:
        raise UsageError(f"seam-check runs a graph; {b.name} runs built engines: choose one of "
                         f"{', '.join(backends.names(engines=False))}")
    ok, why = b.can_run()
    if not ok:
        raise UsageError(f"cannot run {b.name} here: {why}")
    values: dict = {"threads": threads}
    if b.name == backends.ONNXRUNTIME:
        # seam-check has always measured ONNX Runtime's CPU provider (the registry's ``auto`` would take
        # its CUDA provider where onnxruntime-gpu is installed and change the numbers and times)
        values["device"] = "cpu"
    return b.open_runner(path, b.run_options(**values))


class SeamChecker:
    """Prepared once (reference output, ONNX runner), measured for any number of overlaps.

    Args:
        onnx_path: a deploy-kit ONNX (its metadata names model, variant, TLC, weights, seed).
        weights: checkpoint overriding the metadata's path (e.g. the file moved).
        height, width: photo size (default 3.5 x 3.75 times the engine size).
        image: a photo to use instead of the bundled sample (used as is, not degraded).
        threads: the runner's inference threads (0 = its default).
        backend: the graph runner that runs the tiles (``backends.names(engines=False)``; default ONNX
            Runtime on the CPU).

    Attributes:
        sync_note: why the sync graph beside the ONNX is not measured on this backend ("" when it is,
            or when there is none).

    Raises:
        UsageError: not a deploy-kit ONNX, not an image model, weights gone or changed, bad image; a
            backend that is not a graph runner or cannot run here.
    """

    def __init__(self, onnx_path: str, weights: Optional[str] = None, height: Optional[int] = None,
                 width: Optional[int] = None, image: Optional[str] = None, threads: int = 0,
                 backend: str = backends.ONNXRUNTIME):
        from .models.checkpoint import load_request  # torch

        if not os.path.isfile(onnx_path):
            raise UsageError(f"ONNX file not found: {onnx_path}")
        req, meta = artifact_request(onnx_path, weights)
        self.scale = output_scale(meta, onnx_path)
        adapter = get_adapter(req.model)
        if adapter.output_kind(req) != "image" or len(adapter.output_names(req)) != 1:
            raise UsageError(f"seam-check needs an image-to-image model; {req.model} with these options outputs {adapter.output_kind(req)}")
        th, tw = req.height, req.width
        H = height or max(8, round(PHOTO_SCALE[0] * th / 8) * 8)
        W = width or max(8, round(PHOTO_SCALE[1] * tw / 8) * 8)
        if H < 1 or W < 1:
            raise UsageError(f"--height/--width must be positive; got {H}x{W}")
        map_large_allocations()  # the reference is a full-size forward pass; see memory.py
        self.backend = backends.get(backend).name
        self.runner = open_graph_runner(self.backend, onnx_path, threads)
        if self.runner.input_name != adapter.input_names(req)[0]:  # the registry's runners feed the first input
            self.runner.close()
            raise UsageError(f"{onnx_path}: its first input is '{self.runner.input_name}', not the image input "
                             f"'{adapter.input_names(req)[0]}'; re-export it with deploy-kit")
        precision = getattr(self.runner, "precision", None)  # OpenVINO: the precision that compiled
        self.runs_on = f"{self.backend} ({self.runner.device.upper()}{', ' + precision.upper() if precision else ''})"
        ch = int(self.runner.input_shape[1])
        self.batch = int(self.runner.input_shape[0])  # tiles per call: the graph's static batch
        full_req = dataclasses.replace(req, height=H, width=W)
        degradation = adapter.input_degradation(req)
        if image is None:
            self.x = sample_images(1, ch, H, W, degradation, req.seed)[0][0]
            self.photo = f"{os.path.basename(available_samples()[0])} fitted to {H}x{W}" + (f" + {degradation} (seed {req.seed})" if degradation else "")
        else:
            if not os.path.isfile(image):
                raise UsageError(f"image not found: {image}")
            arr, _ = read_image(image)
            arr, _ = to_model_channels(arr, ch)
            if height or width:
                arr = fit(arr, H, W)
            H, W = arr.shape[:2]
            full_req = dataclasses.replace(req, height=H, width=W)
            self.x = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
            self.photo = f"{os.path.basename(image)} ({H}x{W}, as is)"
        t0 = time.perf_counter()
        if req.source is not None and req.source.kind == "onnx":  # your graph at the full size is the reference
            loaded_model = None
            refs, self.reference = source_onnx_outputs(full_req, [self.x[None]])
            self.ref = refs[0][0][0].astype(np.float32)
        else:
            loaded = load_request(adapter, req)
            ref_runner = reference_runner(adapter, loaded.model, full_req)
            self.ref = ref_runner.run(self.x[None])[0][0].astype(np.float32)
            loaded_model = loaded.model
            self.reference = "PyTorch FP32"
            del ref_runner, loaded
        self.reference_s = time.perf_counter() - t0
        self.onnx_path, self.req, self.tile = onnx_path, req, (th, tw)
        # tile origins on the model's stride (NAFNet: 2**levels, Restormer: 8), when the engine size allows
        stride = int(getattr(loaded_model, "padder_size", 0) or (req.source.pad_multiple if req.source else adapter.spec.pad_multiple) or 1)
        self.multiple = stride if th % stride == 0 and tw % stride == 0 else 1
        self.sync_path = onnx_path[: -len(".onnx")] + ".sync.onnx"  # a global-context model's, when exported
        self.sync_runner, self.sync_note = None, ""
        if os.path.isfile(self.sync_path):
            if hasattr(self.runner, "run_feeds"):  # graph_fn feeds the sync graph's four inputs by name
                self.sync_runner = open_graph_runner(self.backend, self.sync_path, threads)
            else:  # the same backend's runner on the sync graph would lack it too: not opened
                self.sync_note = (f"the {self.backend} runner feeds one input and the sync graph "
                                  f"{os.path.basename(self.sync_path)} takes four; --backend {backends.ONNXRUNTIME} "
                                  "measures the sync contexts")
        self.tile_s = self._time_one_tile()

    def _time_one_tile(self, repeats: int = 3) -> float:
        """Median seconds of one model call (``batch`` tiles)."""
        th, tw = self.tile
        n = self.batch
        x = np.repeat(self.x[None, :, :th, :tw], n, axis=0) if self.x.shape[1] >= th and self.x.shape[2] >= tw \
            else np.zeros((n, self.x.shape[0], th, tw), np.float32)
        self.runner.run(x)  # warm-up
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            self.runner.run(x)
            times.append(time.perf_counter() - t0)
        return float(np.median(times))

    def measure(self, overlap: int, border: int = 0, band: int = SEAM_BAND, context: str = "tile") -> SeamResult:
        """Tile the photo with ``overlap`` (and ``border`` reflect padding) and compare.

        Args:
            context: ``tile`` or ``sync[:N]`` (through the sync graph beside the ONNX, :attr:`sync_path`).

        Raises:
            UsageError: overlap or border out of range for this engine size; ``sync`` without a sync graph.
        """
        _, H, W = self.x.shape
        kind, passes = parse_context(context)
        tiler = None
        if kind == "sync":
            if self.sync_note:
                raise UsageError(f"--context sync: {self.sync_note}")
            if self.sync_runner is None:
                raise UsageError(f"--context sync needs the sync graph {os.path.basename(self.sync_path)} beside the "
                                 "ONNX (export a global-context model: NAFNet without --tlc, Restormer with --no-tlc)")
            sync = read_metadata(self.sync_path).get("sync") or {}

            def sync_tiler(img):  # as 'run --context sync' tiles: padded as the model pads a whole image
                return sync_tile_run(img, graph_fn(self.sync_runner), self.tile, overlap, self.multiple, passes=passes,
                                     stats=int(sync["stats"]), batch=self.batch, scale=self.scale, border=border,
                                     pad=(sync.get("pad", "none"), int(sync.get("multiple", 1))))

            tiler = sync_tiler
        t0 = time.perf_counter()
        plan, out, m = tiled_vs_full(self.x, self.ref, lambda t: self.runner.run(t)[0], self.tile, overlap,
                                     self.multiple, border=border, batch=self.batch, scale=self.scale, band=band,
                                     tiler=tiler)
        tiled_s = time.perf_counter() - t0
        return SeamResult(self.onnx_path, self.req.model, self.req.variant, self.req.tlc is not None, self.tile, (H, W),
                          overlap, border, plan.tiles, plan.pixel_factor, m["psnr"], m["seam_psnr"], m["other_psnr"],
                          m["max_abs"], band, m["worst_seam"], tiled_s, self.tile_s, self.reference_s,
                          tiled_s / (-(-plan.tiles // self.batch) * self.tile_s) if self.tile_s else float("nan"),
                          self.photo, self.scale, "tile" if kind == "tile" else f"sync:{passes}", self.backend)

    def close(self) -> None:
        self.runner.close()
        if self.sync_runner is not None:
            self.sync_runner.close()


def seam_check(onnx_path: str, weights: Optional[str] = None, height: Optional[int] = None, width: Optional[int] = None,
               overlap: Optional[int] = None, image: Optional[str] = None, border: int = 0, band: int = SEAM_BAND,
               threads: int = 0, backend: str = backends.ONNXRUNTIME) -> SeamResult:
    """Tiled graph-runner output (default ONNX Runtime on the CPU) vs the full-image PyTorch FP32 output, on one photo.

    Args:
        onnx_path: a deploy-kit ONNX export (any precision; the reference is FP32).
        weights: override the checkpoint path recorded in the metadata.
        height, width: photo size (default 3.5 x 3.75 the engine size).
        overlap: tile overlap in px (default :data:`deploy_kit.runtime.tiling.DEFAULT_OVERLAP`).
        image: photo file instead of the bundled sample (not degraded).
        border: extra reflect padding around the photo before tiling.
        band: half-width of the seam band in px.
        threads: the runner's inference threads (0 = its default).
        backend: the graph runner (``backends.names(engines=False)``).

    Returns:
        :class:`SeamResult` (``.line()`` is a one-line summary).

    Raises:
        UsageError: see :class:`SeamChecker`; overlap out of range.
    """
    checker = SeamChecker(onnx_path, weights, height, width, image, threads, backend)
    try:
        if overlap is None:  # the default, shrunk for engines too small for it (never an asked-for value)
            overlap = min(DEFAULT_OVERLAP, min(checker.tile) // 4)
        return checker.measure(overlap, border, band)
    finally:
        checker.close()
