"""A restoration job: a folder of images and videos restored into an output folder, resumable.

:func:`run_job` is what ``deploy-kit run`` does after checking its arguments: it opens the output
folder's journal (:mod:`deploy_kit.runtime.journal`: what is done, by content hash, with which
bundle and options), restores only what is not done, and commits each output as it is finished.
Locally the images go through :func:`deploy_kit.runtime.restore.restore_images` (pipelined) and the
videos through :func:`deploy_kit.runtime.video.transcode`; with a Ray address the work is spread over
a cluster (:func:`deploy_kit.runtime.cluster.run_on_ray`, imported only then), while this process,
the driver, keeps the journal. A stopped run (Ctrl-C, SIGKILL, a power cut) is finished by running
the same command again: nothing done is lost or done twice (docs/jobs.md).

A bad input (unreadable, truncated, not an image or a video) is reported per file and the job goes on.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any, Callable

from ..errors import UsageError
from .context import parse_context
from .journal import JobOptions, JobResult, Journal, check_unique_outputs, fingerprint, input_fault, kill_point
from .restore import restore_images
from .target import read_target
from .tiling import tiling_defaults
from .video import is_video_path, probe_video, transcode


class _NoBar:
    """What ``progress`` returns when the caller shows none."""

    def __enter__(self) -> "_NoBar":
        return self

    def __exit__(self, *exc) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def _no_progress(label: str, total: int, show_pos: bool = False) -> _NoBar:
    return _NoBar()


def _quiet(line: str = "", err: bool = False) -> None:
    return None


def job_options(opts: JobOptions, overlap: int) -> dict[str, Any]:
    """The options that change output bytes, as :func:`~deploy_kit.runtime.journal.fingerprint` takes
    them: the resolved tile ``overlap``, the context (``tile`` or ``sync:N``) and the videos' encoder."""
    kind, passes = parse_context(opts.context)
    return {"overlap": overlap, "context": kind if kind == "tile" else f"sync:{passes}",
            "codec": opts.codec, "crf": opts.crf, "preset": opts.preset, "precision": opts.precision}


def _ray_fingerprint(opts: JobOptions) -> dict:
    """The fingerprint of a Ray job, from the target alone (the driver need not run the model): the
    backend recorded is the one asked (``auto`` means what each node picks)."""
    manifest, _ = read_target(opts.target)
    overlap, _ = tiling_defaults(manifest, opts.overlap)
    return fingerprint(opts.target, f"{opts.backend} on Ray", job_options(opts, overlap))


def run_job(opts: JobOptions, files: list[str], out_dir: str, *, ray_address: str | None = None,
            echo: Callable[..., Any] = _quiet, restorer=None,
            progress: Callable[..., Any] = _no_progress) -> JobResult:
    """Restore ``files`` into ``out_dir``, skipping what the folder's journal says is done.

    Args:
        opts: what was asked (:class:`~deploy_kit.runtime.journal.JobOptions`).
        files: the inputs (images and videos), in order; each output is ``out_dir/basename``.
        out_dir: the output folder (created; its journal is ``.deploy-kit-journal.jsonl``).
        ray_address: None to run here; a Ray address (or ``auto``) to run on a cluster.
        echo: ``echo(line, err=False)`` prints a line (``click.echo``): summaries on stdout, notes and
            per-file failures with ``err=True``.
        restorer: the :class:`~deploy_kit.runtime.restorer.Restorer` that runs a local job (needed
            when ``ray_address`` is None).
        progress: ``progress(label, total, show_pos)`` -> a context manager with ``update(n)`` (a
            progress bar); default none.

    Returns:
        A :class:`~deploy_kit.runtime.journal.JobResult` of this run.

    Raises:
        UsageError: two inputs with one output name; a video the encoder options cannot write
            (``--codec``/``--crf``/``--preset``); a bad target (Ray).
        JournalError: another run holds ``out_dir``; the journal cannot be written.
        MissingDependencyError: a video without PyAV, ``ray_address`` without Ray.
    """
    check_unique_outputs(files)
    if ray_address is None:
        if restorer is None:
            raise ValueError("run_job: a local job needs its restorer")
        fp = fingerprint(opts.target, restorer.runner.name, job_options(opts, restorer.overlap), runner=restorer.runner)
    else:
        fp = _ray_fingerprint(opts)
    with Journal.open(out_dir, fp, force=opts.force) as journal:
        todo, done, notes = journal.plan(files)
        for line in notes:
            echo(f"note: {line}", err=True)
        if done or (notes and not opts.force):
            echo(f"resumed: {len(done)} done earlier, {len(todo)} to do", err=True)
        if not todo:
            echo(f"nothing to do: all {len(done)} outputs in {out_dir} are done (--force restores them again)")
            return JobResult(skipped_done=len(done))
        if ray_address is not None:
            # imported here: a local run does not load the cluster module (tests/integration/test_device_modules.py
            # counts the modules `run` loads)
            from .cluster import run_on_ray

            result = run_on_ray(opts, todo, out_dir, journal, address=ray_address, echo=echo)
        else:
            result = _run_local(restorer, opts, todo, journal, echo, progress)
        result.skipped_done = len(done)
        return result


