"""Fuzz the untrusted-file readers (checkpoint, ONNX metadata, manifest/bundle, reference.npz) with hypothesis.

Builds real seed files (a nafnet tiny-notlc checkpoint, ``deploy-kit export ... --fp16 --bundle``),
runs hypothesis's damaged-input strategies of benchmarks/_fuzz.py through each reader with a fixed
seed, and prints per-reader counts, time and the foreign exceptions (anything but a one-line
``DeployKitError``, or a hang); exit code 1 when there was one (hypothesis prints the smallest case).

Usage: python benchmarks/bench_fuzz.py [--cases 10000] [--seed 0] [--only checkpoint,onnx,manifest,npz]
                                       [--timeout 10] [--bomb-mb 512] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _fuzz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000, help="total cases, shared among the targets (default 10000)")
    ap.add_argument("--seed", type=int, default=0, help="hypothesis's seed: the same seed runs the same cases on the same source")
    ap.add_argument("--only", default=",".join(_fuzz.TARGETS), help="comma-separated targets")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds after which a case counts as a hang")
    ap.add_argument("--bomb-mb", type=int, default=512, help="what the zip-bomb seeds decompress to (0: none)")
    ap.add_argument("--work", default=None, help="work directory (kept; the seed export is reused)")
    args = ap.parse_args()
    only = tuple(t for t in args.only.split(",") if t)
    bad = [t for t in only if t not in _fuzz.TARGETS]
    if bad:
        ap.error(f"unknown target(s) {bad}; choose from {', '.join(_fuzz.TARGETS)}")
    work = args.work or tempfile.mkdtemp(prefix="dk-fuzz-")
    t = time.perf_counter()
    seeds = _fuzz.make_seeds(work, bomb_mb=args.bomb_mb)
    print(f"seeds in {work} ({time.perf_counter() - t:.1f} s): checkpoints {', '.join(sorted(seeds.pth))}, "
          f"{len(seeds.structures)} structures, {seeds.manifest['onnx']}, {os.path.basename(seeds.bundle)}", flush=True)
    counts = _fuzz.split_cases(args.cases, only)
    cases = foreign = 0
    seconds = 0.0
    for target in only:
        try:
            stats = _fuzz.run(seeds, target, counts[target], seed=args.seed, timeout=args.timeout)
        except Exception as exc:  # noqa: BLE001 - a foreign exception (or a group of them) is the finding
            found = len(getattr(exc, "exceptions", [exc]))
            foreign += found
            print(f"{target:10s} FOREIGN EXCEPTION x{found} (smallest case and its @reproduce_failure above):")
            traceback.print_exception(exc, limit=-3)
            continue
        print(stats.line(), flush=True)
        print("  rejections by cause: " + ", ".join(f"{k} {v}" for k, v in stats.causes.most_common(10)), flush=True)
        cases, seconds = cases + stats.cases, seconds + stats.seconds
    print(f"\ntotal      {cases:6d} cases  {seconds:.1f} s  foreign exceptions: {foreign}")
    return 1 if foreign else 0


if __name__ == "__main__":
    sys.exit(main())
