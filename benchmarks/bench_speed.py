"""Issue-12 speed and memory figures, measured through the deploy-kit commands themselves.

A thin caller of ``deploy-kit bench`` and ``deploy-kit export`` (each run as the user runs it, in a
subprocess); it only picks the targets and prints the ratios the project's goals are stated in:

  1. ONNX Runtime / PyTorch eager (upstream module) CPU latency at 256x256, NAFNet gopro-w32 and
     Restormer motion-deblurring (goal <= 0.8);
  2. TLC / global ONNX Runtime latency at 720x1280: NAFNet gopro-w32 (goal <= 1.15) and, with
     ``--restormer-tlc``, Restormer motion-deblurring (goal <= 1.5; 37-51 s per run here);
  3. peak resident memory of the whole ``deploy-kit export restormer --fp16 --height 720 --width 1280``
     (this script's own sampler over the command's process tree, and the command's per-stage
     figures; goal <= 10 GiB).

Usage: python benchmarks/bench_speed.py [--only 1,2,3] [--runs 20] [--threads N] [--out DIR] [--restormer-tlc]
Random weights (no checkpoint needed); each section takes minutes on a 2-core CPU, the third ~10.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from deploy_kit.memory import PeakRss

CLI = [sys.executable, "-m", "deploy_kit.cli"]


def bench(args, target: list[str], name: str) -> dict:
    """``deploy-kit bench`` on one target; returns its JSON report."""
    path = os.path.join(args.out, f"{name}.json")
    cmd = CLI + ["bench", *target, "--runs", str(args.runs), "--out", args.out, "--json", path]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    subprocess.run(cmd, check=True)
    with open(path) as fh:
        return json.load(fh)


def row(report: dict, backend: str) -> dict:
    return next(r for r in report["rows"] if r["backend"] == backend)


def ort_vs_torch(args) -> None:
    for model, extra in (("nafnet", ["--variant", "gopro-w32"]), ("restormer", [])):
        rep = bench(args, [model, *extra, "--height", "256", "--width", "256", "--torch-module", "eager"], f"{model}-256")
        torch_ms, ort_ms = row(rep, "pytorch")["median_ms"], row(rep, "onnxruntime")["median_ms"]
        print(f"[1] {model} 256x256: PyTorch eager {torch_ms:.1f} ms, ONNX Runtime {ort_ms:.1f} ms, "
              f"ratio {ort_ms / torch_ms:.2f} (goal <= 0.8; {rep['threads']} threads)", flush=True)


def tlc_vs_global(args, model: str, extra: list[str], goal: float) -> None:
    work = tempfile.mkdtemp(prefix="tlc-", dir=args.out)
    medians = {}
    for flag in ("--tlc", "--no-tlc"):
        subprocess.run(CLI + ["export", model, *extra, "--height", "720", "--width", "1280", flag,
                              "--stop-after", "simplified", "--out", work], check=True)
    for name in sorted(os.listdir(work)):
        if name.endswith(".onnx"):
            rep = bench(args, [os.path.join(work, name)], f"{model}-720p-{'tlc' if '-tlc.' in name else 'global'}")
            medians["tlc" if "-tlc." in name else "global"] = row(rep, "onnxruntime")["median_ms"]
    print(f"[2] {model} 720x1280 ONNX Runtime: TLC {medians['tlc']:.0f} ms, global {medians['global']:.0f} ms, "
          f"ratio {medians['tlc'] / medians['global']:.2f} (goal <= {goal})", flush=True)


def export_memory(args) -> None:
    work = tempfile.mkdtemp(prefix="mem-", dir=args.out)
    cmd = CLI + ["export", "restormer", "--fp16", "--height", "720", "--width", "1280", "--out", work]
    t0 = time.perf_counter()
    with PeakRss(interval=0.05) as mon:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        peak = mon.peak_mib()
    stages = re.findall(r"done in ([\d.]+) s - ([^:\n]+):.*\[peak RSS ([^\]]+)\]", proc.stderr)
    for secs, label, stage_peak in stages:
        print(f"    {label:<34} {float(secs):7.1f} s   peak RSS {stage_peak}")
    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}"
    print(f"[3] deploy-kit export restormer --fp16 720x1280: peak RSS of the process tree {peak / 1024:.2f} GiB "
          f"(goal <= 10), {time.perf_counter() - t0:.0f} s, {status}", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="1,2,3", help="subset of 1,2,3")
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--threads", type=int, help="threads of every CPU backend (default: all CPUs)")
    p.add_argument("--out", default="deploy-kit-out/bench-speed")
    p.add_argument("--restormer-tlc", action="store_true", help="also Restormer's Local/global ratio at 720p (slow)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    only = set(args.only.split(","))
    if "1" in only:
        ort_vs_torch(args)
    if "2" in only:
        tlc_vs_global(args, "nafnet", ["--variant", "gopro-w32"], 1.15)
        if args.restormer_tlc:
            tlc_vs_global(args, "restormer", [], 1.5)
    if "3" in only:
        export_memory(args)


if __name__ == "__main__":
    main()