def _run_local(restorer, opts: JobOptions, todo: list[str], journal: Journal, echo, progress) -> JobResult:
    """The job on this machine: the images pipelined, then each video."""
    result = JobResult()
    started = time.perf_counter()
    images = [f for f in todo if not is_video_path(f)]
    videos = [f for f in todo if is_video_path(f)]
    if images:
        t0 = time.perf_counter()
        count = [0]

        def done(src: str, partial: str, pixels: int) -> None:
            result.written.append(journal.commit(src, partial))
            result.pixels += pixels
            count[0] += 1
            bar.update(1)

        def failed(line: str) -> None:
            result.failed.append(line)
            bar.update(1)
            echo(f"\nskipped: {line}", err=True)

        with progress("images", len(images), False) as bar:
            restore_images(restorer, images, journal.out_dir, max_pixels=opts.max_pixels, dest=journal.partial_path,
                           on_error=failed, on_done=done)
        dt = max(time.perf_counter() - t0, 1e-9)
        n = count[0]
        echo(f"restored {n} images ({result.pixels / 1e6:.2f} MP) into {journal.out_dir} in {dt:.1f} s: "
             f"{n / dt:.2f} images/s, {result.pixels / 1e6 / dt:.2f} MP/s ({restorer.runner.name})")
    for v in videos:
        _restore_video(restorer, v, opts, journal, echo, progress, result)
    result.seconds = time.perf_counter() - started
    return result


def _restore_video(restorer, src: str, opts: JobOptions, journal: Journal, echo, progress, result: JobResult) -> None:
    """Restore one video to its partial path and commit it, with a progress bar and a closing line.

    Raises:
        UsageError: the encoder options cannot write it (--codec, --crf, --preset, the container); a
            fault of the video itself is reported as a failure of this file instead.
    """
    partial, dst = journal.partial_path(src), journal.output_path(src)

    def frame_done(done: int, total) -> None:
        bar.update(1)
        kill_point("video-frame")

    try:
        info = probe_video(src)
        label = f"{os.path.basename(src)} ({info.width}x{info.height}, {float(info.fps):.2f} fps)"
        with progress(label, info.frames or 0, True) as bar:
            stats = transcode(src, partial, restorer.restore_stream, codec=opts.codec, crf=opts.crf, preset=opts.preset,
                              progress=frame_done, scale=restorer.scale)
    except ValueError as exc:
        if not input_fault(exc, src):
            raise UsageError(str(exc)) from None
        result.failed.append(str(exc))
        echo(f"skipped: {exc}", err=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(partial)
        return
    result.written.append(journal.commit(src, partial))
    result.frames += stats.frames
    echo(f"restored {stats.frames} frames of {src} into {dst} in {stats.seconds:.1f} s: {stats.fps:.2f} frames/s "
         f"({info.width * info.height * stats.fps / 1e6:.2f} MP/s, {restorer.runner.name})")
    if stats.encoder:  # which encoder, and whether it set the pace (VideoStats.encoder_bound)
        pace = ("encoder-bound: a faster --preset (or a hardware encoder, docs/video.md) would speed this up"
                if stats.encoder_bound else "not encoder-bound")
        echo(f"encoder: {stats.encoder} ({opts.preset or 'default'} preset), busy {stats.encode_share:.0%} of the "
             f"video's time; {pace}")
