"""Synthetic test media written with PyAV (no files shipped, nothing downloaded).

Tests import ``from tests.media import make_clip``; the caller skips when PyAV is missing
(``pytest.importorskip("av")``) before calling it.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np

AUDIO_RATE = 48000
TONE_HZ = 440.0


def gradient_frame(index: int, width: int, height: int) -> np.ndarray:
    """Frame ``index`` of the synthetic clip: a colour gradient moving right by 4 px a frame.

    Smooth content (not noise) so H.264 at the default quality reproduces it closely, and the motion
    makes each frame different (a decoder that repeats, drops or reorders frames shows up). Values
    stay in 16..235, so no channel clips in limited-range YUV.

    Args:
        index: frame number (any int; the pattern repeats every ``width / 4`` frames).
        width: frame width in pixels.
        height: frame height in pixels.

    Returns:
        An H x W x 3 uint8 RGB array (C-contiguous).
    """
    x = (np.arange(width, dtype=np.float32)[None, :] + 4.0 * index) / max(width, 1)
    y = np.arange(height, dtype=np.float32)[:, None] / max(height, 1)
    shape = (height, width)
    r = np.broadcast_to(0.5 + 0.5 * np.sin(2.0 * math.pi * x), shape)
    g = np.broadcast_to(y, shape)
    b = 0.5 + 0.25 * np.cos(2.0 * math.pi * (x + y))
    rgb = np.stack([r, g, b], axis=-1)
    return np.ascontiguousarray((np.clip(rgb, 0.0, 1.0) * 219.0 + 16.0).astype(np.uint8))


def make_clip(path, *, frames: int = 12, width: int = 96, height: int = 64, fps=24, audio: bool = True,
              codec: str = "libx264", container_options: dict | None = None, rotation: int = 0) -> str:
    """Write a small synthetic clip: a moving gradient, plus a 440 Hz sine tone (AAC) when ``audio``.

    The container follows the extension (``.mp4``, ``.mkv``, ``.mov``, ...). Odd sizes are encoded as
    yuv444p (4:2:0 needs even dimensions), even sizes as yuv420p. Frame ``i`` has pts ``i`` in a
    ``1/fps`` time base (constant frame rate); the audio lasts as long as the video.

    Args:
        path: output file (str or path-like); its folder must exist.
        frames: number of video frames.
        width: frame width in pixels.
        height: frame height in pixels.
        fps: frame rate (int, float or ``fractions.Fraction``, e.g. ``Fraction(30000, 1001)``).
        audio: add a mono AAC audio stream at 48 kHz.
        codec: video encoder name known to FFmpeg (``libx264``, ``mpeg4``, ...).
        container_options: muxer options, e.g. ``{"movflags": "faststart"}`` for an MP4 whose index
            comes first (a truncated copy of it still opens, like a cut download).
        rotation: display rotation in degrees counter-clockwise, stored as the stream's display
            matrix like a phone does (needs PyAV >= 18); the frames themselves stay W x H.

    Returns:
        ``path`` as a str.

    Raises:
        ImportError: PyAV is not installed (callers skip first: ``pytest.importorskip("av")``).
    """
    import av

    path = os.fspath(path)
    rate = Fraction(fps).limit_denominator(1_000_000)
    with av.open(path, "w", container_options=container_options or {}) as out:
        video = out.add_stream(codec, rate=rate)
        video.width, video.height = width, height
        formats = [f.name for f in (video.codec_context.codec.video_formats or ())]
        even = width % 2 == 0 and height % 2 == 0
        video.pix_fmt = "yuv420p" if even or "yuv444p" not in formats else "yuv444p"
        video.codec_context.time_base = 1 / rate
        if rotation:
            video.set_display_rotation(rotation)
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
            sound.codec_context.time_base = Fraction(1, AUDIO_RATE)
        chunks = []
        if sound is not None:
            total = int(round(frames / rate * AUDIO_RATE))
            t = np.arange(total, dtype=np.float64) / AUDIO_RATE
            samples = (0.3 * np.sin(2.0 * math.pi * TONE_HZ * t)).astype(np.float32)
            step = 1024  # the AAC frame size (the encoder would re-chunk any other size)
            chunks = [(start, samples[start:start + step]) for start in range(0, total, step)]
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(gradient_frame(i, width, height), format="rgb24")
            frame.pts = i
            frame.time_base = 1 / rate
            out.mux(video.encode(frame))
            # interleave the audio with the video like a real recording (up to this frame's end)
            while chunks and chunks[0][0] < (i + 1) / rate * AUDIO_RATE:
                start, piece = chunks.pop(0)
                out.mux(sound.encode(_audio_frame(av, start, piece)))
        out.mux(video.encode(None))
        if sound is not None:
            for start, piece in chunks:
                out.mux(sound.encode(_audio_frame(av, start, piece)))
            out.mux(sound.encode(None))
    return path


def _audio_frame(av, start: int, samples: np.ndarray):
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[None, :]), format="fltp", layout="mono")
    frame.sample_rate = AUDIO_RATE
    frame.pts = start
    frame.time_base = Fraction(1, AUDIO_RATE)
    return frame
