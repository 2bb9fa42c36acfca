"""Tiling figures: seam PSNR / time vs overlap (trained demo weights) and flat memory over 10 000 tiles.

Prints two markdown tables:
  (a) per model and overlap: PSNR of the tiled ONNX Runtime output vs the full-image PyTorch FP32
      output, overall, in a +-3 px band around tile boundaries (seam) and elsewhere; tiles and the
      pixel-work factor (sum of tile areas / image area); tiled time and its ratio to the cost the
      overlap implies (tiles x single-tile time; goal <= 1.1); plus border reflect padding on/off.
      Goal for the default overlap: seam PSNR >= 45 dB.
  (b) RSS growth after warm-up while 10 000 tiles go through ORT + tile_run (goal < 50 MB).

Usage: python benchmarks/bench_tiling.py [--quick] [--size 128] [--only a,b] [--work DIR] [--tiles 10000]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAF = os.path.join(REPO, "deploy_kit", "demo", "nafnet-demo-w16-noise25.pth")
RST = os.path.join(REPO, "deploy_kit", "demo", "restormer-demo-d12-blur9.pth")


def export(work: str, model: str, args: list[str], h: int, w: int, tag: str) -> str:
    """FP32 ONNX via the real CLI (cached in ``work``); returns its path."""
    out = os.path.join(work, tag)
    found = [f for f in os.listdir(out) if f.endswith(".fp32.onnx")] if os.path.isdir(out) else []
    if not found:
        cmd = [sys.executable, "-c", "from deploy_kit.cli import main; main()", "export", model, *args,
               "--height", str(h), "--width", str(w), "--backend", "none", "--samples", "1", "--out", out]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"export failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
        found = [f for f in os.listdir(out) if f.endswith(".fp32.onnx")]
    return os.path.join(out, found[0])


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def seam_table(work: str, size: int, overlaps: list[int], rows: list[str], threads: int) -> None:
    from deploy_kit.runtime.tiling import DEFAULT_OVERLAP
    from deploy_kit.seamcheck import SeamChecker

    specs = {
        "nafnet": ("NAFNet demo-w16 (global SCA)", "nafnet", ["--weights", NAF, "--no-tlc"], "naf"),
        "nafnet-tlc": ("NAFNet demo-w16 TLC (train 64)", "nafnet", ["--weights", NAF, "--tlc", "--train-size", "64"], "naftlc"),
        "restormer": ("Restormer demo-d12 (global attention)", "restormer", ["--weights", RST, "--no-tlc"], "rst"),
        "restormer-tlc": ("Restormer demo-d12 TLC (train 64)", "restormer", ["--weights", RST, "--tlc", "--train-size", "64"], "rsttlc"),
    }
    print(f"\n### (a) tiled ONNX Runtime vs full-image PyTorch FP32, engine {size}x{size}, FP32, {threads or 'default'} threads\n")
    print("| model | photo | overlap | border | tiles | pixel factor | PSNR dB | seam PSNR dB | elsewhere dB | worst seam | tiled s | time / implied cost |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in rows:
        label, model, args, tag = specs[key]
        path = export(work, model, args, size, size, f"{tag}-{size}")
        checker = SeamChecker(path, threads=threads)
        runs = [(o, 0) for o in overlaps if o < size] + [(DEFAULT_OVERLAP, DEFAULT_OVERLAP // 2)]
        try:
            for o, border in runs:
                r = checker.measure(o, border)
                w = r.worst_seam
                where = f"{w['axis']}={w['at']} ({w['psnr']:.1f} dB)" if w else "-"
                print(f"| {label} | {r.image_size[0]}x{r.image_size[1]} | {o} | {border} | {r.tiles} | {r.pixel_factor:.2f} | "
                      f"{r.psnr:.2f} | {r.seam_psnr:.2f} | {r.other_psnr:.2f} | {where} | {r.tiled_s:.2f} | {r.time_factor:.2f} |",
                      flush=True)
            print(f"|  | reference (full image, PyTorch) {checker.reference_s:.2f} s; one tile (ORT) {checker.tile_s * 1e3:.1f} ms |  |  |  |  |  |  |  |  |  |  |")
        finally:
            checker.close()


def memory_table(work: str, tiles: int, threads: int) -> None:
    from deploy_kit.runners.ort import OrtRunner
    from deploy_kit.runtime.tiling import make_plan, tile_run

    path = export(work, "nafnet", ["--variant", "tiny-notlc"], 64, 64, "tiny-64")
    tile, overlap = (64, 64), 16
    side = 64 + 9 * 48  # a 496x496 photo is 10 x 10 = 100 tiles
    per_call = make_plan(side, side, tile, overlap).tiles
    calls = max(2, tiles // per_call)
    img = np.random.default_rng(0).random((3, side, side), dtype=np.float32)
    samples = []
    with OrtRunner(path, threads=threads) as runner:
        fn = lambda t: runner.run(t)[0]  # noqa: E731
        t0 = time.perf_counter()
        tile_run(img, fn, tile, overlap)  # warm-up: ORT arena, first allocations
        tile_run(img, fn, tile, overlap)
        base = rss_mb()
        for i in range(calls - 2):
            tile_run(img, fn, tile, overlap)
            if i % 10 == 0:
                samples.append(rss_mb())
        end = rss_mb()
        seconds = time.perf_counter() - t0
    done = calls * per_call
    print(f"\n### (b) memory: {done} tiles of 64x64 through ORT (nafnet tiny-notlc) + tile_run, {calls} photos of {side}x{side}\n")
    print("| tiles | RSS after warm-up MB | RSS at end MB | growth MB | max RSS during MB | peak RSS (getrusage) MB | time s | goal |")
    print("|---|---|---|---|---|---|---|---|")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    growth = end - base
    print(f"| {done} | {base:.1f} | {end:.1f} | {growth:+.1f} | {max(samples + [end]):.1f} | {peak:.1f} | {seconds:.1f} | "
          f"{'pass' if growth < 50 else 'FAIL'} (< 50 MB) |")
    # one big photo of the same number of tiles: memory is the photo + the output accumulators, not per tile
    n = int(round(tiles ** 0.5))
    big = 64 + (n - 1) * 48
    plan = make_plan(big, big, tile, overlap)
    before = rss_mb()
    x = np.random.default_rng(1).random((3, big, big), dtype=np.float32)
    with OrtRunner(path, threads=threads) as runner:
        marks = []
        t0 = time.perf_counter()
        out = tile_run(x, lambda t: runner.run(t)[0], tile, overlap,
                       progress=lambda d, total: marks.append(rss_mb()) if d in (total // 10, total) else None)
        seconds = time.perf_counter() - t0
    arrays = 4 * x.nbytes / 2 ** 20  # photo + padded/view + accumulator + cropped output
    print(f"\none {big}x{big} photo = {plan.tiles} tiles in {seconds:.1f} s: RSS {before:.0f} MB before, "
          f"{marks[0]:.0f} MB at 10 % of the tiles, {marks[-1]:.0f} MB at 100 % (photo arrays <= {arrays:.0f} MB: "
          f"the accumulator's pages are touched as tiles land, nothing per tile is kept); output {out.shape}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="overlaps 0,16,32,64; NAFNet TLC + no TLC + Restormer; 2 000 tiles")
    ap.add_argument("--size", type=int, default=128, help="engine (tile) size")
    ap.add_argument("--only", default="a,b")
    ap.add_argument("--tiles", type=int, help="tiles for the memory benchmark (default 10000, quick 2000)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", help="directory for the exported ONNX files (kept; default: a temp dir)")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="dk-bench-tiling-")
    os.makedirs(work, exist_ok=True)
    only = set(a.only.split(","))
    if "a" in only:
        overlaps = [0, 16, 32, 64] if a.quick else [0, 8, 16, 32, 48, 64, 96]
        rows = ["nafnet-tlc", "nafnet", "restormer"] + ([] if a.quick else ["restormer-tlc"])
        seam_table(work, a.size, overlaps, rows, a.threads)
    if "b" in only:
        memory_table(work, a.tiles or (2000 if a.quick else 10000), a.threads)


if __name__ == "__main__":
    main()
