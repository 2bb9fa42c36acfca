"""Process memory hygiene for full-resolution exports (glibc heap behaviour; no-ops elsewhere).

glibc serves an allocation above its mmap threshold with its own mapping, returned to the OS on
free; below it, from a heap that rarely shrinks. The threshold starts at 128 KiB but *rises* to
the size of every mapped block freed (up to 32 MiB), so after the first few activations of a
forward pass most of them live on the heap and freed ones pile up there. Measured on the
Restormer-Local export (benchmarks/bench_restormer.py --only a): at 360x640 peak RSS 3705 MiB
with the default, 2306 MiB with a fixed 1 MiB threshold, same wall time; at 720x1280 9427 MiB
before, 8003 MiB after (484 s).
"""

from __future__ import annotations

import ctypes
import gc

_M_MMAP_THRESHOLD = -3  # mallopt parameter number, glibc malloc.h
LARGE_ALLOCATION = 1 << 20


def _libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def map_large_allocations(threshold: int = LARGE_ALLOCATION) -> bool:
    """Serve every allocation of ``threshold`` bytes or more with its own mapping, for good.

    Setting the threshold explicitly also switches glibc's dynamic adjustment off. Returns
    False where this is not glibc (the call is then a no-op).
    """
    libc = _libc()
    try:
        return bool(libc and libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except AttributeError:
        return False


def release_memory() -> None:
    """Collect garbage and hand freed heap back to the OS (glibc keeps it otherwise)."""
    gc.collect()
    libc = _libc()
    try:
        if libc:
            libc.malloc_trim(0)
    except AttributeError:
        pass
