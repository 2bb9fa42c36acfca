"""Timing helpers shared by the benchmark scripts (run them as ``python benchmarks/bench_*.py``)."""

from __future__ import annotations

import statistics
import time


def median_time(fn, repeats: int, warmup: int = 1) -> float:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ort_session(path: str, threads: int):
    """ONNX Runtime CPU session with a fixed intra-op thread count (same as torch's for ratios);
    built by the project's one session factory (deploy_kit/runners/ort.py)."""
    from deploy_kit.runners.ort import ort_session as make

    return make(path, threads=threads)
