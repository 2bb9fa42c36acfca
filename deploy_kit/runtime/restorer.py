"""``Restorer``: the runtime's Python API — frames of any size in, restored frames out, at engine speed.

One object per model: it opens a bundle or plan through the backend registry (a built engine whose
runtime works here, else a CPU runner: OpenVINO or ONNX Runtime, docs/cpu.md), tiles each frame through the fixed-size model N tiles per
call (the model's static batch), blends, and returns the frame in its own dtype, s times its height
and width for a super-resolution model of scale s (the manifest's ``scale``; 1 otherwise).
:meth:`restore` does one frame in the calling thread; :meth:`restore_stream` runs the stages of
many frames concurrently, with bounded queues, so that frame k+1 is being tiled while frame k is in
the model and frame k-1 is being quantised (ONNX Runtime, TensorRT, numpy's large operations and the
image and video codecs release the GIL, so threads suffice). Both call the same stage functions in the
same order, so they give the same bytes.

Steady state: one :class:`~deploy_kit.runtime.tiling.TileGrid` per frame size, batch buffers and
accumulators recycled; the only per-frame allocation is the frame returned to the caller
(``restore(frame, out=...)`` avoids that too).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

from ..backends import RunOptionsArg
from ..errors import UsageError
from ..manifest import Manifest
from .context import graph_fn, pad_like_model, parse_context, run_passes
from .imageio import LUMA
from .target import open_sync, open_target
from .tiling import TileGrid, tiling_defaults

_DONE = object()
_GRIDS = 32  # tilings of distinct frame sizes kept


@dataclass
class _Frame:
    """One frame on its way through the stages."""

    image: np.ndarray  # the caller's frame, HWC
    grid: TileGrid
    padded: np.ndarray | None = None
    acc: np.ndarray | None = None
    out: np.ndarray | None = None
    extra: Any = None  # the caller's tag, handed back with the result (restore_stream(..., tagged=True))
    dst: np.ndarray | None = None  # the restored frame being quantised, rows [0, quantised) written
    ready: int = 0  # rows of the restored frame that no later tile changes (the model stage sets it)
    quantised: int = 0
    cond: threading.Condition = field(default_factory=threading.Condition)  # guards and signals `ready`


class _Pool:
    """Recycled arrays of one shape; ``take`` blocks while all are in use (this bounds memory)."""

    def __init__(self, make, count: int):
        self._free: queue.Queue = queue.Queue()
        for _ in range(count):
            self._free.put(make())

    def take(self, stop: threading.Event) -> np.ndarray:
        return _get(self._free, stop)

    def give(self, arr: np.ndarray) -> None:
        self._free.put(arr)


class _Stopped(Exception):
    pass


def _get(q: queue.Queue, stop: threading.Event):
    """``q.get()`` that gives up (raises _Stopped) once ``stop`` is set, within 0.1 s: a stage never
    blocks a shutdown, and starts no more work after one."""
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            pass


def _put(q: queue.Queue, item, stop: threading.Event) -> None:
    """``q.put()`` that gives up (raises _Stopped) once ``stop`` is set, within 0.1 s."""
    while True:
        if stop.is_set():
            raise _Stopped
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            pass


class Restorer:
    """Restore frames (H x W x C, uint8 / uint16 / float32 in [0, 1]) of any size through one model.

    The restored frames are ``scale`` x H by ``scale`` x W (``scale``: the manifest's, 1 unless the
    model is a super-resolution one).

    Args:
        target: a bundle folder (or its manifest.json) or a ``.plan`` with its ``.json`` manifest.
        backend: ``auto`` (a built engine whose runtime works here, else OpenVINO or ONNX Runtime) or a
            backend name.
        overlap: tile overlap in pixels (default: the measured default, at most a quarter tile).
        depth: frames in flight in :meth:`restore_stream` (more overlaps more, and holds more memory).
        runner: an already opened runner with its manifest instead of ``target`` (tests, Triton's tiled model).
        context: ``tile`` (each tile its own statistics) or ``sync[:passes]`` (a global-context model's
            statistics summed over the whole image and fed back, deploy_kit/runtime/context.py; needs
            a bundle with a sync graph, or ``sync_runner``). ``sync`` frames are not pipelined.
        sync_runner: an already opened runner of the sync graph (with ``runner``/``manifest``).
        run_options: the run options of the runners it opens, each backend's own type (e.g.
            ``OrtRunOptions(threads=2)``, ``EngineRunOptions(slots=3)``, or both: ``auto`` decides which
            backend runs); a backend given none runs with its defaults.

    Raises:
        UsageError / ManifestError: the target cannot be opened or run here; the model does not output images.
    """

    def __init__(self, target: str | None = None, backend: str = "auto", *, overlap: int | None = None,
                 depth: int = 2, runner=None, manifest: Manifest | None = None, context: str = "tile",
                 sync_runner=None, run_options: RunOptionsArg = None):
        self.context, self.passes = parse_context(context)
        if runner is None:
            opened = open_target(target, backend, run_options)
            runner, manifest, self.note = opened.runner, opened.manifest, opened.note
            if self.context == "sync":
                try:
                    sync_runner, sync_note = open_sync(opened, backend, run_options)
                except BaseException:
                    runner.close()
                    raise
                self.note += f"; sync: {sync_note}, {self.passes} passes"
        else:
            self.note = getattr(runner, "name", "runner")
        if self.context == "sync" and (sync_runner is None or not manifest.sync_stats):
            runner.close()
            raise UsageError(f"--context sync needs a sync graph; {target or 'this model'} has none (only bundles of "
                             "global-context models exported by this version carry one)")
        self.runner, self.manifest, self.sync_runner = runner, manifest, sync_runner
        if manifest.output_kind != "image":
            runner.close()
            raise UsageError(f"{target} outputs {manifest.output_kind}, not images; it cannot restore frames")
        n, self.channels, th, tw = manifest.input_shape
        self.batch, self.tile, self.scale = n, (th, tw), manifest.scale
        self.overlap, self.multiple = tiling_defaults(manifest, overlap)
        self.depth = max(1, int(depth))
        self._grids: dict[tuple[int, int], TileGrid] = {}
        self._free_accs: dict[tuple[int, int, int], list[np.ndarray]] = {}
        self._out_channels: int | None = None
        slots = max(1, int(getattr(runner, "slots", 1)))
        self._inputs = _Pool(lambda: np.empty((n, self.channels, th, tw), np.float32), slots + 2)
        self._lock = threading.Lock()
        # the streams running now (their stage threads and stop flag): close() stops them and waits
        # for them before the runner (its pinned buffers, its device memory) is released
        self._streams: list[_Stream] = []

    # ------------------------------------------------------------------ the stages
    def grid(self, height: int, width: int) -> TileGrid:
        """The (cached) tiling of one frame size."""
        key = (height, width)
        with self._lock:
            grid = self._grids.pop(key, None)
            if grid is None:
                grid = TileGrid(height, width, self.tile, self.overlap, self.multiple, batch=self.batch,
                                scale=self.scale)
            self._grids[key] = grid  # most recent last; a few kilobytes each, at most _GRIDS kept
            while len(self._grids) > _GRIDS:
                del self._grids[next(iter(self._grids))]
            return grid

    def _check(self, frame: np.ndarray) -> np.ndarray:
        arr = np.asarray(frame)
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3) or arr.dtype not in (np.uint8, np.uint16, np.float32):
            raise ValueError(f"a frame must be H x W x 1 or 3 of uint8, uint16 or float32; got {arr.shape} {arr.dtype}")
        if self.channels not in (1, 3) and arr.shape[2] != self.channels:
            raise ValueError(f"the model takes {self.channels} channels; got {arr.shape[2]}")
        return arr

    def _start(self, frame: np.ndarray, extra: Any = None) -> _Frame:
        arr = self._check(frame)
        grid = self.grid(arr.shape[0], arr.shape[1])
        return _Frame(arr, grid, grid.prepare(arr), extra=extra)

    def _acc(self, grid: TileGrid, channels: int) -> np.ndarray:
        """A zeroed accumulator for one frame: a recycled one of that size, else a new one."""
        shape = (channels, *grid.out_padded_size)
        with self._lock:
            free = self._free_accs.get(shape)
            acc = free.pop() if free else None
            if free is not None and not free:  # no empty lists kept: _give_acc drops the oldest entry
                del self._free_accs[shape]
        if acc is None:
            return grid.new_accumulator(channels)
        acc.fill(0.0)
        return acc

    def _give_acc(self, acc: np.ndarray) -> None:
        """Keep a finished frame's accumulator for the next frame of its size. At most ``depth + 1`` are
        kept, the most recent sizes first: a folder of many sizes does not hold one per size."""
        with self._lock:
            self._free_accs.setdefault(acc.shape, []).append(acc)
            self._free_accs[acc.shape] = self._free_accs.pop(acc.shape)  # most recent size last
            while sum(len(v) for v in self._free_accs.values()) > self.depth + 1:
                oldest = next(iter(self._free_accs))
                self._free_accs[oldest].pop(0)
                if not self._free_accs[oldest]:
                    del self._free_accs[oldest]

    def _blend(self, job: _Frame, call: int, outputs: list[np.ndarray]) -> None:
        out = outputs[0]
        if job.acc is None:
            job.acc = self._acc(job.grid, out.shape[1])
        job.grid.accumulate(job.acc, call, out)
        ready = job.grid.rows_done(call)
        with job.cond:
            job.ready = ready
            job.cond.notify_all()

    def _quantise(self, job: _Frame, upto: int, out: np.ndarray | None = None) -> None:
        """Quantise rows [job.quantised, upto) of the restored frame (final ones: ``TileGrid.rows_done``);
        the first call allocates the frame (or checks the caller's ``out``)."""
        if job.dst is None:
            h, w = job.grid.out_size
            c2 = job.acc.shape[0]
            dst = out if out is not None else np.empty((h, w, c2), dtype=job.image.dtype)
            if dst.shape != (h, w, c2) or dst.dtype != job.image.dtype:
                raise ValueError(f"out must be {h}x{w}x{c2} {job.image.dtype}; got {dst.shape} {dst.dtype}")
            job.dst = dst
        if upto > job.quantised:
            job.grid.quantise(job.acc, job.dst, rows=(job.quantised, upto))
            job.quantised = upto

    def _finish(self, job: _Frame, out: np.ndarray | None = None) -> np.ndarray:
        colour = job.image.shape[2]
        c2 = job.acc.shape[0]
        self._quantise(job, job.grid.out_size[0], out)
        dst, job.dst = job.dst, None
        self._give_acc(job.acc)
        job.acc = None
        if c2 == 3 and colour == 1:  # an RGB model restored a gray frame: back to gray, as it came
            dst = _to_gray(dst)
        elif c2 == 1 and colour == 3:  # a gray model restored an RGB frame (as luma): three equal channels
            dst = np.repeat(dst, 3, axis=2)
        return dst

    # ------------------------------------------------------------------ public API
    def restore(self, frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Restore one frame in the calling thread.

        Args:
            frame: H x W x C (C = 1 or 3; or H x W) uint8, uint16 or float32 in [0, 1].
            out: optional array of the frame's dtype to write into (no allocation): H x W x C2, or
                s*H x s*W x C2 for a model of scale s.

        Returns:
            the restored frame, in the frame's dtype (float32 clipped to [0, 1]), of the frame's size
            (s times it in height and width for a model of scale s).
        """
        if self.context == "sync":
            return self._restore_sync(frame, out)
        job = self._start(frame)
        buf = self._inputs.take(threading.Event())
        try:
            for call in range(job.grid.calls):
                job.grid.fill(job.padded, call, buf)
                self._blend(job, call, self.runner.submit(buf).wait())
        finally:
            self._inputs.give(buf)
        return self._finish(job, out)

    def _restore_sync(self, frame: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        """:meth:`restore` with synchronised statistics: the frame padded as the model pads a whole image,
        the passes of :func:`~deploy_kit.runtime.context.run_passes`, the padding cropped."""
        arr = self._check(frame)
        h, w = arr.shape[:2]
        job = self._start(pad_like_model(arr, *self.manifest.sync_pad))

        run_passes(job.grid, job.padded, graph_fn(self.sync_runner), passes=self.passes, stats=self.manifest.sync_stats,
                   channels=self.channels, on_output=lambda call, o: self._blend(job, call, [o]))
        s = self.scale
        full = self._finish(job)[: s * h, : s * w]
        if out is None:
            return np.ascontiguousarray(full)
        if out.shape != full.shape or out.dtype != full.dtype:
            raise ValueError(f"out must be {full.shape[0]}x{full.shape[1]}x{full.shape[2]} {full.dtype}; got {out.shape} {out.dtype}")
        out[...] = full
        return out

    def restore_stream(self, frames: Iterable, *, tagged: bool = False) -> Iterator:
        """Restore a sequence of frames, pipelined; yields the results in order.

        The frames are pulled from ``frames`` in a thread of their own (so decoding, when ``frames``
        decodes lazily, overlaps the model too); at most ``depth`` frames are in flight.

        Args:
            frames: an iterable of frames (see :meth:`restore`); with ``tagged`` of (frame, tag) pairs.
            tagged: yield (restored frame, tag) pairs, passing each tag through (e.g. a file name).

        Raises:
            whatever a stage raised (the others are stopped first); ValueError for a bad frame.
        """
        if self.context == "sync":  # the passes depend on each other: frame after frame
            for item in frames:
                frame, tag = item if tagged else (item, None)
                restored = self.restore(frame)
                yield (restored, tag) if tagged else restored
            return
        stream = _Stream(self, frames, tagged)
        stream.start()
        with self._lock:
            self._streams.append(stream)
        try:
            for job in stream.results():
                yield (job.out, job.extra) if tagged else job.out
        finally:
            stream.halt()
            with self._lock:
                if stream in self._streams:
                    self._streams.remove(stream)

    def close(self) -> None:
        """Stop the streams still running (an abandoned :meth:`restore_stream` generator), wait for their
        stage threads, then release the runner (and the engine's device and pinned memory): nothing
        is freed while a stage can still touch it."""
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.halt()
        if self.runner is not None:
            self.runner.close()
            self.runner = None
        if self.sync_runner is not None:
            self.sync_runner.close()
            self.sync_runner = None

    def __enter__(self) -> "Restorer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Stream:
    """One :meth:`Restorer.restore_stream` run: four stage threads joined by bounded queues.

    source (pulls and prepares the caller's frames) -> tiler (fills the batch buffers) -> model
    (submits them, up to ``slots`` passes in flight, and blends each pass's outputs) -> finisher
    (quantises) -> :meth:`results`, in the caller's thread. A frame goes to the finisher once its
    first pass is blended, and the finisher quantises its rows as the model stage finishes them
    (``TileGrid.rows_done``): on one large image, quantising overlaps the tiles still in the model.
    A stage that raises stops the others (``stop``); :meth:`results` re-raises its error.
    """

    def __init__(self, restorer: Restorer, frames: Iterable, tagged: bool):
        self.r, self.frames, self.tagged = restorer, frames, tagged
        depth = restorer.depth
        self.stop = threading.Event()
        self.q_in: queue.Queue = queue.Queue(maxsize=depth)       # prepared frames
        self.q_tiles: queue.Queue = queue.Queue(maxsize=depth)    # (frame, call, filled buffer)
        # frames being blended, in order, handed over at their first pass: each holds a float accumulator
        self.q_blended: queue.Queue = queue.Queue(maxsize=1)
        self.q_out: queue.Queue = queue.Queue(maxsize=depth)      # finished frames
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the stage threads (the source first: :meth:`halt` treats ``threads[0]`` as the source)."""
        self.threads = [self._thread(fn) for fn in (self.source, self.tiler, self.model, self.finisher)]

    def _thread(self, fn) -> threading.Thread:
        def body():
            try:
                fn()
            except _Stopped:
                pass
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises it
                self.errors.append(exc)
                self.stop.set()
        t = threading.Thread(target=body, daemon=True, name=f"deploy-kit-{fn.__name__}")
        t.start()
        return t

    def _put(self, q: queue.Queue, item) -> None:
        _put(q, item, self.stop)

    def _get(self, q: queue.Queue):
        return _get(q, self.stop)

    # ------------------------------------------------------------------ the stages, one thread each
    def source(self) -> None:
        for item in self.frames:
            frame, tag = item if self.tagged else (item, None)
            self._put(self.q_in, self.r._start(frame, tag))
        self._put(self.q_in, _DONE)

    def tiler(self) -> None:
        while (job := self._get(self.q_in)) is not _DONE:
            for call in range(job.grid.calls):
                buf = self.r._inputs.take(self.stop)
                job.grid.fill(job.padded, call, buf)
                self._put(self.q_tiles, (job, call, buf))
        self._put(self.q_tiles, _DONE)

    def model(self) -> None:
        # up to `slots` passes in flight; a pass's outputs are blended before its slot is reused
        slots = max(1, int(getattr(self.r.runner, "slots", 1)))
        pending: list = []
        while (item := self._get(self.q_tiles)) is not _DONE:
            job, call, buf = item
            if len(pending) == slots:
                self._drain_one(pending)
            pending.append((job, call, self.r.runner.submit(buf)))
            self.r._inputs.give(buf)  # submit copied it
        while pending:
            self._drain_one(pending)
        self._put(self.q_blended, _DONE)

    def _drain_one(self, pending: list) -> None:
        """Wait for the oldest pass in flight and blend it; a frame whose last pass it was moves on."""
        job, call, p = pending.pop(0)
        self.r._blend(job, call, p.wait())
        if call == 0:  # the finisher quantises its rows as they are finished
            self._put(self.q_blended, job)

    def finisher(self) -> None:
        while (job := self._get(self.q_blended)) is not _DONE:
            height = job.grid.out_size[0]
            while job.quantised < height:
                with job.cond:
                    while job.ready <= job.quantised:
                        if self.stop.is_set():
                            raise _Stopped
                        job.cond.wait(0.1)
                    upto = job.ready
                self.r._quantise(job, upto)
            job.out = self.r._finish(job)
            self._put(self.q_out, job)
        self._put(self.q_out, _DONE)

    # ------------------------------------------------------------------ the caller's side
    def results(self) -> Iterator[_Frame]:
        """The finished frames in order, in the caller's thread; raises the first stage error."""
        while True:
            try:
                job = self.q_out.get(timeout=0.1)
            except queue.Empty:
                if self.errors:
                    raise self.errors[0]
                continue
            if job is _DONE:
                break
            yield job
        if self.errors:
            raise self.errors[0]

    def halt(self) -> None:
        """Stop the stages and wait for them.

        The stages that use the runner or the frames in flight (tiler, model, finisher) are joined
        without a timeout: each wakes on ``stop`` within 0.1 s, or once the pass it waits for ends,
        and the runner may be closed only after. The source stage (``threads[0]``) touches neither;
        it may be blocked inside the caller's iterator (a decoder, a camera), so it is given 5 s and
        then left (a daemon thread that stops at its next frame).
        """
        self.stop.set()
        current = threading.current_thread()
        for i, t in enumerate(self.threads):
            if t is not current:
                t.join(timeout=5 if i == 0 else None)


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    """Luma of an H x W x 3 frame, in its dtype (H x W x 1)."""
    y = rgb.astype(np.float32) @ LUMA
    if rgb.dtype != np.float32:
        y = y + 0.5
    return np.clip(y, 0, np.iinfo(rgb.dtype).max if rgb.dtype != np.float32 else 1.0).astype(rgb.dtype)[..., None]
