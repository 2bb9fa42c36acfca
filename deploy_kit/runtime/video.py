"""Video files in and out for the runtime: probe, decode to RGB frames, and re-encode the frames a
restore function returns, with the audio copied untouched (PyAV, i.e. FFmpeg; imported lazily).

* :func:`probe_video` / :func:`is_video_path` — what a file holds, and whether the CLI should treat
  a path as a video;
* :func:`read_frames` — decoded frames as H x W x 3 uint8 RGB arrays, in presentation order;
* :func:`transcode` — ``src`` -> ``restore(frames)`` -> ``dst`` (same frame count and frame rate, the
  same size or ``scale`` times it for super-resolution; H.264 by default; audio packets remuxed, not
  re-encoded), written atomically.

PyAV is the optional ``video`` extra (``pip install 'deploy-kit[video]'``); importing this module
does not need it, calling any function here does.

Colour: a decoded frame is converted to RGB with the matrix and range its stream is tagged with
(FFmpeg's BT.601 limited-range default when untagged), and the output is encoded back with the same
matrix and range and carries the same tags (and the same display rotation), so an identity restore
round-trips colours without drift (with PyAV >= 18; older PyAV cannot ask swscale for exact rounding,
see ``_SWS_TO_RGB``).
"""

from __future__ import annotations

import bisect
import os
import re
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from ..errors import MissingDependencyError
from ..fsutil import atomic_target

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".ts", ".mts")

# The temp file ends in ".part", so FFmpeg cannot guess the muxer from its name: pick it from dst's.
_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
           ".avi": "avi", ".ts": "mpegts", ".mts": "mpegts"}

# AVColorSpace (stream/frame tag) -> swscale colour matrix (SWS_CS_*): BT.709, FCC, BT.601 (both
# the 625-line BT.470BG and the 525-line SMPTE 170M tags), SMPTE 240M, BT.2020 (NCL and CL).
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
_SWS_BT601 = 5  # swscale's (and so FFmpeg's) matrix for untagged YUV
_RANGE_MPEG, _RANGE_JPEG = 1, 2  # AVColorRange: limited (16-235) and full (0-255)

# swscale flags (libswscale/swscale.h). Its default YUV->RGB path (table-driven) darkens every
# channel by ~1.2 levels on average (measured on 4:2:0 frames), so each decode -> encode generation
# would shift colours (-2.4 levels and 40 dB after two identity passes). ACCURATE_RND +
# FULL_CHR_H_INT select the exact-rounding path with interpolated chroma; with AREA (2x2 average)
# chroma on the way back, two identity generations stay at 62 dB, bias < 0.01 level (lossless x264).
# PyAV < 18 takes one interpolation name only (no flags): it gets the plain filter, i.e. the bias.
_SWS_TO_RGB = 0x2 | 0x40000 | 0x2000  # SWS_BILINEAR | SWS_ACCURATE_RND | SWS_FULL_CHR_H_INT
_SWS_TO_YUV = 0x20 | 0x40000  # SWS_AREA | SWS_ACCURATE_RND
_SWS_PLAIN = {_SWS_TO_RGB: "BILINEAR", _SWS_TO_YUV: "AREA"}

# A decoded stream may end this much before its declared end and still count as complete: the
# declared duration and the last frame's timestamp + duration differ by rounding, not by frames.
_END_SLACK_FRAMES = 1.5
_END_SLACK_S = 0.05

