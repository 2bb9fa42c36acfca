"""Fuzz the untrusted-file readers (checkpoint, ONNX metadata, manifest/bundle, reference.npz).

Builds real seed files (a nafnet tiny-notlc checkpoint, ``deploy-kit export ... --fp16 --bundle``),
damages them deterministically and checks that every case ends in success or a one-line
``DeployKitError`` (see benchmarks/_fuzz.py). Prints per-reader counts, failures and time; exit
code 1 when anything else was raised or a case hung.

Usage: python benchmarks/bench_fuzz.py [--cases 10000] [--seed 0] [--only checkpoint,onnx,manifest,npz]
                                       [--start 0] [--timeout 10] [--bomb-mb 512] [--work DIR] [--save DIR] [-v]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _fuzz  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=10000, help="total cases, shared among the targets (default 10000)")
    ap.add_argument("--seed", type=int, default=0, help="base seed: a case is a function of (target, seed, index)")
    ap.add_argument("--only", default=",".join(_fuzz.TARGETS), help="comma-separated targets")
    ap.add_argument("--start", type=int, default=0, help="first case index (to replay one case)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds after which a case counts as a hang")
    ap.add_argument("--bomb-mb", type=int, default=512, help="what the zip-bomb seeds decompress to (0: none)")
    ap.add_argument("--work", default=None, help="work directory (kept; the seed export is reused)")
    ap.add_argument("--save", default=None, help="write the inputs of failing cases here")
    ap.add_argument("-v", "--verbose", action="store_true", help="one line per case")
    args = ap.parse_args()
    only = tuple(t for t in args.only.split(",") if t)
    bad = [t for t in only if t not in _fuzz.TARGETS]
    if bad:
        ap.error(f"unknown target(s) {bad}; choose from {', '.join(_fuzz.TARGETS)}")
    work = args.work or tempfile.mkdtemp(prefix="dk-fuzz-")
    t = time.perf_counter()
    seeds = _fuzz.make_seeds(work, bomb_mb=args.bomb_mb)
    print(f"seeds in {work} ({time.perf_counter() - t:.1f} s): checkpoints {', '.join(sorted(seeds.pth))}, "
          f"{seeds.onnx_name}, {os.path.basename(seeds.bundle)}", flush=True)
    fuzzer = _fuzz.Fuzzer(seeds, base_seed=args.seed, timeout=args.timeout, save_failures=args.save)
    counts = _fuzz.split_cases(args.cases, only) if args.cases > 1 else {t: args.cases for t in only}
    stats = []
    for target in only:
        s = fuzzer.run(target, counts[target], start=args.start, verbose=args.verbose)
        print(s.line(), flush=True)
        stats.append(s)
    print()
    print(_fuzz.summary(stats))
    return 1 if any(s.failures for s in stats) else 0


if __name__ == "__main__":
    sys.exit(main())
