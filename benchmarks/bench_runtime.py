"""The runtime's own cost and its pipelining, measured without a GPU.

Prints Markdown tables:
  1. overhead: ms per megapixel of tiling + blending around a model that costs nothing (an identity
     runner), 256x256 tiles, 4000x3000 uint8 frame, one thread: before (the code at 716482d, loaded
     from git) and now, batch 1 and 4. Goal <= 10 ms/MP.
  2. the whole run path on a 12 MP PNG with that identity model: decode -> tile -> model -> blend ->
     encode, files in and out (the code path of ``deploy-kit run`` once the bundle is open), before and
     now. Goal <= 50 ms/MP.
  F. the runtime against the codec floor: one 12 MP PNG through the identity model (``restore_images``, as
     ``deploy-kit run`` does once the bundle is open) vs OpenCV decoding and encoding the same PNG once
     (imdecode + imwrite), alternating in one process, best of ``--repeats``; their ratio against the
     goal of 1.2, and the identity run's peak RSS (``deploy_kit.memory``).
  3. SIMULATION — efficiency against an engine-bound rate: a simulated engine (benchmark only) that
     takes L ms per call of N tiles on a serial "GPU" queue, with two passes in flight as the engine
     runner allows, and releases the GIL while it "runs". Efficiency = (calls x L) / wall time, for a
     folder of 12 MP PNGs and a 1080p video, L = 2, 5, 20 ms. Goal >= 0.9 at 5 and 20 ms. These are
     not TensorRT figures: they say whether the runtime keeps a given engine busy.
  4. ONNX Runtime (CPU) MP/s of the demo NAFNet at 256x256, batch 1/2/4/8 (``export --batch N``).
  5. 1080p video frames/s through ONNX Runtime with the demo NAFNet (a few frames: CPU).
  6. peak RSS of ``deploy-kit run`` on a 12 MP PNG through a 256x256 demo NAFNet bundle (ONNX Runtime,
     batch 1 and 4); goal <= 600 MB (an 8 GB Orin Nano shares its memory with the GPU).
Decode/encode per library: ``python benchmarks/bench_imageio.py``.

Usage: python benchmarks/bench_runtime.py [--only F,1,3,4,5,6] [--work DIR] [--threads N] [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEFORE = "716482d"  # the runtime before it was pipelined (one tile at a time, float frames, Pillow PNG)
TILE = 256
H12, W12 = 3000, 4000

sys.path.insert(0, REPO)
from deploy_kit.manifest import Manifest  # noqa: E402
from deploy_kit.runners.base import Pending, Runner  # noqa: E402


class IdentityRunner(Runner):
    """A model that costs nothing: its output is a copy of its input (a real runner's outputs are its own)."""

    def __init__(self, batch: int):
        self.input_shape = (batch, 3, TILE, TILE)

    def run(self, x):
        return [x.copy()]


class SimulatedEngine(Runner):
    """SIMULATION (benchmark only): an engine taking ``ms`` per call on one serial device queue.

    ``submit`` copies the batch (as into pinned memory) and returns at once; the pass "ends" ``ms`` after
    the previous one ended (or after it was submitted); ``wait`` sleeps until then (releasing the GIL),
    like a stream synchronisation. ``slots`` passes may be in flight, as with the engine runner.
    """

    slots = 2

    def __init__(self, batch: int, ms: float):
        self.input_shape = (batch, 3, TILE, TILE)
        self.seconds = ms / 1000.0
        self.calls = 0
        self._free_at = 0.0
        self._lock = threading.Lock()

    def submit(self, x):
        with self._lock:
            self.calls += 1
            done = max(time.perf_counter(), self._free_at) + self.seconds
            self._free_at = done
        out = x.copy()

        class _P(Pending):
            def wait(self_inner):
                delay = done - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                return [out]

        return _P([out])

    def run(self, x):
        return self.submit(x).wait()


def manifest(batch: int) -> Manifest:
    return Manifest.for_runner((batch, 3, TILE, TILE), pad_multiple=16)


def photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A photo-like uint8 frame: smooth shapes plus mild noise (compresses like a photo, not like noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([0.5 + 0.35 * np.sin(yy / 97 + c) * np.cos(xx / 131 - c) for c in range(3)], -1)
    return np.clip(base * 255 + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)


def ms_per_mp(seconds: float, pixels: int) -> float:
    return seconds * 1000 / (pixels / 1e6)


def old_runtime(work: str):
    """The deploy-kit tree at BEFORE, checked out into ``work`` (None when git cannot)."""
    path = os.path.join(work, "before")
    if not os.path.isdir(path):
        r = subprocess.run(["git", "-C", REPO, "worktree", "add", "--detach", path, BEFORE], capture_output=True, text=True)
        if r.returncode != 0:
            return None
    return path


OLD_SNIPPET = r"""
import sys, time, json, numpy as np
sys.path.insert(0, {root!r})
from deploy_kit.runtime.tiling import tile_run
from deploy_kit.runtime.restore import restore_file
class Identity:
    name = "identity"
    def run(self, x):
        return [x.copy()]
img = np.load({npy!r}).astype(np.float32).transpose(2, 0, 1) / 255
tile_run(img[:, :600, :600], lambda t: t.copy(), ({t}, {t}), 32, 16)
times = []
for _ in range(3):
    t0 = time.perf_counter(); tile_run(img, lambda t: t.copy(), ({t}, {t}), 32, 16); times.append(time.perf_counter() - t0)
t0 = time.perf_counter(); restore_file(Identity(), {png!r}, {dst!r}, channels=3, tile=({t}, {t}), overlap=32, multiple=16)
print(json.dumps({{"tile": min(times), "run": time.perf_counter() - t0}}))
"""


def section_overhead(work: str) -> None:
    from deploy_kit.runtime.imageio import encode_image, ImageInfo
    from deploy_kit.runtime.restore import restore_images
    from deploy_kit.runtime.restorer import Restorer
    from deploy_kit.runtime.tiling import TileGrid

    img = photo(H12, W12)
    px = H12 * W12
    src_dir = os.path.join(work, "png12")
    os.makedirs(src_dir, exist_ok=True)
    png = os.path.join(src_dir, "photo.png")
    if not os.path.exists(png):
        encode_image(png, img, ImageInfo("PNG", 3, False, 8))
    rows = []
    old = old_runtime(work)
    if old is not None:
        npy = os.path.join(work, "photo.npy")
        np.save(npy, img)
        code = OLD_SNIPPET.format(root=old, npy=npy, t=TILE, png=png, dst=os.path.join(work, "old-out.png"))
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        if r.returncode == 0:
            import json

            got = json.loads(r.stdout.strip().splitlines()[-1])
            rows.append((f"before ({BEFORE}), batch 1", ms_per_mp(got["tile"], px), ms_per_mp(got["run"], px)))
        else:
            print(f"(before: could not run the old code: {r.stderr.strip()[-300:]})")
    for batch in (1, 4):
        grid = TileGrid(H12, W12, (TILE, TILE), 32, 16, batch=batch)
        buf = np.empty((batch, 3, TILE, TILE), np.float32)
        acc = grid.new_accumulator(3)
        runner = IdentityRunner(batch)

        def once():
            acc.fill(0.0)
            padded = grid.prepare(img)
            for call in range(grid.calls):
                grid.fill(padded, call, buf)
                grid.accumulate(acc, call, runner.run(buf)[0])

        once()
        tile_s = min(_timed(once) for _ in range(3))
        with Restorer(runner=IdentityRunner(batch), manifest=manifest(batch), overlap=32) as rest:
            t0 = time.perf_counter()
            res = restore_images(rest, [png], os.path.join(work, f"out-b{batch}"))
            run_s = time.perf_counter() - t0
        assert res.written and not res.failed
        rows.append((f"now, batch {batch}", ms_per_mp(tile_s, px), ms_per_mp(run_s, px)))
    print("\n### 1-2. The runtime's own cost: identity model, 256x256 tiles, overlap 32, 4000x3000 photo\n")
    print("| runtime | tile + blend, one thread (ms/MP; goal <= 10) | whole run: PNG in -> PNG out (ms/MP; goal <= 50) |")
    print("|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a:.1f} | {b:.1f} |")


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def section_floor(work: str, repeats: int) -> None:
    """F: the identity run of one 12 MP PNG against OpenCV's decode + encode of it, in this process."""
    from deploy_kit._deps import opencv
    from deploy_kit.memory import peak_rss_mib, reset_peak_rss
    from deploy_kit.runtime.imageio import ImageInfo, encode_image
    from deploy_kit.runtime.restore import restore_images
    from deploy_kit.runtime.restorer import Restorer

    cv2 = opencv()
    png = os.path.join(work, "floor12.png")
    if not os.path.exists(png):
        encode_image(png, photo(H12, W12, seed=3), ImageInfo("PNG", 3, False, 8))
    out_dir = os.path.join(work, "floor-out")
    os.makedirs(out_dir, exist_ok=True)

    def codec() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        arr = cv2.imdecode(np.fromfile(png, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(os.path.join(out_dir, "cv2.png"), arr)
        return time.perf_counter() - t0, time.process_time() - c0

    peak = [0.0]  # the process's resident-set high-water mark during an identity run (reset before each)

    def identity() -> tuple[float, float]:
        reset_peak_rss()
        with Restorer(runner=IdentityRunner(1), manifest=manifest(1), overlap=32) as rest:
            t0, c0 = time.perf_counter(), time.process_time()
            res = restore_images(rest, [png], out_dir)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert res.written and not res.failed
        peak[0] = max(peak[0], peak_rss_mib())
        return wall, cpu

    codec(), identity()  # warm: imports, page cache, the OpenCV thread pool
    floors, runs = [], []
    for _ in range(repeats):  # alternating, so a busy neighbour slows both alike
        floors.append(codec())
        runs.append(identity())
    f, r = min(w for w, _ in floors), min(w for w, _ in runs)
    fc, rc = min(c for _, c in floors), min(c for _, c in runs)
    px = H12 * W12
    print("\n### F. The runtime against the codec floor: identity model, one 4000x3000 PNG (batch 1, 256x256, overlap 32)\n")
    print(f"best of {repeats}, alternating; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (wall times "
          "need free cores; CPU times, all threads of this process, are the steadier figure on a busy machine)")
    print("| | OpenCV decode + encode | identity run, PNG in -> PNG out | ratio (goal <= 1.2) |")
    print("|---|---|---|---|")
    print(f"| wall ms/MP | {ms_per_mp(f, px):.1f} | {ms_per_mp(r, px):.1f} | {r / f:.2f} |")
    print(f"| CPU ms/MP | {ms_per_mp(fc, px):.1f} | {ms_per_mp(rc, px):.1f} | {rc / fc:.2f} |")
    print(f"\npeak RSS of the identity run: {peak[0]:.0f} MiB")


def section_simulated(work: str) -> None:
    from deploy_kit.runtime.imageio import ImageInfo, encode_image
    from deploy_kit.runtime.restore import restore_images
    from deploy_kit.runtime.restorer import Restorer

    folder = os.path.join(work, "folder12")
    os.makedirs(folder, exist_ok=True)
    files = []
    for i in range(8):  # enough images that the pipeline's fill and drain (one decode, one encode) weigh little
        p = os.path.join(folder, f"p{i}.png")
        if not os.path.exists(p):
            encode_image(p, photo(H12, W12, seed=i), ImageInfo("PNG", 3, False, 8))
        files.append(p)
    clip = _clip(work)
    print("\n### 3. SIMULATION: efficiency against an engine-bound rate (simulated engine, not TensorRT)\n")
    print("| input | batch | L ms/call | calls | engine-bound s | wall s | efficiency (goal >= 0.9 at 5, 20 ms) |")
    print("|---|---|---|---|---|---|---|")
    for ms in (2, 5, 20):
        for batch in (1, 4):
            eng = SimulatedEngine(batch, ms)
            with Restorer(runner=eng, manifest=manifest(batch), overlap=32) as rest:
                t0 = time.perf_counter()
                res = restore_images(rest, files, os.path.join(work, "sim-out"))
                wall = time.perf_counter() - t0
            assert len(res.written) == len(files)
            bound = eng.calls * ms / 1000
            print(f"| {len(files)} x 12 MP PNG | {batch} | {ms} | {eng.calls} | {bound:.2f} | {wall:.2f} | {bound / wall:.2f} |")
            if clip is None:
                continue
            from deploy_kit.runtime.video import transcode

            eng = SimulatedEngine(batch, ms)
            with Restorer(runner=eng, manifest=manifest(batch), overlap=32) as rest:
                t0 = time.perf_counter()
                stats = transcode(clip, os.path.join(work, "sim-out", "clip.mp4"), rest.restore_stream)
                wall = time.perf_counter() - t0
            bound = eng.calls * ms / 1000
            print(f"| 1080p video, {stats.frames} frames | {batch} | {ms} | {eng.calls} | {bound:.2f} | {wall:.2f} | {bound / wall:.2f} |")


def _clip(work: str, frames: int = 48):
    try:
        import av  # noqa: F401
    except ImportError:
        print("(video: PyAV is not installed: pip install 'deploy-kit[video]')")
        return None
    sys.path.insert(0, os.path.join(REPO))
    from tests.media import make_clip

    path = os.path.join(work, "clip1080.mp4")
    if not os.path.exists(path):
        make_clip(path, frames=frames, width=1920, height=1080, fps=24, audio=True)
    return path


def _export(work: str, batch: int, size: int = TILE) -> str:
    out = os.path.join(work, f"demo-b{batch}")
    cmd = [sys.executable, "-c", "from deploy_kit.cli import main; main()", "export", "nafnet", "--variant", "demo-w16",
           "--height", str(size), "--width", str(size), "--batch", str(batch), "--backend", "none", "--samples", "1",
           "--bundle", "--out", out]
    if not os.path.isdir(out):
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"export failed: {' '.join(cmd)}\n{r.stderr[-1500:]}")
    return os.path.join(out, next(f for f in os.listdir(out) if f.endswith(".bundle")))


def section_ort_batch(work: str, threads: int) -> None:
    from deploy_kit.backends import OrtRunOptions
    from deploy_kit.runtime.restorer import Restorer

    print(f"\n### 4. ONNX Runtime (CPU, {threads} threads) MP/s, demo NAFNet-w16 at 256x256, by static batch\n")
    print("| batch | ms per call (median of 5) | MP/s |")
    print("|---|---|---|")
    for batch in (1, 2, 4, 8):
        bundle = _export(work, batch)
        with Restorer(bundle, "onnxruntime", run_options=OrtRunOptions(threads=threads)) as r:
            x = np.random.default_rng(0).random((batch, 3, TILE, TILE)).astype(np.float32)
            r.runner.run(x)
            times = [_timed(lambda: r.runner.run(x)) for _ in range(5)]
        med = statistics.median(times)
        print(f"| {batch} | {med * 1000:.0f} | {batch * TILE * TILE / 1e6 / med:.3f} |")


def section_video_ort(work: str, threads: int, frames: int = 6) -> None:
    from deploy_kit.backends import OrtRunOptions
    from deploy_kit.runtime.restorer import Restorer

    clip = _clip(work)
    if clip is None:
        return
    from deploy_kit.runtime.video import transcode

    short = os.path.join(work, f"clip1080-{frames}.mp4")
    if not os.path.exists(short):
        from tests.media import make_clip

        make_clip(short, frames=frames, width=1920, height=1080, fps=24, audio=True)
    bundle = _export(work, 4)
    with Restorer(bundle, "onnxruntime", run_options=OrtRunOptions(threads=threads)) as r:
        stats = transcode(short, os.path.join(work, "ort-out.mp4"), r.restore_stream)
    print(f"\n### 5. 1080p video through ONNX Runtime (CPU, {threads} threads), demo NAFNet-w16 256x256 batch 4\n")
    print(f"{stats.frames} frames in {stats.seconds:.1f} s: {stats.fps:.3f} frames/s "
          f"({1920 * 1080 * stats.fps / 1e6:.3f} MP/s)")


def section_memory(work: str) -> None:
    from deploy_kit.runtime.imageio import ImageInfo, encode_image

    png = os.path.join(work, "mem12.png")
    if not os.path.exists(png):
        encode_image(png, photo(H12, W12, seed=7), ImageInfo("PNG", 3, False, 8))
    print("\n### 6. Peak RSS of `deploy-kit run` on a 12 MP PNG, demo NAFNet-w16 256x256 bundle, ONNX Runtime CPU\n")
    print("| batch | wall s | peak RSS MB (goal <= 600) | closing line |")
    print("|---|---|---|---|")
    for batch in (1, 4):
        bundle = _export(work, batch)
        out = os.path.join(work, f"mem-out-b{batch}")
        shutil.rmtree(out, ignore_errors=True)  # a folder with the output done would be skipped, not restored
        cmd = [sys.executable, "-c", "from deploy_kit.cli import main; main()", "run", bundle, png, "--out",
               out, "--backend", "onnxruntime"]
        # each measurement in its own child: ru_maxrss of RUSAGE_CHILDREN is the largest child so far
        probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                 "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); print(r.returncode); "
                 "print((r.stdout.strip().splitlines() or [''])[-1]); print(r.stderr[-500:] if r.returncode else '')")
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", probe, *cmd], capture_output=True, text=True)
        wall = time.perf_counter() - t0
        lines = r.stdout.splitlines()
        if len(lines) < 3 or lines[1] != "0":
            print(f"| {batch} | {wall:.1f} | run failed: {r.stdout[-300:]} {r.stderr[-300:]} | |")
            continue
        print(f"| {batch} | {wall:.1f} | {int(lines[0]) / 1024:.0f} | {lines[2]} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="F,1,3,4,5,6")
    ap.add_argument("--repeats", type=int, default=5, help="section F: alternating runs of each (best taken)")
    ap.add_argument("--work", default=None, help="work folder (kept; default: a temporary one)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    only = set(args.only.split(","))
    work = args.work or tempfile.mkdtemp(prefix="dk-bench-runtime-")
    os.makedirs(work, exist_ok=True)
    print(f"machine: {os.cpu_count()} CPUs; numpy {np.__version__}; work folder {work}")
    if "F" in only:
        section_floor(work, args.repeats)
    if only & {"1", "2"}:
        section_overhead(work)
    if "3" in only:
        section_simulated(work)
    if "4" in only:
        section_ort_batch(work, args.threads)
    if "5" in only:
        section_video_ort(work, args.threads)
    if "6" in only:
        section_memory(work)


if __name__ == "__main__":
    main()