_av_module = None


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` found in a file (its first video stream).

    Attributes:
        width: frame width in pixels.
        height: frame height in pixels.
        fps: average frame rate (frames per second, exact fraction, e.g. 30000/1001).
        frames: frame count: exact when the container indexes it (MP4/MOV/AVI), else estimated from
            the duration, or None when neither is known.
        duration: seconds, or None when the container does not say.
        codec: video codec name (``"h264"``, ``"hevc"``, ``"vp9"``, ...).
        has_audio: the file has at least one audio stream.
        pixel_format: decoded pixel format (``"yuv420p"``, ``"yuv420p10le"``, ...), or None.
    """

    width: int
    height: int
    fps: Fraction
    frames: int | None
    duration: float | None
    codec: str
    has_audio: bool
    pixel_format: str | None


@dataclass(frozen=True)
class VideoStats:
    """What :func:`transcode` (or :func:`join_segments`) did.

    Attributes:
        frames: frames written.
        seconds: wall-clock seconds of the whole transcode (decode, restore, encode, mux).
        fps: processing speed, ``frames / seconds`` (not the video's frame rate).
        output: path of the written file.
        encoder: the FFmpeg encoder that wrote the video (``"libx264"``, ...); None when nothing was
            encoded (:func:`join_segments` copies the parts' packets).
        encode_seconds: wall-clock seconds the writer spent on the encoder side: converting restore's
            RGB frames to the encoder's YUV, encoding, and muxing (video and audio). Time spent
            waiting for ``restore`` to hand over the next frame is not in it.
    """

    frames: int
    seconds: float
    fps: float
    output: str
    encoder: str | None = None
    encode_seconds: float = 0.0

    @property
    def encode_fps(self) -> float:
        """``frames / encode_seconds``: the writer's speed while it was busy. An upper bound on the
        encoder's own speed, not a measure of it: x264's frame threads keep encoding in the
        background while the writer waits for restore (use :func:`encode_only_fps` for that)."""
        return self.frames / self.encode_seconds if self.encode_seconds > 0 else 0.0

    @property
    def encode_share(self) -> float:
        """The fraction of the run's wall time spent on the encoder side (0..1)."""
        return min(1.0, self.encode_seconds / self.seconds) if self.seconds > 0 else 0.0

    @property
    def encoder_bound(self) -> bool:
        """Whether the encoder limited the run's speed.

        decode, restore and encode run concurrently (the writer thread encodes while the model works
        on later frames), so the slowest stage sets the pace and is busy nearly all the time, while
        the others wait. When the writer spent at least :data:`ENCODER_BOUND_SHARE` of the wall time
        encoding, restore was ready before the encoder asked for each frame: a faster ``preset`` (or
        a hardware encoder) would speed the run up, a faster model would not.
        """
        return self.encoder is not None and self.encode_share >= ENCODER_BOUND_SHARE


# The writer is the run's slowest stage when it is this busy: a stage that sets a pipeline's pace is
# busy all the time but for the pipeline's fill and drain (the first frames' decode and model
# latency, the encoder's flush), a few percent on any clip longer than a few seconds.
ENCODER_BOUND_SHARE = 0.8


@dataclass(frozen=True)
class Segment:
    """A contiguous run of frames of a video that can be decoded on its own (see :func:`plan_segments`).

    Attributes:
        index: position in the plan (0, 1, ...).
        first_frame: index of its first frame among all the video's frames in presentation order (the
            order a single pass decodes and :func:`read_frames` yields them).
        frames: how many frames it holds.
        start_pts: presentation timestamp of its first frame, a keyframe (the first segment: the
            video's first frame), in ``time_base`` units.
        end_pts: presentation timestamp of the next segment's keyframe, where this segment stops
            (exclusive); None for the last segment.
        time_base: the video stream's time base (seconds per timestamp unit).
        total_frames: frames in the whole video (every segment of a plan carries it).
    """

    index: int
    first_frame: int
    frames: int
    start_pts: int
    end_pts: int | None
    time_base: Fraction
    total_frames: int

    @property
    def whole(self) -> bool:
        """The segment is the whole video (a plan of one segment)."""
        return self.first_frame == 0 and self.end_pts is None


def _av_open(av, path: str):
    """``av.open(path)`` for reading. PyAV before 19 decodes metadata strictly unless told to replace
    bad text (``metadata_errors``: a tag in a broken text encoding must not make the video
    unreadable); PyAV 19 dropped that keyword (https://github.com/PyAV-Org/PyAV/blob/main/CHANGELOG.rst)."""
    try:
        return av.open(path, "r", metadata_errors="replace")
    except TypeError:  # PyAV >= 19: no such keyword
        return av.open(path, "r")

def is_video_path(path) -> bool:
    """True when ``path`` has a video file extension (``.mp4 .mov .mkv .avi .webm .m4v .ts .mts``).

    Decides by name only (cheap, for dispatching CLI inputs); :func:`probe_video` checks the content.

    Args:
        path: file path (str or path-like).

    Returns:
        Whether the extension, case-insensitively, is one of :data:`VIDEO_EXTENSIONS`.
    """
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


def probe_video(path) -> VideoInfo:
    """Describe the first video stream of a file.

    Args:
        path: video file (str or path-like).

    Returns:
        A :class:`VideoInfo`.

    Raises:
        ValueError: one line naming the file: missing, not a container FFmpeg can read, a still
            image, or no video stream.
        MissingDependencyError: PyAV is not installed.
    """
    av = _import_av()
    path = os.fspath(path)
    container = _open_input(av, path)
    try:
        return _info(container, _video_stream(container, path), path)
    finally:
        container.close()


def read_frames(path, segment: Segment | None = None) -> Iterator[np.ndarray]:
    """Decode a video to RGB frames, in presentation order (all of them, or one :class:`Segment`'s).

    The file is opened (and checked) when this is called; frames are decoded as the iterator is
    advanced. Each frame is a fresh H x W x 3 uint8 C-contiguous array the caller may keep.

    Args:
        path: video file (str or path-like).
        segment: only this segment's frames (:func:`plan_segments` of the same file), read from its keyframe.

    Returns:
        An iterator of H x W x 3 uint8 RGB arrays. It raises ``ValueError`` (one line naming the
        file and the frame index) when decoding fails mid-stream or the stream ends before the end
        the container declares (a truncated file), instead of stopping early.

    Raises:
        ValueError: the file is missing, unreadable, or has no video stream (see :func:`probe_video`).
        MissingDependencyError: PyAV is not installed.
    """
    av = _import_av()
    path = os.fspath(path)
    container = _open_input(av, path)
    try:
        stream = _video_stream(container, path)
        rate = _frame_rate(stream, path)
    except BaseException:
        container.close()
        raise
    return _decode(av, container, stream, path, rate, segment)


def transcode(src, dst, restore: Callable[[Iterator[np.ndarray]], Iterable[np.ndarray]], *,
              codec: str = "libx264", crf: int | None = 18, preset: str | None = None,
              progress: Callable[[int, int | None], Any] | None = None, scale: int = 1,
              segment: Segment | None = None, audio: bool = True) -> VideoStats:
    """Decode ``src``, pass its frames through ``restore`` and encode the result to ``dst``.

    The output keeps the frame count, size (times ``scale``) and frame rate (constant rate, src's
    average rate; frame ``i`` is stamped ``i / fps``) and copies every audio stream packet for packet
    (no re-encode).
    Video is yuv420p, or yuv444p when the width or height is odd (4:2:0 chroma needs even sizes, so
    this keeps the exact size; H.264 4:4:4 plays in FFmpeg-based players but not in browsers or most
    hardware decoders). Subtitle and data streams are not copied. The file is written to a temp file
    beside ``dst`` and renamed when complete: an error or Ctrl-C leaves neither ``dst`` nor the temp.

    With a ``segment`` (from :func:`plan_segments`), only its frames are decoded (from its keyframe,
    found by seeking) and encoded, stamped ``(segment.first_frame + i) / fps`` as the whole run would
    stamp them; :func:`join_segments` puts the parts together. The frames ``restore`` sees are the
    ones a single pass decodes for those indices (decoding from a keyframe is exact).

    Args:
        src: input video (str or path-like).
        dst: output path; its extension picks the container (.mp4 .mov .mkv .webm .avi .ts ...).
        restore: takes an iterator of H x W x 3 uint8 RGB frames and returns an iterable of frames of
            the same shape (``scale`` * H x ``scale`` * W x 3) and count, in order. It may read ahead of
            what it has returned.
        codec: FFmpeg encoder name (``libx264`` default; ``libx265``, ``libvpx-vp9``, ``ffv1``, a
            hardware encoder from :func:`hardware_encoders`, ... if this FFmpeg has it).
        crf: constant-rate-factor quality (lower is better; 18 is visually near-lossless for x264);
            for NVENC it sets the constant-quality level (``-rc vbr -cq crf -b:v 0``); None leaves the
            encoder's default rate control.
        preset: encoder speed/size trade-off for encoders that have presets (:func:`encoder_presets`;
            x264/x265: ``ultrafast`` ... ``medium`` ... ``veryslow``); None leaves the encoder's
            default (x264: ``medium``).
        progress: called as ``progress(frames_done, total_or_None)`` after each frame is encoded;
            the total is src's frame count (or its estimate), or the segment's.
        scale: the output frames' size over the input's (a super-resolution restore, e.g. a
            :class:`~deploy_kit.runtime.restorer.Restorer`'s ``scale``); the video is encoded at that size.
        segment: restore only this part of ``src`` (see :func:`plan_segments`); None: the whole video.
        audio: copy src's audio streams (with a segment: the audio packets that start within its time
            span, so the part plays with its own sound); False writes video only, as parts for
            :func:`join_segments` should be (it copies src's audio once).

    Returns:
        A :class:`VideoStats` (frames, wall seconds, processing fps, output path, the encoder and the
        seconds spent on the encoder side: see :attr:`VideoStats.encoder_bound`).

    Raises:
        ValueError: unreadable / truncated / corrupt ``src`` (naming the file and the frame index), an
            unknown or unusable encoder (one that this FFmpeg has but cannot open here, e.g. NVENC
            without an NVIDIA GPU: with FFmpeg's reason), an unknown ``preset`` (listing the valid
            ones) or one the encoder does not take, a ``crf`` the encoder does not take, an output
            container that cannot hold the streams, a ``scale`` that is not a positive integer,
            ``restore`` returning a frame of another size or type, or a segment that does not match
            ``src`` (another file's plan).
        RuntimeError: ``restore`` returned more or fewer frames than it was given (a bug in it).
        MissingDependencyError: PyAV is not installed.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer; got {scale!r}")
    if segment is not None and not isinstance(segment, Segment):
        raise ValueError(f"segment must be a Segment from plan_segments; got {type(segment).__name__}")
    check_preset(codec, preset)
    av = _import_av()

    src, dst = os.fspath(src), os.fspath(dst)
    muxer = _MUXERS.get(os.path.splitext(dst)[1].lower())
    if muxer is None:
        raise ValueError(f"{dst}: unknown video extension; use one of {' '.join(sorted(_MUXERS))}")
    started = time.perf_counter()
    # One thread owns the output and the audio side: this one. Audio packets are demuxed from a
    # second, audio-only reader of src here, so the video reader (read_frames, which restore may
    # advance from a worker thread of its own) never shares a container with the writer; the cost is
    # reading src's bytes twice, small next to decoding and encoding the video.
    audio_in = _open_input(av, src)
    frames_in = None
    try:
        video_in = _video_stream(audio_in, src)
        info = _info(audio_in, video_in, src)
        if segment is not None and Fraction(video_in.time_base) != segment.time_base:
            raise ValueError(f"{src}: segment {segment.index} was planned for another video "
                             f"(time base {segment.time_base}, this one has {video_in.time_base})")
        frames_in = read_frames(src, segment)
        with atomic_target(dst) as tmp:
            written, encode_seconds, encoder = _write(
                av, tmp, muxer, dst, src, info, video_in, audio_in if audio else None, frames_in, restore,
                codec, crf, preset, progress, scale, segment)
    finally:
        audio_in.close()
        if frames_in is not None:
            _close_quietly(frames_in)
    seconds = time.perf_counter() - started
    return VideoStats(frames=written, seconds=seconds, fps=written / seconds if seconds > 0 else 0.0,
                      output=dst, encoder=encoder, encode_seconds=encode_seconds)


def plan_segments(src, count: int, *, decode: bool | None = None) -> list[Segment]:
    """Split the first video stream of ``src`` at keyframes into at most ``count`` segments.

    The segments are contiguous, cover every frame exactly once, in order, and hold similar frame
    counts (each boundary is the usable keyframe nearest to an even split). Each can be restored on
    its own with ``transcode(..., segment=s)`` (on another machine, say) and the parts put back
    together with :func:`join_segments`.

    A keyframe is a boundary only where a decoder starting there sees every frame of its segment and
    nothing from before: no frame before it in decode order is shown after it, and no frame after it
    in decode order is shown before it (an open-GOP keyframe's leading B-frames would break that).
    So there are fewer segments than ``count`` when the video has fewer such keyframes (one, for a
    video with a single keyframe).

    Frames are counted by demuxing packets, without decoding (fast: the file is read once), where
    that is exact: MP4/MOV/Matroska/WebM holding a codec that stores one picture per packet (H.264,
    HEVC, VP9, AV1, FFV1, ProRes, MJPEG, ...); packets the container marks to discard (an MP4 edit
    list's lead-in) are not counted, as the decoder drops them. Elsewhere (VP8's hidden frames,
    MPEG-TS, AVI, a packet without a timestamp) every frame is decoded to count it, which costs a
    decode of the video (no colour conversion). ``transcode`` checks the count it decodes against the
    plan and refuses a mismatch.

    Args:
        src: video file (str or path-like).
        count: the most segments wanted (>= 1), e.g. the number of workers.
        decode: True counts frames by decoding, False by demuxing, None (default) picks as above.

    Returns:
        The segments in order (``index`` 0, 1, ...; the first starts at frame 0, each next one where
        the previous ends, the last ends at the last frame).

    Raises:
        ValueError: ``count`` is not a positive integer; ``src`` is missing, unreadable, truncated
            (the stream ends before the end its container declares) or has no video stream.
        MissingDependencyError: PyAV is not installed.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer; got {count!r}")
    av = _import_av()
    src = os.fspath(src)
    container = _open_input(av, src)
    try:
        stream = _video_stream(container, src)
        rate = _frame_rate(stream, src)
        if decode is None:
            decode = not _demux_counts(container, stream)
        packets, shown = _scan(av, container, stream, src, decode)
        time_base = Fraction(stream.time_base)
        declared = _declared_end(container, stream)
        times = [t for t in shown if t is not None]
        end = float(max(times) * time_base) + 1.0 / float(rate) if times else None
        _check_complete(src, len(shown), stream.frames or None, end, declared, rate)
    finally:
        container.close()

    total = len(shown)
    timed = all(t is not None for t in shown) and all(p[0] is not None for p in packets)
    ordered = sorted(shown) if timed else shown
    if not timed or any(a >= b for a, b in zip(ordered, ordered[1:])):
        # no timestamps to seek by, or two frames at one time: no frame-exact boundary exists
        return [Segment(0, 0, total, int(ordered[0] or 0) if ordered else 0, None, time_base, total)]

    # usable keyframes: prefix max / suffix min of the presentation times in decode order
    n = len(packets)
    suffix_min = [0] * (n + 1)
    suffix_min[n] = None
    for i in range(n - 1, -1, -1):
        pts = packets[i][0]
        suffix_min[i] = pts if suffix_min[i + 1] is None else min(pts, suffix_min[i + 1])
    cuts: dict[int, int] = {}  # first frame index -> keyframe pts
    seen_max = None
    for i, (pts, key) in enumerate(packets):
        if i > 0 and key and pts > seen_max and pts <= suffix_min[i]:
            first = bisect.bisect_left(ordered, pts)
            if 0 < first < total:
                cuts.setdefault(first, pts)
        seen_max = pts if seen_max is None else max(seen_max, pts)

    starts = [0]
    candidates = sorted(cuts)
    for k in range(1, count):
        target = k * total / count
        later = [c for c in candidates if c > starts[-1]]
        if not later:
            break
        starts.append(min(later, key=lambda c: (abs(c - target), c)))
    starts = sorted(set(starts))
    bounds = starts + [total]
    segments = []
    for i, first in enumerate(starts):
        nxt = bounds[i + 1]
        segments.append(Segment(index=i, first_frame=first, frames=nxt - first,
                                start_pts=ordered[0] if first == 0 else cuts[first],
                                end_pts=cuts[nxt] if nxt < total else None,
                                time_base=time_base, total_frames=total))
    return segments


def join_segments(parts, src, dst) -> VideoStats:
    """Put the parts written by ``transcode(..., segment=s, audio=False)`` back together into ``dst``.

    The parts' video packets are copied in order (no re-encode) and stamped so frame ``i`` of the
    whole shows at ``i / fps`` (src's rate), as a single :func:`transcode` of ``src`` stamps it; src's
    audio streams are copied once, packet for packet. The file is written beside ``dst`` and renamed
    when complete.

    Copying works because each part is a separate encode that starts with a keyframe; the parts must
    share one codec configuration (the same encoder, size and settings), since a container keeps one
    set of codec headers (H.264's SPS/PPS, in MP4's ``avcC`` or Matroska's CodecPrivate) for the
    whole stream: parts whose headers differ are refused rather than joined into a file that decodes
    wrongly after the first part.

    Args:
        parts: the part files, in segment order (str or path-like each).
        src: the video the parts were made from (its audio and frame rate).
        dst: output path; its extension picks the container (.mp4 .mkv .mov ...).

    Returns:
        A :class:`VideoStats` (``encoder`` None: nothing was encoded).

    Raises:
        ValueError: no parts; a part missing or unreadable, with no video stream, not starting with a
            keyframe, or with another codec, size or codec headers than the first part; parts that
            together hold another number of frames than ``src``; a container that cannot hold the
            streams.
        MissingDependencyError: PyAV is not installed.
    """
    av = _import_av()
    parts = [os.fspath(p) for p in parts]
    src, dst = os.fspath(src), os.fspath(dst)
    if not parts:
        raise ValueError("join_segments needs at least one part")
    muxer = _MUXERS.get(os.path.splitext(dst)[1].lower())
    if muxer is None:
        raise ValueError(f"{dst}: unknown video extension; use one of {' '.join(sorted(_MUXERS))}")
    started = time.perf_counter()
    src_in = _open_input(av, src)
    try:
        video_in = _video_stream(src_in, src)
        rate = _frame_rate(video_in, src)
        layouts = [_part_layout(av, part, rate) for part in parts]
        first = layouts[0]
        for part, layout in zip(parts[1:], layouts[1:]):
            for what in ("codec", "size", "extradata"):
                if layout[what] != first[what]:
                    raise ValueError(f"{part}: its {what} differs from {parts[0]}'s; parts can be joined "
                                     f"without re-encoding only when made with the same encoder settings")
        total = sum(layout["frames"] for layout in layouts)
        expected = video_in.frames or None
        declared = _declared_end(src_in, video_in)
        if expected is None and declared is not None:
            start = float(video_in.start_time * video_in.time_base) if video_in.start_time is not None else 0.0
            expected = int(round((declared - start) * rate))
        if expected is not None and abs(total - expected) > (0 if video_in.frames else 1):
            raise ValueError(f"the {len(parts)} parts hold {total} frames, {src} has {expected}: "
                             f"a part is missing, repeated or incomplete")
        with atomic_target(dst) as tmp:
            _join(av, tmp, muxer, dst, src, parts, layouts, src_in, video_in, rate)
    finally:
        src_in.close()
    seconds = time.perf_counter() - started
    return VideoStats(frames=total, seconds=seconds, fps=total / seconds if seconds > 0 else 0.0,
                      output=dst, encoder=None, encode_seconds=0.0)


def encoder_presets(codec: str) -> tuple[str, ...] | None:
    """The preset names an encoder takes, for the encoders whose presets are a fixed list.

    x264/x265: their ``x264_preset_names`` (https://code.videolan.org/videolan/x264/-/blob/master/x264.h,
    the same ten names in x265); NVENC: p1 (fastest) .. p7 (best) and the older names FFmpeg still
    accepts; QSV: FFmpeg's seven names (libavcodec/qsvenc.h).

    Args:
        codec: FFmpeg encoder name.

    Returns:
        The names, fastest first; None when ``codec`` is not one of those (its presets, if it has
        any, are checked by FFmpeg when the encoder opens).
    """
    for suffix, names in _PRESETS:
        if codec == suffix or (suffix.startswith("_") and codec.endswith(suffix)):
            return names
    return None


def check_preset(codec: str, preset: str | None) -> None:
    """Refuse a preset the encoder does not have, before any work.

    Args:
        codec: FFmpeg encoder name.
        preset: the preset asked for, or None (the encoder's default: nothing to check).

    Raises:
        ValueError: one line: ``preset`` is not one of :func:`encoder_presets`'s names for ``codec``
            (listing them). An encoder with no preset at all is refused when it opens
            (:func:`transcode`: "preset does not apply to ...").
    """
    if preset is None:
        return
    names = encoder_presets(codec)
    if not isinstance(preset, str) or (names is not None and preset not in names):
        valid = f"; {codec} presets: {' '.join(names)}" if names else ""
        raise ValueError(f"unknown preset {preset!r} for {codec}{valid}")


def hardware_encoders() -> list[str]:
    """The hardware video encoders this PyAV's FFmpeg was built with (NVENC, QSV, AMF, V4L2 M2M,
    VAAPI, VideoToolbox, ...), by FFmpeg's own capability flags.

    Built with is not usable: each needs its hardware, driver and runtime library, which are looked
    for only when it opens; :func:`encoder_problem` tries that.

    Returns:
        Encoder names, sorted (e.g. ``["h264_nvenc", "h264_qsv", "h264_v4l2m2m", "hevc_nvenc", ...]``).

    Raises:
        MissingDependencyError: PyAV is not installed.
    """
    av = _import_av()
    found = []
    for name in av.codecs_available:
        try:
            codec = av.codec.Codec(name, "w")
        except (ValueError, av.error.FFmpegError):
            continue  # a decoder only
        if codec.type == "video" and _is_hardware(codec):
            found.append(codec.name)
    return sorted(set(found))


def encoder_problem(codec: str, width: int = 1280, height: int = 720) -> str | None:
    """Whether an encoder opens here, at a size: None when it does, else the one-line reason.

    Opening is what finds a hardware encoder's device and driver (NVENC loads libcuda and
    libnvidia-encode and opens an encode session on the GPU; V4L2 M2M looks for a /dev/video* encoder
    device), so this tells whether ``transcode(codec=...)`` would get past its first frame.

    Args:
        codec: FFmpeg encoder name.
        width: frame width to try (even).
        height: frame height to try (even).

    Returns:
        None, or the reason as :func:`transcode` would raise it.

    Raises:
        MissingDependencyError: PyAV is not installed.
    """
    av = _import_av()
    try:
        codec_obj = _encoder(av, codec)
        cc = av.CodecContext.create(codec_obj.name, "w")
        cc.width, cc.height = width, height
        cc.pix_fmt = _pick_pix_fmt(codec_obj, width, height)
        cc.time_base = Fraction(1, 30)
        cc.framerate = Fraction(30)
        _open_encoder(av, cc, codec_obj, f"{width}x{height} {cc.pix_fmt}")
    except ValueError as exc:
        return str(exc)
    return None


def encode_only_fps(width: int, height: int, codec: str = "libx264", crf: int | None = 18,
                    preset: str | None = None, frames: int = 60) -> float:
    """How many frames per second the encoder alone takes at this size and setting, on synthetic
    frames (nothing decoded, nothing restored, nothing written).

    The frames are made before the clock starts: a moving colour gradient with fine noise, like
    camera footage's texture. Content changes an encoder's speed (x264 spends longer on detail and
    motion), so a real video may encode somewhat slower or faster; what this measures well is how the
    presets and sizes compare, and whether the encoder can keep up with a model's frame rate.

    Args:
        width: frame width (even for yuv420p).
        height: frame height.
        codec: FFmpeg encoder name.
        crf: as :func:`transcode`'s.
        preset: as :func:`transcode`'s.
        frames: frames to encode (at most 256 MiB of them are held; more repeat the first ones).

    Returns:
        Frames per second, from the first frame sent to the last packet out (the encoder flushed).

    Raises:
        ValueError: an unknown or unusable encoder, preset or crf (as :func:`transcode`), or a size
            or frame count that is not positive.
        MissingDependencyError: PyAV is not installed.
    """
    for name, value in (("width", width), ("height", height), ("frames", frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
    check_preset(codec, preset)
    av = _import_av()
    codec_obj = _encoder(av, codec)
    pix_fmt = _pick_pix_fmt(codec_obj, width, height)
    rate = Fraction(30)
    cc = av.CodecContext.create(codec_obj.name, "w")
    cc.width, cc.height, cc.pix_fmt = width, height, pix_fmt
    cc.time_base, cc.framerate = 1 / rate, rate
    cc.thread_count, cc.thread_type = 0, "AUTO"  # as transcode's encoder
    cc.options = _encoder_options(codec_obj.name, crf, preset)
    _open_encoder(av, cc, codec_obj, f"{width}x{height} {pix_fmt} with {cc.options or 'no options'}")
    left = cc.options or {}
    for key, flag in (("crf", "crf"), ("cq", "crf"), ("preset", "preset")):
        if key in left:
            raise ValueError(f"{flag} does not apply to the {codec} encoder (it has no {key} option); "
                             f"leave {flag} unset (None) for its default")
    held = max(1, min(frames, (256 << 20) // (width * height * 3)))
    rng = np.random.default_rng(0)
    noise = rng.integers(-6, 7, size=(height, width, 1), dtype=np.int16)
    pool = []
    maker = _FrameMaker(av, pix_fmt, _SWS_BT601, _RANGE_MPEG, rate)
    for i in range(held):
        rgb = _synthetic_frame(i, width, height, noise)
        pool.append(maker.frame(rgb, 0))
    started = time.perf_counter()
    for i in range(frames):
        frame = pool[i % held]
        frame.pts = i
        frame.time_base = 1 / rate
        cc.encode(frame)
    cc.encode(None)
    seconds = time.perf_counter() - started
    return frames / seconds if seconds > 0 else float("inf")


# --- internals --------------------------------------------------------------------------------

def _import_av():
    """Import PyAV once and silence FFmpeg's logging (PyAV's default; re-asserted in case another
    library turned it on), so decoder warnings never reach the CLI's output."""
    global _av_module
    if _av_module is None:
        try:
            import av
            import av.logging
        except ImportError as exc:
            raise MissingDependencyError("PyAV is not installed: pip install 'deploy-kit[video]'") from exc
        av.logging.set_level(None)
        _av_module = av
    return _av_module


def _reason(exc: BaseException) -> str:
    """FFmpeg's one-line reason, without PyAV's errno and file-name decoration."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


# Presets that are a fixed list (encoder_presets): x264's x264_preset_names (x265 has the same ten);
# FFmpeg's NVENC presets (libavcodec/nvenc_h264.c, p1..p7 since FFmpeg 4.4 / SDK 10, the older
# names map onto them); FFmpeg's QSV presets (libavcodec/qsvenc.h QSV_COMMON_OPTS).
_X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower",
                 "veryslow", "placebo")
_PRESETS = (("libx264", _X264_PRESETS), ("libx264rgb", _X264_PRESETS), ("libx265", _X264_PRESETS),
            ("_nvenc", ("p1", "p2", "p3", "p4", "p5", "p6", "p7", "default", "slow", "medium", "fast",
                        "hp", "hq", "bd", "ll", "llhq", "llhp", "lossless", "losslesshp")),
            ("_qsv", ("veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")))

# AV_CODEC_CAP_HARDWARE | AV_CODEC_CAP_HYBRID (libavcodec/codec.h): the encoder runs on a device
_CAP_HARDWARE = (1 << 18) | (1 << 19)


def _is_hardware(codec_obj) -> bool:
    return bool(int(codec_obj.capabilities or 0) & _CAP_HARDWARE)


def _synthetic_frame(index: int, width: int, height: int, noise: np.ndarray) -> np.ndarray:
    """encode_only_fps's frame ``index``: a gradient moving 4 px a frame plus fixed fine noise."""
    x = (np.arange(width, dtype=np.float32)[None, :] + 4.0 * index) / max(width, 1)
    y = np.arange(height, dtype=np.float32)[:, None] / max(height, 1)
    r = 0.5 + 0.5 * np.sin(2.0 * np.pi * 3.0 * x) * np.ones_like(y)
    g = 0.5 + 0.4 * np.cos(2.0 * np.pi * (2.0 * y + x))
    b = 0.5 + 0.25 * np.sin(2.0 * np.pi * 5.0 * (x - y))
    rgb = np.stack([r, g, b], axis=-1) * 219.0 + 16.0
    return np.ascontiguousarray(np.clip(rgb + noise, 0, 255).astype(np.uint8))


def _open_input(av, path: str):
    if not os.path.exists(path):
        raise ValueError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a folder, not a video file")
    try:
        return _av_open(av, path)
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: FFmpeg cannot open it as a video ({_reason(exc)}): not a video, "
                         f"or truncated or corrupt") from exc


def _video_stream(container, path: str):
    """The first real video stream (cover art in audio files is a 'video' stream: skipped)."""
    fmt = container.format.name
    if fmt == "image2" or fmt.endswith("_pipe"):
        raise ValueError(f"{path}: a still image ({fmt}), not a video")
    for stream in container.streams.video:
        disposition = getattr(stream, "disposition", 0) or 0  # an int, or an enum.Flag in PyAV 15
        if int(getattr(disposition, "value", disposition)) & 0x400:  # AV_DISPOSITION_ATTACHED_PIC
            continue
        return stream
    raise ValueError(f"{path}: no video stream")


def _frame_rate(stream, path: str) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and rate > 0:
            return Fraction(rate).limit_denominator(1_000_000)
    raise ValueError(f"{path}: the video stream has no frame rate")


def _tag_seconds(metadata) -> float | None:
    """Matroska's per-track ``DURATION`` tag (``HH:MM:SS.nnnnnnnnn``) in seconds."""
    for key, value in metadata.items():
        if key.upper().startswith("DURATION"):
            m = re.fullmatch(r"\s*(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)\s*", str(value))
            if m:
                return int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    return None


def _declared_end(container, stream) -> float | None:
    """Where the container says the video stream ends (seconds on the stream's clock), or None.

    Only per-stream figures are trusted; the container's overall duration counts only when the video
    is its one stream, since an audio track may legitimately run longer than the video.
    """
    start = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
    if stream.duration and stream.time_base:
        return start + float(stream.duration * stream.time_base)
    tag = _tag_seconds(stream.metadata)
    if tag:
        # FFmpeg's Matroska muxer writes the track's end time there (its last timestamp + duration,
        # libavformat/matroskaenc.c), not its length: a track starting later (a segment part) would
        # otherwise look truncated; the smaller reading never cries truncation wrongly
        return min(tag, start + tag)
    if len(container.streams) == 1 and container.duration:
        return container.duration / 1_000_000 + (container.start_time or 0) / 1_000_000
    return None


def _info(container, stream, path: str) -> VideoInfo:
    cc = stream.codec_context
    rate = _frame_rate(stream, path)
    if stream.duration and stream.time_base:
        duration = float(stream.duration * stream.time_base)
    else:
        duration = _tag_seconds(stream.metadata)
        if duration is None and container.duration:
            duration = container.duration / 1_000_000
    frames = stream.frames or (int(round(duration * rate)) if duration else None)
    if not cc.width or not cc.height:
        raise ValueError(f"{path}: the video stream has no frame size (unknown or damaged codec data)")
    return VideoInfo(width=cc.width, height=cc.height, fps=rate, frames=frames or None,
                     duration=duration, codec=cc.name, has_audio=bool(container.streams.audio),
                     pixel_format=getattr(cc, "pix_fmt", None))


def _sws_flags(flags: int):
    from av.video.reformatter import Interpolation

    return flags if hasattr(Interpolation, "ACCURATE_RND") else _SWS_PLAIN[flags]


def _sws_matrix(colorspace) -> int:
    return _SWS_MATRIX.get(int(colorspace or 0), _SWS_BT601)


def _sws_range(color_range, pix_fmt: str | None) -> int:
    # yuvj* formats are full range by definition even when the range tag is missing
    full = int(color_range or 0) == _RANGE_JPEG or (pix_fmt or "").startswith("yuvj")
    return _RANGE_JPEG if full else _RANGE_MPEG


def _decode(av, container, stream, path: str, rate: Fraction,
            segment: Segment | None = None) -> Iterator[np.ndarray]:
    """Generator behind :func:`read_frames` (and a segment's reader); owns (and closes) ``container``.

    With a segment that is not the whole video: seek to the keyframe at or before its start, decode,
    keep the frames shown from ``start_pts`` (the first segment: from the first frame) up to
    ``end_pts``, and stop at the next segment's keyframe packet (plan_segments chose it so that no
    frame of this segment comes after it in decode order)."""
    from av.video.reformatter import VideoReformatter

    window = segment is not None and not segment.whole
    lo = segment.start_pts if window and segment.first_frame > 0 else None
    hi = segment.end_pts if window else None
    base = segment.first_frame if segment is not None else 0
    try:
        # frame + slice threads: the decoder runs on every core while the caller works on a frame
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = 0
        # one converter for the whole stream: a per-frame swscale context costs a re-init each frame
        to_rgb = VideoReformatter()
        to_rgb_flags = _sws_flags(_SWS_TO_RGB)
        declared = _declared_end(container, stream)
        expected = stream.frames or None
        if lo is not None:
            try:
                container.seek(lo, stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError as exc:
                raise ValueError(f"{path}: cannot seek to frame {base} ({_reason(exc)}); "
                                 f"the file is truncated or corrupt") from exc
        index, end = 0, None
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets, None)
                if hi is not None and packet is not None and packet.is_keyframe and packet.pts == hi:
                    packet = None  # the next segment starts here: drain the decoder
                    frames = stream.codec_context.decode(None)
                else:
                    frames = packet.decode() if packet is not None else ()
            except av.error.FFmpegError as exc:
                raise ValueError(f"{path}: cannot decode frame {base + index} ({_reason(exc)}); "
                                 f"the file is truncated or corrupt") from exc
            for frame in frames:
                if window and frame.pts is not None and (
                        (lo is not None and frame.pts < lo) or (hi is not None and frame.pts >= hi)):
                    continue  # before the segment (seeking lands on a keyframe at or before it)
                rgb = to_rgb.reformat(frame, format="rgb24",
                                      src_colorspace=_sws_matrix(frame.colorspace),
                                      dst_colorspace=_sws_matrix(frame.colorspace),
                                      src_color_range=_sws_range(frame.color_range, frame.format.name),
                                      dst_color_range=_RANGE_JPEG, interpolation=to_rgb_flags)
                if frame.pts is not None and frame.time_base:
                    # the latest end seen, not the last frame's: AVI has no presentation times and
                    # H.264 B-frames from it come out with their decode-order stamps
                    stop = float(frame.pts * frame.time_base) + 1.0 / float(rate)
                    end = stop if end is None else max(end, stop)
                # to_ndarray views the converted frame's own (reference-counted) buffer, which no
                # later frame reuses while the array lives: no copy unless rows are padded
                yield np.ascontiguousarray(rgb.to_ndarray())
                index += 1
            if packet is None:
                break
        if segment is not None and index != segment.frames:
            raise ValueError(f"{path}: segment {segment.index} decodes to {index} frames, its plan says "
                             f"{segment.frames}: the file changed since plan_segments, or its frames "
                             f"cannot be counted from packets (plan with decode=True)")
        if segment is None:
            _check_complete(path, index, expected, end, declared, rate)
        elif segment.end_pts is None:
            _check_complete(path, base + index, segment.total_frames, end, declared, rate)
    finally:
        container.close()


# Containers whose demuxers give each packet its presentation time, with codecs that store exactly
# one shown picture per packet there: counting packets counts frames (plan_segments).
_DEMUX_EXACT_FORMATS = ("mov", "mp4", "m4a", "3gp", "3g2", "mj2", "matroska", "webm")
_DEMUX_EXACT_CODECS = ("h264", "hevc", "vp9", "av1", "ffv1", "prores", "mjpeg", "dnxhd", "rawvideo",
                       "utvideo", "huffyuv", "ffvhuff", "png", "qtrle", "cfhd", "magicyuv")


def _demux_counts(container, stream) -> bool:
    formats = container.format.name.split(",")
    return any(f in _DEMUX_EXACT_FORMATS for f in formats) and stream.codec_context.name in _DEMUX_EXACT_CODECS


def _scan(av, container, stream, path: str, decode: bool) -> tuple[list, list]:
    """The video packets' (pts, keyframe) in decode order, and the pts of every frame a decoder shows
    (from the non-discarded packets, or from decoding when ``decode``)."""
    packets: list[tuple[int | None, bool]] = []
    shown: list[int | None] = []
    if decode:
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = 0
    try:
        for packet in container.demux(stream):
            if packet.size:
                packets.append((packet.pts, bool(packet.is_keyframe)))
                if not decode and not packet.is_discard:
                    shown.append(packet.pts)
            if decode:
                shown.extend(frame.pts for frame in packet.decode())
    except av.error.FFmpegError as exc:
        raise ValueError(f"{path}: cannot read frame {len(shown)} ({_reason(exc)}); "
                         f"the file is truncated or corrupt") from exc
    return packets, shown


def _part_layout(av, part: str, rate: Fraction) -> dict:
    """What :func:`join_segments` needs of a part: codec, size and headers (to check they match),
    its frame count, first presentation time and reorder depth (to stamp its packets)."""
    container = _open_input(av, part)
    try:
        stream = _video_stream(container, part)
        cc = stream.codec_context
        shown: list[int] = []  # presentation times, in decode order
        first_key = None
        try:
            for packet in container.demux(stream):
                if not packet.size:
                    continue
                if first_key is None:
                    first_key = bool(packet.is_keyframe)
                if packet.pts is None or packet.is_discard:
                    raise ValueError(f"{part}: a video packet has no presentation time (or is marked to "
                                     f"discard); join parts written by transcode(..., segment=...)")
                shown.append(packet.pts)
        except av.error.FFmpegError as exc:
            raise ValueError(f"{part}: cannot read it ({_reason(exc)}); the file is truncated or corrupt") from exc
        if not shown:
            raise ValueError(f"{part}: holds no video frames")
        if not first_key:
            raise ValueError(f"{part}: does not start with a keyframe, so it cannot be joined without "
                             f"re-encoding; make parts with transcode(..., segment=...)")
        time_base = Fraction(stream.time_base)
        first = min(shown)
        ranks = [round((pts - first) * time_base * rate) for pts in shown]
        if sorted(ranks) != list(range(len(ranks))):
            raise ValueError(f"{part}: its frames are not stamped one per frame at {rate} fps (src's rate); "
                             f"join parts written by transcode(..., segment=...) of that src")
        return {"codec": cc.name, "size": (cc.width, cc.height), "extradata": bytes(cc.extradata or b""),
                "frames": len(shown), "first_pts": first, "time_base": time_base,
                # how far decode order runs ahead of presentation (B-frames): decode times lag by it
                "delay": max(i - r for i, r in enumerate(ranks))}
    finally:
        container.close()


def _join(av, tmp: str, muxer: str, dst: str, src: str, parts: list[str], layouts: list[dict],
          src_in, video_in, rate: Fraction) -> None:
    """Mux the parts' video packets, restamped on one ``1/rate`` clock, and src's audio into ``tmp``."""
    try:
        out = av.open(tmp, "w", format=muxer)
    except av.error.FFmpegError as exc:
        raise ValueError(f"{dst}: cannot write ({_reason(exc)})") from exc
    tick = Fraction(1, 1) / rate
    with out:
        template = _open_input(av, parts[0])
        try:
            stream = _video_stream(template, parts[0])
            add_copy = getattr(out, "add_stream_from_template", None)  # PyAV >= 13
            vs = add_copy(stream) if add_copy else out.add_stream(template=stream)
        finally:
            template.close()
        vs.time_base = tick
        matrix_set = getattr(vs, "set_display_matrix", None)
        if matrix_set is not None:
            display = _display_matrix(av, src, video_in.index)
            if display is not None:
                matrix_set(display)
        audio_map = _add_audio_copies(out, src_in)
        try:
            out.start_encoding()
        except av.error.FFmpegError as exc:
            kinds = " + ".join([layouts[0]["codec"]] + [s.codec_context.name for s in src_in.streams.audio])
            raise ValueError(f"{dst}: a {muxer} file cannot hold {kinds} ({_reason(exc)}); "
                             f"use another container (.mkv holds most)") from exc
        audio = _AudioFeed(av, src_in, audio_map, video_in, drop_lead_in=muxer == "avi")
        # Decode times are made, not copied: Matroska stores none (its demuxer guesses some, or none,
        # for B-frames), MP4's depend on each part's own edit list. Frame k of the whole decodes at
        # k - delay, the deepest reordering of any part, so they rise across the joins and each
        # stays at or before its presentation time.
        delay = max(layout["delay"] for layout in layouts)
        offset = 0
        for part, layout in zip(parts, layouts):
            scale = layout["time_base"] * rate  # part ticks -> frames
            first = layout["first_pts"]
            container = _open_input(av, part)
            try:
                stream = _video_stream(container, part)
                decoded = 0
                for packet in container.demux(stream):
                    if not packet.size:
                        continue
                    packet.pts = offset + round((packet.pts - first) * scale)
                    packet.dts = offset + decoded - delay
                    decoded += 1
                    packet.duration = 1
                    packet.time_base = tick
                    packet.stream = vs
                    audio.mux_until(out, packet)
                    out.mux_one(packet)
            except av.error.FFmpegError as exc:
                raise ValueError(f"{dst}: cannot copy {part} ({_reason(exc)})") from exc
            finally:
                container.close()
            offset += layout["frames"]
        try:
            audio.mux_rest(out)
        except av.error.FFmpegError as exc:
            raise ValueError(f"{dst}: cannot copy {src}'s audio ({_reason(exc)})") from exc


def _check_complete(path: str, decoded: int, expected: int | None, end: float | None,
                    declared: float | None, rate: Fraction) -> None:
    """Raise when the stream stopped short of what the container declares: FFmpeg's demuxers end a
    truncated file as if it were complete (see the mov/matroska demuxers in FFmpeg's libavformat)."""
    slack = max(_END_SLACK_FRAMES / float(rate), _END_SLACK_S)
    short_by_time = end is not None and declared is not None and declared - end > slack
    if expected and decoded >= expected:
        short_by_time = False  # every frame the index lists came out
    if decoded == 0 or short_by_time:
        of = f" of {expected}" if expected else ""
        at = f" at {end:.2f}s of {declared:.2f}s" if short_by_time else ""
        raise ValueError(f"{path}: the video stream ends after {decoded}{of} frames{at} "
                         f"(cannot decode frame {decoded}); the file is truncated or corrupt")


def _close_quietly(gen) -> None:
    try:
        gen.close()
    except ValueError:
        pass  # "generator already executing": a restore worker thread still holds it; it closes on GC


def _pick_pix_fmt(codec_obj, width: int, height: int) -> str:
    """yuv420p when the size allows it (the format every player decodes), else yuv444p (4:2:0 needs
    even sizes), else the encoder's own first format (RGB-only or other encoders)."""
    formats = [f.name for f in (codec_obj.video_formats or ())]
    even = width % 2 == 0 and height % 2 == 0
    wanted = (["yuv420p"] if even else []) + ["yuv444p"]
    for name in wanted:
        if not formats or name in formats:
            return name
    return formats[0]


def _write(av, tmp: str, muxer: str, dst: str, src: str, info: VideoInfo, video_in, audio_in,
           frames_in: Iterator[np.ndarray], restore, codec: str, crf: int | None, preset: str | None,
           progress, scale: int = 1, segment: Segment | None = None) -> tuple[int, float, str]:
    """Encode ``restore(frames_in)`` (+ src's audio packets unless ``audio_in`` is None) into ``tmp``,
    frames ``scale`` times src's size; returns (frames written, encoder-side seconds, encoder name)."""
    codec_obj = _encoder(av, codec)
    width, height, rate = scale * info.width, scale * info.height, info.fps
    pix_fmt = _pick_pix_fmt(codec_obj, width, height)
    src_cc = video_in.codec_context
    full = _sws_range(src_cc.color_range, info.pixel_format)
    try:
        out = av.open(tmp, "w", format=muxer)
    except av.error.FFmpegError as exc:
        raise ValueError(f"{dst}: cannot write ({_reason(exc)})") from exc
    with out:
        vs = _add_video_stream(av, out, codec_obj, codec, width, height, rate, pix_fmt, src_cc, full, crf, preset)
        matrix_set = getattr(vs, "set_display_matrix", None)  # PyAV >= 18
        if matrix_set is not None:
            # a phone clip's rotation: restore sees (and returns) the frames as coded, so the output
            # needs the same display matrix to be shown upright
            display = _display_matrix(av, src, video_in.index)
            if display is not None:
                matrix_set(display)
        audio_map = _add_audio_copies(out, audio_in) if audio_in is not None else {}
        try:
            out.start_encoding()  # writes the header: the muxer checks here what it can hold
        except av.error.FFmpegError as exc:
            kinds = " + ".join([codec_obj.name] + [s.codec_context.name for s in
                                                   (audio_in.streams.audio if audio_in is not None else ())])
            raise ValueError(f"{dst}: a {muxer} file cannot hold {kinds} ({_reason(exc)}); "
                             f"use another codec or container (.mkv holds most)") from exc

        # AVI stamps video by frame number and cannot store negative times: the muxer would shift
        # every stream by the audio's lead-in (an AAC priming packet, ~21 ms), which rounds to a
        # whole frame and leaves a gap. There, audio that ends before the first frame is dropped.
        window = None
        if segment is not None and not segment.whole:
            window = (segment.first_frame / rate if segment.first_frame else None,
                      (segment.first_frame + segment.frames) / rate if segment.end_pts is not None else None)
        audio = _AudioFeed(av, audio_in, audio_map, video_in, drop_lead_in=muxer == "avi", window=window)
        frames = _FrameMaker(av, pix_fmt, _sws_matrix(src_cc.colorspace), full, rate)
        total = segment.frames if segment is not None else info.frames
        first = segment.first_frame if segment is not None else 0
        written, busy = _encode(av, out, vs, audio, frames, frames_in, restore, src, dst, (height, width, 3),
                                scale, progress, total, first)
        return written, busy, codec_obj.name


def _encoder(av, codec: str):
    """The FFmpeg video encoder named ``codec`` (ValueError when this build has none by that name)."""
    try:
        codec_obj = av.codec.Codec(codec, "w")
    except (ValueError, av.error.FFmpegError) as exc:  # PyAV's UnknownCodecError is a ValueError
        raise ValueError(f"{codec!r} is not a video encoder this FFmpeg build has ({_reason(exc)})") from exc
    if codec_obj.type != "video":
        raise ValueError(f"{codec!r} is a {codec_obj.type} encoder, not a video encoder")
    return codec_obj


def _add_video_stream(av, out, codec_obj, codec: str, width: int, height: int, rate: Fraction, pix_fmt: str,
                      src_cc, full: int, crf: int | None, preset: str | None):
    """The output's video stream, its encoder opened: size, rate, ``crf``/``preset`` and src's colour tags."""
    vs = out.add_stream(codec_obj.name, rate=rate)
    vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
    cc = vs.codec_context
    cc.time_base = 1 / rate
    # 0 = the encoder picks (x264: 1.5 threads per core, frame-parallel, plus its lookahead)
    cc.thread_count = 0
    cc.thread_type = "AUTO"
    cc.options = _encoder_options(codec_obj.name, crf, preset)
    # same tags as the source, so players convert back with the matrix we encoded with
    cc.colorspace = src_cc.colorspace
    cc.color_range = full if pix_fmt.startswith("yuv") else src_cc.color_range
    cc.color_primaries = src_cc.color_primaries
    cc.color_trc = src_cc.color_trc
    # here rather than in start_encoding: an encoder error is not a muxer error
    _open_encoder(av, cc, codec_obj, f"{width}x{height} {pix_fmt} at {rate} fps with {cc.options or 'no options'}")
    # avcodec_open2 hands back the options the encoder did not take
    left = cc.options or {}
    for key, flag in (("crf", "crf"), ("cq", "crf"), ("preset", "preset")):
        if key in left:
            raise ValueError(f"{flag} does not apply to the {codec} encoder (it has no {key} option); "
                             f"leave {flag} unset (None) for its default")
    return vs


#: encoders with a constant-quality option that ``crf`` sets (NVENC's is ``cq``, see _encoder_options)
CRF_ENCODERS = ("libx264", "libx264rgb", "libx265", "libvpx-vp9", "libaom-av1", "libsvtav1")
DEFAULT_CRF = 18  # visually near-lossless for x264 (https://trac.ffmpeg.org/wiki/Encode/H.264#crf)


def default_crf(codec: str) -> int | None:
    """The ``crf`` ``run`` uses when none is given: :data:`DEFAULT_CRF` for an encoder with a
    constant-quality option (:data:`CRF_ENCODERS` and NVENC), None (its own rate control) for the others
    (``ffv1``, ``mpeg4``, V4L2 M2M ...), which refuse a ``crf``."""
    return DEFAULT_CRF if codec in CRF_ENCODERS or codec.endswith("_nvenc") else None


def _encoder_options(name: str, crf: int | None, preset: str | None) -> dict:
    """The encoder's private options for ``crf`` and ``preset``. NVENC has no crf: its constant-quality
    mode is ``-rc vbr -cq N -b:v 0`` (https://trac.ffmpeg.org/wiki/HWAccelIntro, NVENC section; b=0
    lifts the default 2 Mb/s cap so the quality level decides)."""
    options: dict[str, str] = {}
    if crf is not None:
        if name.endswith("_nvenc"):
            options.update({"rc": "vbr", "cq": str(crf), "b": "0"})
        else:
            options["crf"] = str(crf)
    if preset is not None:
        options["preset"] = preset
    return options


def _open_encoder(av, cc, codec_obj, what: str) -> None:
    """``cc.open()``; a failure becomes one line with FFmpeg's own reason (its log, which is otherwise
    silenced: e.g. NVENC's "Cannot load libcuda.so.1")."""
    import av.logging as avlog

    previous = avlog.get_level()
    avlog.set_level(avlog.ERROR)  # the messages go to the capture below, not to the terminal
    try:
        with avlog.Capture(True) as logs:
            try:
                cc.open()
                error = None
            except av.error.FFmpegError as exc:
                error = exc
    finally:
        avlog.set_level(previous)
    if error is None:
        return
    said = "; ".join(dict.fromkeys(" ".join(str(m).split()) for level, _, m in logs
                                   if level <= avlog.ERROR and str(m).strip()))
    reason = said or _reason(error)
    if _is_hardware(codec_obj):
        raise ValueError(f"{codec_obj.name} is in this FFmpeg build but cannot open here ({reason}): it needs "
                         f"its hardware and driver; use libx264, or see hardware_encoders() and docs/video.md") \
            from error
    raise ValueError(f"the {codec_obj.name} encoder rejects {what} ({reason})") from error


def _add_audio_copies(out, audio_in) -> dict:
    """An output stream copying each of src's audio streams (no re-encode), by src stream index."""
    add_copy = getattr(out, "add_stream_from_template", None)  # PyAV >= 13; add_stream(template=) before
    return {stream.index: add_copy(stream) if add_copy else out.add_stream(template=stream)
            for stream in audio_in.streams.audio}


class _FrameMaker:
    """restore's RGB arrays as frames for the encoder: converted with src's matrix and range, frame ``i``
    stamped ``i / fps``."""

    def __init__(self, av, pix_fmt: str, matrix: int, full: int, rate: Fraction):
        from av.video.reformatter import VideoReformatter

        self._av = av
        self._pix_fmt, self._matrix, self._full = pix_fmt, matrix, full
        self._to_yuv = VideoReformatter()
        self._to_yuv_flags = _sws_flags(_SWS_TO_YUV)
        self._wrap = getattr(av.VideoFrame, "from_numpy_buffer", av.VideoFrame.from_ndarray)
        self._time_base = Fraction(1, 1) / rate

    def frame(self, array: np.ndarray, index: int):
        """Frame ``index`` of the output, made from ``array`` (H x W x 3 uint8 RGB)."""
        array = np.ascontiguousarray(array)
        if self._pix_fmt != "rgb24":
            # wrap the array without a copy (PyAV >= 12): swscale reads it once, right here,
            # into a new YUV frame, so restore may reuse its buffers afterwards
            frame = self._wrap(array, format="rgb24")
            frame = self._to_yuv.reformat(frame, format=self._pix_fmt, src_colorspace=self._matrix,
                                          dst_colorspace=self._matrix, src_color_range=_RANGE_JPEG,
                                          dst_color_range=self._full, interpolation=self._to_yuv_flags)
        else:
            # the encoder may keep this frame (lookahead): it gets its own copy
            frame = self._av.VideoFrame.from_ndarray(array, format="rgb24")
        frame.pts = index
        frame.time_base = self._time_base
        return frame


def _encode(av, out, vs, audio: _AudioFeed, frames: _FrameMaker, frames_in: Iterator[np.ndarray], restore,
            src: str, dst: str, shape: tuple[int, int, int], scale: int, progress, total: int | None,
            first: int = 0) -> tuple[int, float]:
    """Encode and mux what ``restore`` returns, each frame checked against ``shape`` and stamped
    ``first + i``, then flush the encoder and the rest of the audio; returns (frames written, seconds
    spent converting, encoding and muxing)."""
    written = 0
    busy = 0.0
    clock = time.perf_counter
    counter = [0]  # frames restore has taken from the reader
    try:
        for array in restore(_counting(frames_in, counter)):
            if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != np.uint8:
                got = (f"{array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray)
                       else type(array).__name__)
                raise ValueError(f"restore returned a {got} for frame {first + written}; "
                                 f"{src} needs {shape[0]}x{shape[1]}x3 uint8 RGB frames"
                                 + (f" ({scale} x its size)" if scale > 1 else ""))
            t0 = clock()
            for packet in vs.encode(frames.frame(array, first + written)):
                audio.mux_until(out, packet)
                out.mux_one(packet)
            busy += clock() - t0
            written += 1
            if progress is not None:
                progress(written, total)
        # restore must have used every input frame; pulling one more also runs the reader's
        # end-of-stream check (a truncated src raises here)
        if next(frames_in, None) is not None:
            raise RuntimeError(f"restore stopped reading after {counter[0]} frames of {src} "
                               f"but returned {written}")
        if written != counter[0]:
            raise RuntimeError(f"restore returned {written} frames for the {counter[0]} it read from {src}")
        t0 = clock()
        for packet in vs.encode(None):
            audio.mux_until(out, packet)
            out.mux_one(packet)
        audio.mux_rest(out)
        busy += clock() - t0
    except av.error.FFmpegError as exc:
        raise ValueError(f"{dst}: encoding frame {first + written} failed ({_reason(exc)})") from exc
    return written, busy


def _display_matrix(av, path: str, index: int) -> list[int] | None:
    """The display matrix (rotation/flip, 9 int32 in FFmpeg's layout) of video stream ``index``, read
    from its first decoded frame (PyAV exposes it on frames, not streams); None when there is none."""
    try:
        with _av_open(av, path) as container:
            for frame in container.decode(container.streams[index]):
                for entry in frame.side_data:
                    # PyAV < 19 iterates the side data; 19 made it a mapping, iterated by type
                    side = entry if hasattr(entry, "type") else frame.side_data[entry]
                    if getattr(side.type, "name", "") == "DISPLAYMATRIX":
                        raw = bytes(memoryview(side))
                        return np.frombuffer(raw[:36], dtype="<i4").tolist() if len(raw) >= 36 else None
                return None
    except av.error.FFmpegError:
        return None  # the reader reports a broken file, with the frame index
    return None


def _counting(frames: Iterator[np.ndarray], counter: list) -> Iterator[np.ndarray]:
    for frame in frames:
        counter[0] += 1
        yield frame


class _AudioFeed:
    """Copies src's audio packets into the output, interleaved with the video by time.

    Packets are shifted by the video's start time (the output video starts at 0) so audio and video
    stay in sync. All of this runs in the writer's thread; the muxer (interleaved writing) orders
    packets exactly, feeding audio up to the current video time only keeps its buffer small.
    """

    def __init__(self, av, audio_in, audio_map: dict, video_in, drop_lead_in: bool = False,
                 window: tuple[Fraction | None, Fraction | None] | None = None):
        self._error = av.error.FFmpegError
        self._map = audio_map
        self._drop_lead_in = drop_lead_in
        # a segment's span (seconds on the output clock, either end open): packets starting in it
        self._window = window
        self._pending = None
        self._src = audio_in.name if audio_in is not None else ""
        self._packets = audio_in.demux(list(audio_in.streams.audio)) if audio_map else iter(())
        start = video_in.start_time
        self._offset = float(start * video_in.time_base) if start is not None else 0.0

    def _next(self):
        while True:
            try:
                packet = next(self._packets, None)
            except self._error as exc:
                raise ValueError(f"{self._src}: cannot read its audio ({_reason(exc)}); "
                                 f"the file is truncated or corrupt") from exc
            if packet is None:
                return None
            if packet.dts is None or packet.size == 0:
                continue  # the demuxer's end-of-stream flush packets carry no data
            shift = int(round(self._offset / packet.time_base))
            packet.pts = packet.pts - shift if packet.pts is not None else None
            packet.dts -= shift
            if self._drop_lead_in and packet.pts is not None and packet.pts + (packet.duration or 0) <= 0:
                continue
            if self._window is not None:
                at = (packet.pts if packet.pts is not None else packet.dts) * packet.time_base
                lo, hi = self._window
                if (lo is not None and at < lo) or (hi is not None and at >= hi):
                    continue
            return packet

    def mux_until(self, out, video_packet) -> None:
        """Mux every audio packet up to ``video_packet``'s decode time."""
        if not self._map or video_packet.dts is None:
            return
        limit = float(video_packet.dts * video_packet.time_base)
        while True:
            if self._pending is None:
                self._pending = self._next()
                if self._pending is None:
                    return
            if float(self._pending.dts * self._pending.time_base) > limit:
                return
            self._mux(out, self._pending)
            self._pending = None

    def mux_rest(self, out) -> None:
        """Mux the remaining audio (an audio track may run past the video's end)."""
        if self._pending is not None:
            self._mux(out, self._pending)
            self._pending = None
        while (packet := self._next()) is not None:
            self._mux(out, packet)

    def _mux(self, out, packet) -> None:
        packet.stream = self._map[packet.stream.index]
        out.mux_one(packet)
