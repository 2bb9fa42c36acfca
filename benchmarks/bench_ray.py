"""``deploy-kit run`` locally vs on Ray (``run --ray``): images/s and frames/s with 1 and 2 workers, and
what Ray adds per item.

Prints two Markdown tables:
  1. a folder of images and a video through the tiny demo NAFNet (64x64 tiles), locally (one process,
     the backend's default threads) and on Ray with 1 and 2 workers (one CPU and one model thread each):
     images/s, MP/s and frames/s of the work (the workers' start-up apart, in its own column);
  2. the same through an identity model (a 1x1 convolution with identity weights: no model cost), so
     that Ray's cost per item stands out: (Ray with 1 worker - local) / items, for images and for frames
     (dispatch, results back, the driver's commit; for a video, the split into segments and the join).

By default a local cluster of --cpus CPUs is started here (``ray.init``); ``--address HOST:PORT`` runs
on a cluster started with ``ray start --head`` instead (inputs and outputs then go to --work, which
must be a folder every node sees; see docs/cluster.md). Each configuration runs --repeats times,
alternating, and the best time is kept (this machine is shared: compare within one run).

Usage: python benchmarks/bench_ray.py [--work DIR] [--images 24] [--size 256x192] [--frames 96]
                                      [--repeats 2] [--cpus 2] [--address HOST:PORT]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def _export(work: str, name: str, *args: str) -> str:
    """A bundle made by ``deploy-kit export ARGS --bundle`` in ``work/bundle-NAME`` (cached)."""
    out = os.path.join(work, f"bundle-{name}")
    if not os.path.isdir(out):
        cmd = [sys.executable, "-c", "from deploy_kit.cli import main; main()", "export", *args, "--backend", "none",
               "--samples", "1", "--bundle", "--out", out]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"export failed: {' '.join(cmd)}\n{r.stderr[-1500:]}")
    return os.path.join(out, next(f for f in os.listdir(out) if f.endswith(".bundle")))


def _identity_onnx(work: str) -> str:
    """A 64x64 graph whose output is its input (1x1 convolution, identity weights; exact in float32)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    path = os.path.join(work, "identity.onnx")
    if not os.path.exists(path):
        w = numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "w")
        node = helper.make_node("Conv", ["input", "w"], ["output"], kernel_shape=[1, 1])
        io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, 64, 64]) for n in ("input", "output")]
        model = helper.make_model(helper.make_graph([node], "identity", io[:1], io[1:], [w]),
                                  opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.save(model, path)
    return path


def _inputs(work: str, count: int, width: int, height: int, frames: int) -> tuple[list[str], list[str]]:
    """``count`` PNG photos-like images and one FFV1 .mkv of ``frames`` frames (a keyframe every 12) with audio."""
    from deploy_kit.runtime.imageio import ImageInfo, encode_image
    from tests.media import make_clip

    folder = os.path.join(work, f"in-{count}-{width}x{height}")
    os.makedirs(folder, exist_ok=True)
    images = []
    for i in range(count):
        p = os.path.join(folder, f"p{i:03d}.png")
        if not os.path.exists(p):
            rng = np.random.default_rng(i)
            y, x = np.mgrid[0:height, 0:width]
            base = 128 + 60 * np.sin(x / (7 + i)) * np.cos(y / 11)
            img = np.clip(base[..., None] + rng.normal(0, 12, (height, width, 3)), 0, 255).astype(np.uint8)
            encode_image(p, img, ImageInfo("PNG", 3, False, 8))
        images.append(p)
    clip = os.path.join(work, f"clip-{frames}.mkv")
    if not os.path.exists(clip):
        make_clip(clip, frames=frames, width=width, height=height, fps=25, audio=True, codec="ffv1")
    return images, [clip]


class _Clock:
    """An ``echo`` that notes when the Ray workers were ready (the line naming what they run)."""

    def __init__(self):
        self.ready = None
        self.lines: list[str] = []

    def __call__(self, line: str = "", err: bool = False) -> None:
        self.lines.append(line)
        if self.ready is None and line.startswith("ray: workers run"):
            self.ready = time.perf_counter()


def _local(bundle: str, files: list[str], out: str, opts) -> float:
    """Seconds of a local run (the Restorer opened beforehand, as a running service would have it)."""
    from deploy_kit.runtime.job import run_job
    from deploy_kit.runtime.restorer import Restorer

    shutil.rmtree(out, ignore_errors=True)
    with Restorer(bundle, opts.backend) as restorer:
        t0 = time.perf_counter()
        result = run_job(opts, files, out, restorer=restorer)
        dt = time.perf_counter() - t0
    assert not result.failed, result.failed
    return dt


def _ray(files: list[str], out: str, opts, address: str, workers: int) -> tuple[float, float, dict]:
    """(seconds of work, seconds to start the workers, per_node) of a Ray run with ``workers`` actors."""
    from deploy_kit.runtime.cluster import run_on_ray
    from deploy_kit.runtime.job import job_options
    from deploy_kit.runtime.journal import Journal, fingerprint

    shutil.rmtree(out, ignore_errors=True)
    clock = _Clock()
    # a fresh folder each time: the journal's fingerprint only has to be valid (overlap 0 stands in)
    fp = fingerprint(opts.target, f"{opts.backend} on Ray", job_options(opts, 0))
    with Journal.open(out, fp) as journal:
        t0 = time.perf_counter()
        result = run_on_ray(opts, files, out, journal, address=address, echo=clock, workers=workers)
        end = time.perf_counter()
    assert not result.failed, result.failed
    return end - clock.ready, clock.ready - t0, result.per_node


def _round_trip(bundle: str, calls: int = 200) -> tuple[float, float]:
    """Ray's own cost of one task: ms per empty ``images`` call to a worker, one at a time (latency) and
    with two queued as ``run --ray`` keeps them (throughput)."""
    import ray

    from deploy_kit.runtime.cluster import IN_FLIGHT, RestoreWorker
    from deploy_kit.runtime.journal import JobOptions

    actor = ray.remote(RestoreWorker).options(num_cpus=1).remote(JobOptions(bundle), 1)
    try:
        ray.get(actor.hello.remote())
        t0 = time.perf_counter()
        for k in range(calls):
            ray.get(actor.images.remote(k, [], tempfile.gettempdir(), None))
        serial = (time.perf_counter() - t0) / calls * 1000
        t0 = time.perf_counter()
        pending = [actor.images.remote(k, [], tempfile.gettempdir(), None) for k in range(IN_FLIGHT)]
        for k in range(IN_FLIGHT, calls):
            ray.get(pending.pop(0))
            pending.append(actor.images.remote(k, [], tempfile.gettempdir(), None))
        ray.get(pending)
        queued = (time.perf_counter() - t0) / calls * 1000
    finally:
        ray.kill(actor)
    return serial, queued


def _measure(bundle: str, images: list[str], videos: list[str], work: str, address: str, repeats: int,
             codec: str, crf) -> dict:
    """Best seconds per (kind, config) over ``repeats`` alternating rounds; and the workers' start-up."""
    from deploy_kit.runtime.journal import JobOptions

    opts = JobOptions(bundle, codec=codec, crf=crf)
    best: dict = {}
    startup: dict = {}
    for _ in range(repeats):
        for kind, files in (("images", images), ("video", videos)):
            for config in ("local", 1, 2):
                out = os.path.join(work, f"out-{kind}-{config}")
                if config == "local":
                    dt = _local(bundle, files, out, opts)
                else:
                    dt, up, _ = _ray(files, out, opts, address, config)
                    startup[config] = min(startup.get(config, up), up)
                best[(kind, config)] = min(best.get((kind, config), dt), dt)
    best["startup"] = startup
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--work", default=None, help="folder for bundles, inputs and outputs (default: a temp folder)")
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--size", default="256x192", help="WxH of the images and the video")
    ap.add_argument("--frames", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local cluster started here")
    ap.add_argument("--address", default=None, help="a running cluster (ray start --head) instead of a local one")
    args = ap.parse_args()
    import ray

    from deploy_kit.runtime.video import plan_segments

    width, height = (int(v) for v in args.size.split("x"))
    work = args.work or tempfile.mkdtemp(prefix="bench-ray-")
    os.makedirs(work, exist_ok=True)
    nafnet = _export(work, "nafnet", "nafnet", "--variant", "tiny", "--height", "64", "--width", "64", "--train-size", "32")
    identity = _export(work, "identity", _identity_onnx(work), "--height", "64", "--width", "64")
    images, videos = _inputs(work, args.images, width, height, args.frames)
    if args.address:
        ray.init(address=args.address, logging_level=logging.WARNING)
    else:
        ray.init(num_cpus=args.cpus, include_dashboard=False, logging_level=logging.WARNING)
    address = ray.get_runtime_context().gcs_address
    res = ray.cluster_resources()
    try:
        segs = [len(plan_segments(videos[0], 2 * w)) for w in (1, 2)]
        mp = args.images * width * height / 1e6
        print(f"\n### Local vs Ray: {args.images} PNGs of {width}x{height} ({mp:.1f} MP), one {width}x{height} "
              f"video of {args.frames} frames (FFV1 in, FFV1 out; {segs[0]} / {segs[1]} segments with 1 / 2 workers)")
        print(f"cluster: {int(res.get('CPU', 0))} CPUs, {int(res.get('GPU', 0))} GPUs "
              f"({'given: ' + args.address if args.address else 'local, started here'}); best of {args.repeats}\n")
        rows = {}
        for name, bundle in (("tiny NAFNet", nafnet), ("identity", identity)):
            rows[name] = _measure(bundle, images, videos, work, address, args.repeats, "ffv1", None)
        print("| model | run | images/s | MP/s | frames/s | workers' start-up s |")
        print("|---|---|---|---|---|---|")
        for name, best in rows.items():
            for config in ("local", 1, 2):
                label = "local (1 process)" if config == "local" else f"Ray, {config} worker{'s' if config > 1 else ''}"
                up = "-" if config == "local" else f"{best['startup'][config]:.1f}"
                ti, tv = best[("images", config)], best[("video", config)]
                print(f"| {name} | {label} | {args.images / ti:.2f} | {mp / ti:.2f} | {args.frames / tv:.1f} | {up} |")
        serial, queued = _round_trip(identity)
        ident = rows["identity"]
        per_image = (ident[("images", 1)] - ident[("images", "local")]) / args.images * 1000
        per_frame = (ident[("video", 1)] - ident[("video", "local")]) / args.frames * 1000
        per_video = ident[("video", 1)] - ident[("video", "local")]
        print("\n### What Ray adds (identity model: Ray with 1 worker minus local, workers' start-up excluded; "
              "and Ray's round trip of one empty task)\n")
        print("| item | Ray's overhead |")
        print("|---|---|")
        # below zero when the driver's commits (hash, fsync, rename) overlapping the worker gain more than Ray costs
        beside = " (the driver's commits ran beside the worker, in another process)" if per_image < 0 else ""
        print(f"| per image, end to end | {per_image:.1f} ms{beside} |")
        print(f"| per task, Ray's round trip (empty task) | {serial:.2f} ms one at a time, {queued:.2f} ms with "
              "2 queued per worker |")
        beside = " (split, join and commit ran beside the worker)" if per_frame < 0 else ""
        print(f"| per video frame, end to end | {per_frame:.2f} ms{beside} ({per_video:.2f} s for the "
              f"{args.frames}-frame video: split into {segs[0]} segments, joined) |")
        print(f"| workers' start-up (connect, start the actors, open the model), once per job | "
              f"{ident['startup'][1]:.1f} s (1 worker), {ident['startup'][2]:.1f} s (2 workers) |")
    finally:
        ray.shutdown()
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
