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
    """What :func:`transcode` did.

    Attributes:
        frames: frames written.
        seconds: wall-clock seconds of the whole transcode (decode, restore, encode, mux).
        fps: processing speed, ``frames / seconds`` (not the video's frame rate).
        output: path of the written file.
    """

    frames: int
    seconds: float
    fps: float
    output: str



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


def read_frames(path) -> Iterator[np.ndarray]:
    """Decode a video to RGB frames, in presentation order.

    The file is opened (and checked) when this is called; frames are decoded as the iterator is
    advanced. Each frame is a fresh H x W x 3 uint8 C-contiguous array the caller may keep.

    Args:
        path: video file (str or path-like).

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
    return _decode(av, container, stream, path, rate)


def transcode(src, dst, restore: Callable[[Iterator[np.ndarray]], Iterable[np.ndarray]], *,
              codec: str = "libx264", crf: int | None = 18, preset: str | None = None,
              progress: Callable[[int, int | None], Any] | None = None, scale: int = 1) -> VideoStats:
    """Decode ``src``, pass its frames through ``restore`` and encode the result to ``dst``.

    The output keeps the frame count, size (times ``scale``) and frame rate (constant rate, src's
    average rate; frame ``i`` is stamped ``i / fps``) and copies every audio stream packet for packet
    (no re-encode).
    Video is yuv420p, or yuv444p when the width or height is odd (4:2:0 chroma needs even sizes, so
    this keeps the exact size; H.264 4:4:4 plays in FFmpeg-based players but not in browsers or most
    hardware decoders). Subtitle and data streams are not copied. The file is written to a temp file
    beside ``dst`` and renamed when complete: an error or Ctrl-C leaves neither ``dst`` nor the temp.

    Args:
        src: input video (str or path-like).
        dst: output path; its extension picks the container (.mp4 .mov .mkv .webm .avi .ts ...).
        restore: takes an iterator of H x W x 3 uint8 RGB frames and returns an iterable of frames of
            the same shape (``scale`` * H x ``scale`` * W x 3) and count, in order. It may read ahead of
            what it has returned.
        codec: FFmpeg encoder name (``libx264`` default; ``libx265``, ``libvpx-vp9``, ... if present).
        crf: constant-rate-factor quality (lower is better; 18 is visually near-lossless for x264);
            None leaves the encoder's default rate control.
        preset: encoder speed/size trade-off for encoders that have one (x264/x265: ``ultrafast`` ...
            ``medium`` ... ``veryslow``); None leaves the encoder's default (x264: ``medium``).
        progress: called as ``progress(frames_done, total_or_None)`` after each frame is encoded;
            the total is src's frame count (or its estimate).
        scale: the output frames' size over the input's (a super-resolution restore, e.g. a
            :class:`~deploy_kit.runtime.restorer.Restorer`'s ``scale``); the video is encoded at that size.

    Returns:
        A :class:`VideoStats` (frames, wall seconds, processing fps, output path).

    Raises:
        ValueError: unreadable / truncated / corrupt ``src`` (naming the file and the frame index), an
            unknown or unusable encoder, a ``crf`` the encoder does not take, an output container that
            cannot hold the streams, a ``scale`` that is not a positive integer, or ``restore``
            returning a frame of another size or type.
        RuntimeError: ``restore`` returned more or fewer frames than it was given (a bug in it).
        MissingDependencyError: PyAV is not installed.
    """
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"scale must be a positive integer; got {scale!r}")
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
        frames_in = read_frames(src)
        with atomic_target(dst) as tmp:
            written = _write(av, tmp, muxer, dst, src, info, video_in, audio_in, frames_in, restore,
                             codec, crf, preset, progress, scale)
    finally:
        audio_in.close()
        if frames_in is not None:
            _close_quietly(frames_in)
    seconds = time.perf_counter() - started
    return VideoStats(frames=written, seconds=seconds, fps=written / seconds if seconds > 0 else 0.0,
                      output=dst)


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
        return start + tag
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


def _decode(av, container, stream, path: str, rate: Fraction) -> Iterator[np.ndarray]:
    """Generator behind :func:`read_frames`; owns (and closes) ``container``."""
    from av.video.reformatter import VideoReformatter

    try:
        # frame + slice threads: the decoder runs on every core while the caller works on a frame
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = 0
        # one converter for the whole stream: a per-frame swscale context costs a re-init each frame
        to_rgb = VideoReformatter()
        to_rgb_flags = _sws_flags(_SWS_TO_RGB)
        declared = _declared_end(container, stream)
        expected = stream.frames or None
        index, end = 0, None
        packets = container.demux(stream)
        while True:
            try:
                packet = next(packets, None)
                frames = packet.decode() if packet is not None else ()
            except av.error.FFmpegError as exc:
                raise ValueError(f"{path}: cannot decode frame {index} ({_reason(exc)}); "
                                 f"the file is truncated or corrupt") from exc
            if packet is None:
                break
            for frame in frames:
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
        _check_complete(path, index, expected, end, declared, rate)
    finally:
        container.close()


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
           progress, scale: int = 1) -> int:
    """Encode ``restore(frames_in)`` (+ src's audio packets) into ``tmp``, frames ``scale`` times src's size;
    returns frames written."""
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
        audio_map = _add_audio_copies(out, audio_in)
        try:
            out.start_encoding()  # writes the header: the muxer checks here what it can hold
        except av.error.FFmpegError as exc:
            kinds = " + ".join([codec_obj.name] + [s.codec_context.name for s in audio_in.streams.audio])
            raise ValueError(f"{dst}: a {muxer} file cannot hold {kinds} ({_reason(exc)}); "
                             f"use another codec or container (.mkv holds most)") from exc

        # AVI stamps video by frame number and cannot store negative times: the muxer would shift
        # every stream by the audio's lead-in (an AAC priming packet, ~21 ms), which rounds to a
        # whole frame and leaves a gap. There, audio that ends before the first frame is dropped.
        audio = _AudioFeed(av, audio_in, audio_map, video_in, drop_lead_in=muxer == "avi")
        frames = _FrameMaker(av, pix_fmt, _sws_matrix(src_cc.colorspace), full, rate)
        return _encode(av, out, vs, audio, frames, frames_in, restore, src, dst, (height, width, 3), scale,
                       progress, info.frames)


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
    options = {"crf": None if crf is None else str(crf), "preset": preset}
    cc.options = {key: value for key, value in options.items() if value is not None}
    # same tags as the source, so players convert back with the matrix we encoded with
    cc.colorspace = src_cc.colorspace
    cc.color_range = full if pix_fmt.startswith("yuv") else src_cc.color_range
    cc.color_primaries = src_cc.color_primaries
    cc.color_trc = src_cc.color_trc
    try:
        cc.open()  # here rather than in start_encoding: an encoder error is not a muxer error
    except av.error.FFmpegError as exc:
        raise ValueError(f"the {codec} encoder rejects {width}x{height} {pix_fmt} at {rate} fps with "
                         f"{cc.options or 'no options'} ({_reason(exc)})") from exc
    # avcodec_open2 hands back the options the encoder did not take
    for key in ("crf", "preset"):
        if key in (cc.options or {}):
            raise ValueError(f"the {codec} encoder has no {key} option; pass {key}=None for its default")
    return vs


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
            src: str, dst: str, shape: tuple[int, int, int], scale: int, progress, total: int | None) -> int:
    """Encode and mux what ``restore`` returns, each frame checked against ``shape``, then flush the
    encoder and the rest of the audio; returns frames written."""
    written = 0
    counter = [0]  # frames restore has taken from the reader
    try:
        for array in restore(_counting(frames_in, counter)):
            if not isinstance(array, np.ndarray) or array.shape != shape or array.dtype != np.uint8:
                got = (f"{array.dtype} array of shape {array.shape}" if isinstance(array, np.ndarray)
                       else type(array).__name__)
                raise ValueError(f"restore returned a {got} for frame {written}; "
                                 f"{src} needs {shape[0]}x{shape[1]}x3 uint8 RGB frames"
                                 + (f" ({scale} x its size)" if scale > 1 else ""))
            for packet in vs.encode(frames.frame(array, written)):
                audio.mux_until(out, packet)
                out.mux_one(packet)
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
        for packet in vs.encode(None):
            audio.mux_until(out, packet)
            out.mux_one(packet)
        audio.mux_rest(out)
    except av.error.FFmpegError as exc:
        raise ValueError(f"{dst}: encoding frame {written} failed ({_reason(exc)})") from exc
    return written


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

    def __init__(self, av, audio_in, audio_map: dict, video_in, drop_lead_in: bool = False):
        self._error = av.error.FFmpegError
        self._map = audio_map
        self._drop_lead_in = drop_lead_in
        self._pending = None
        self._src = audio_in.name
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
