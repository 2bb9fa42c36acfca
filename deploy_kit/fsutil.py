"""Artifacts are written to a temp file beside the target and renamed when complete."""

from __future__ import annotations

import contextlib
import os
import tempfile
from typing import Iterator


@contextlib.contextmanager
def atomic_target(path: str) -> Iterator[str]:
    """Yield a temp path in the target's directory; rename it onto ``path`` only on success.

    A failure (or Ctrl-C) leaves no partial file at ``path`` and removes the temp file.
    """
    directory = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".part", dir=directory)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600; artifacts get the usual umask-based mode like any written file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def replace_dir(src: str, dst: str, *, aside: str | None = None) -> None:
    """Move the finished folder ``src`` onto ``dst`` (same file system): an existing ``dst`` is renamed
    aside first and removed only after the new one is in place, so ``dst`` is never half-written and
    a failure before the last rename leaves the old one. ``dst`` gets the usual umask-based mode
    (``mkdtemp`` makes folders 0700).

    Args:
        aside: where the old ``dst`` waits to be removed (default: beside ``dst``; a Triton repository
            parks it outside the repository, where a polling server does not look).
    """
    old = None
    if os.path.lexists(dst):
        where = aside or os.path.dirname(os.path.abspath(dst)) or "."
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.", suffix=".old", dir=where)
        os.rmdir(old)
        os.rename(dst, old)
    os.rename(src, dst)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(dst, 0o777 & ~umask)
    if old:
        import shutil

        shutil.rmtree(old, ignore_errors=True)


def write_text(path: str, text: str) -> None:
    with atomic_target(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_target(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def disk_size(path: str) -> int:
    """Bytes of a file, or of every file below a folder (a bundle)."""
    if not os.path.isdir(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"
