"""Encoder speed at 1080p: x264 presets alone, and whole identity transcodes (decode -> restore ->
encode) at a few presets, to see when the encoder bounds a `run`.

    python benchmarks/bench_video.py [--frames 60] [--size 1920x1080] [--crf 18]

Prints one table: encode-only frames/s per preset (deploy_kit.runtime.video.encode_only_fps,
synthetic textured frames), then for the whole runs frames/s, encode-side seconds share and
whether the run was encoder-bound (VideoStats.encoder_bound). Needs PyAV (the `video` extra).
Timings depend on the CPU (x264 uses every core) and on content; compare rows of one run.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from deploy_kit.runtime import video  # noqa: E402

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow")
RUN_PRESETS = ("ultrafast", "veryfast", "medium")


def make_source(path: str, width: int, height: int, frames: int) -> str:
    """A near-lossless (x264 crf 10 ultrafast) 1080p clip of the same synthetic frames."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    noise = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.options = {"crf": "10", "preset": "ultrafast"}
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(video._synthetic_frame(i, width, height, noise), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def identity(frames):
    yield from frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", default="1920x1080")
    parser.add_argument("--crf", type=int, default=18)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    print(f"{width}x{height}, {args.frames} frames, crf {args.crf}, {os.cpu_count()} CPUs")
    print(f"{'preset':<10} {'encode-only fps':>16}")
    for preset in PRESETS:
        fps = video.encode_only_fps(width, height, "libx264", args.crf, preset, frames=args.frames)
        print(f"{preset:<10} {fps:>16.1f}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        src = make_source(os.path.join(tmp, "src.mp4"), width, height, args.frames)
        decode_started = time.perf_counter()
        decoded = sum(1 for _ in video.read_frames(src))
        decode_fps = decoded / (time.perf_counter() - decode_started)
        print(f"source made in {decode_started - t0:.1f} s; decode to RGB alone: {decode_fps:.1f} fps")
        print(f"{'preset':<10} {'run fps':>8} {'encode fps':>11} {'encode share':>13} {'encoder-bound':>14}")
        for preset in RUN_PRESETS:
            stats = video.transcode(src, os.path.join(tmp, f"out_{preset}.mp4"), identity,
                                    crf=args.crf, preset=preset)
            print(f"{preset:<10} {stats.fps:>8.1f} {stats.encode_fps:>11.1f} {stats.encode_share:>13.2f} "
                  f"{str(stats.encoder_bound):>14}", flush=True)


if __name__ == "__main__":
    main()
