"""Restore image files and videos of any size with a :class:`~deploy_kit.runtime.restorer.Restorer`.

What ``deploy-kit run`` does on the device: decode → tile → model → blend → encode as concurrent
stages (decoding in the Restorer's source thread, encoding in a writer thread), so the images of a
folder overlap one another. A broken image is reported and skipped; the others are restored.
A super-resolution model writes images s times larger (its alpha channel, if any, is enlarged
with them by pixel repetition).
"""

from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Optional

import numpy as np

from .imageio import decode_image, encode_image
from .video import is_video_path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm")


def collect_inputs(paths: Iterable[str]) -> list[str]:
    """Image and video files named directly, plus those inside named folders (not recursive), in order.

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    found: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found += sorted(os.path.join(p, f) for f in os.listdir(p)
                            if (f.lower().endswith(IMAGE_EXTENSIONS) or is_video_path(f)) and os.path.isfile(os.path.join(p, f)))
        elif os.path.isfile(p):
            found.append(p)
        else:
            raise FileNotFoundError(p)
    return found


@dataclass
class FilesResult:
    """What :func:`restore_images` did: images written, pixels restored, and one line per failed image."""

    written: list[str] = field(default_factory=list)
    pixels: int = 0
    failed: list[str] = field(default_factory=list)


def restore_images(restorer, files: list[str], out_dir: str, *, max_pixels: int | None = None,
                   on_error: Optional[Callable[[str], None]] = None,
                   on_done: Optional[Callable[[str, str, int], None]] = None, writers: int = 1,
                   dest: Optional[Callable[[str], str]] = None) -> FilesResult:
    """Restore image files into ``out_dir`` (same names, formats, bit depths, gray/RGB and alpha).

    A restorer of scale s (super-resolution) writes each image s times its height and width; an
    alpha channel is enlarged to match by repeating each pixel s x s times. Each file is written
    whole (atomically): a stopped run leaves no half-written image.

    Args:
        restorer: a :class:`~deploy_kit.runtime.restorer.Restorer`.
        max_pixels: refuse images whose header claims more pixels (decompression bombs).
        on_error: called with one line per image that could not be read or written (the run goes on).
        on_done: called as ``on_done(src, written_path, pixels)`` once each image is written, in input
            order, in the calling thread (``deploy-kit run`` commits it to its journal there).
        writers: encoder threads (PNG/JPEG encoders release the GIL).
        dest: ``dest(src)`` -> the path to write ``src``'s output to (its extension picks the format);
            default ``out_dir/basename(src)`` (a resumable run writes to the journal's partial path).

    Returns:
        a :class:`FilesResult` (``written``: the paths written; ``pixels`` counts the output pixels).
    """
    result = FilesResult()
    report = on_error or (lambda line: None)

    def frames() -> Iterator:
        for f in files:
            try:
                arr, info = decode_image(f, max_pixels=max_pixels)
            except (OSError, ValueError) as exc:
                line = str(exc) if os.path.basename(f) in str(exc) else f"{f}: {exc}"
                result.failed.append(line)
                report(line)
                continue
            colour = arr[..., :info.colour]
            alpha = arr[..., info.colour:] if info.alpha else None
            yield colour, (f, info, alpha)

    def write(out: np.ndarray, f: str, info, alpha) -> str:
        if alpha is not None:
            if out.shape[:2] != alpha.shape[:2]:  # super-resolution: the alpha follows, pixel for pixel
                k = out.shape[0] // alpha.shape[0]
                alpha = np.repeat(np.repeat(alpha, k, axis=0), k, axis=1)
            out = np.concatenate([out, alpha], axis=-1)
        dst = dest(f) if dest is not None else os.path.join(out_dir, os.path.basename(f))
        encode_image(dst, out, info)
        return dst

    pending: list[tuple[Future, str, int]] = []

    def collect(block_until: int) -> None:
        while len(pending) > block_until:
            fut, f, px = pending.pop(0)
            try:
                dst = fut.result()
            except (OSError, ValueError) as exc:
                line = f"{f}: {exc}"
                result.failed.append(line)
                report(line)
                continue
            result.written.append(dst)
            result.pixels += px
            if on_done:
                on_done(f, dst, px)

    with ThreadPoolExecutor(max_workers=max(1, writers), thread_name_prefix="deploy-kit-encode") as pool:
        try:
            for out, (f, info, alpha) in restorer.restore_stream(frames(), tagged=True):
                pending.append((pool.submit(write, out, f, info, alpha), f, out.shape[0] * out.shape[1]))
                collect(block_until=max(1, writers))  # bounded: at most `writers` + 1 images being encoded
            collect(block_until=0)
        finally:
            for fut, _, _ in pending:
                fut.cancel()
    return result
