"""Memory: the one place deploy-kit measures it, and process memory hygiene for full-resolution exports.

Measuring (core install: /proc and ``resource``; psutil only for a process tree):

* :func:`reset_peak_rss` / :func:`peak_rss_mib` — this process's resident-set high-water mark, reset
  where Linux allows it (``/proc/self/clear_refs``), read from ``/proc/self/status`` (VmHWM), else
  ``getrusage``'s ``ru_maxrss`` (which cannot be reset). ``bench`` runs each backend in a process of
  its own and reads these there; they need no psutil, so ``bench`` of a bundle works on the core install.
* :class:`PeakRss` — the peak of this process *and its children* (the export runs ONNX Runtime and the
  engine build in child processes), sampled with psutil where it is installed (the export extra).

Hygiene (glibc heap behaviour; no-ops elsewhere): glibc serves an allocation above its mmap threshold with its own mapping, returned to the OS on
free; below it, from a heap that rarely shrinks. The threshold starts at 128 KiB but *rises* to
the size of every mapped block freed (up to 32 MiB), so after the first few activations of a
forward pass most of them live on the heap and freed ones pile up there. Measured on the
Restormer-Local export (its peak is printed by ``deploy-kit export``; benchmarks/bench_speed.py
section 3 measures the 720p one): at 360x640 peak RSS 3705 MiB
with the default, 2306 MiB with a fixed 1 MiB threshold, same wall time; at 720x1280 9427 MiB
before, 8003 MiB after (484 s).
"""

from __future__ import annotations

import ctypes
import gc

_M_MMAP_THRESHOLD = -3  # mallopt parameter number, glibc malloc.h
LARGE_ALLOCATION = 1 << 20


def _status_kib(field_name: str) -> int | None:
    """A ``/proc/self/status`` figure in KiB (VmRSS, VmHWM); None where there is no /proc."""
    try:
        with open("/proc/self/status") as fh:
            return next((int(line.split()[1]) for line in fh if line.startswith(field_name + ":")), None)
    except OSError:
        return None


def _maxrss_kib() -> int:
    """``ru_maxrss`` in KiB: the high-water mark where /proc is missing (it cannot be reset there)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # macOS counts bytes, Linux and BSD KiB


def reset_peak_rss() -> float:
    """Reset this process's resident-set high-water mark where Linux allows it, so that
    :func:`peak_rss_mib` covers what happens from now on.

    Writing ``5`` to ``/proc/self/clear_refs`` resets VmHWM to the current RSS (Linux >= 4.0, proc(5));
    without /proc nothing is reset (``ru_maxrss`` stays the whole process's peak). psutil reads the
    current RSS too, but neither a peak nor its reset, so this stays on /proc and ``resource``.

    Returns:
        MiB: the current RSS (where /proc is missing: ``ru_maxrss``, the peak so far).
    """
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    rss = _status_kib("VmRSS")
    return (_maxrss_kib() if rss is None else rss) / 1024


def peak_rss_mib() -> float:
    """This process's resident-set high-water mark (since the last :func:`reset_peak_rss` where it took).

    Returns:
        MiB: VmHWM from ``/proc/self/status``, else ``ru_maxrss``.
    """
    hwm = _status_kib("VmHWM")
    return (_maxrss_kib() if hwm is None else hwm) / 1024


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


class PeakRss:
    """Peak resident memory of this process *and its children* (summed), sampled in the background.

    The export runs ONNX Runtime, the engine build and the true-FP16 check in child processes
    (runners/base.py: in_child_process), so the memory a user needs is the whole tree's at
    its busiest moment, not any one process's ``ru_maxrss`` (which covers one process, and a
    waited-for child's only after it ended). psutil walks the tree and reads each process's
    current RSS (on Linux from ``/proc/PID/statm``, as ``ps`` does); psutil comes with the export
    extra, and without it :attr:`available` is False and every figure is None. Sampled every
    ``interval`` seconds, so a spike shorter than that can be missed.

    Use as a context manager; :meth:`take` returns the peak (MiB) since the previous call.
    """

    def __init__(self, interval: float = 0.05):
        import threading

        try:
            import psutil
        except ImportError:  # the core install: no figures, nothing else changes
            psutil = None
        self._psutil = psutil
        self._me = psutil.Process() if psutil else None
        self.interval = interval
        self.available = self._me is not None
        self._lock = threading.Lock()
        self._stage = 0
        self.overall = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="deploy-kit-peak-rss", daemon=True)

    def __enter__(self) -> "PeakRss":
        if self.available:
            self._sample()
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=1.0)

    def _sample(self) -> None:
        total = 0
        for proc in [self._me, *self._me.children(recursive=True)]:
            try:
                total += proc.memory_info().rss
            except self._psutil.Error:  # it ended meanwhile (NoSuchProcess), or is not ours to read
                continue
        with self._lock:
            self._stage = max(self._stage, total)
            self.overall = max(self.overall, total)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def take(self) -> float | None:
        """Peak MiB of the process tree since the last :meth:`take` (or the start).

        Returns:
            MiB, or None without psutil.
        """
        if not self.available:
            return None
        self._sample()
        with self._lock:
            peak, self._stage = self._stage, 0
        return peak / 2**20

    def peak_mib(self) -> float | None:
        """Peak MiB of the process tree over the whole ``with`` block so far.

        Returns:
            MiB, or None without psutil.
        """
        if not self.available:
            return None
        self._sample()
        return self.overall / 2**20
