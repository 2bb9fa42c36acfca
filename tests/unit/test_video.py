"""Video in/out of the runtime (deploy_kit.runtime.video) on small synthetic clips, with real PyAV."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

av = pytest.importorskip("av", reason="PyAV is not installed (pip install 'deploy-kit[video]')")

from av.video.reformatter import Interpolation  # noqa: E402
from PIL import Image  # noqa: E402

from deploy_kit.errors import MissingDependencyError  # noqa: E402
from deploy_kit.runtime import video  # noqa: E402
from deploy_kit.runtime.video import (VideoInfo, VideoStats, is_video_path, probe_video,  # noqa: E402
                                      read_frames, transcode)
from tests.media import AUDIO_RATE, gradient_frame, make_clip  # noqa: E402

# PyAV >= 18 passes swscale flags (exact rounding); older versions only an interpolation name
EXACT_SWS = hasattr(Interpolation, "ACCURATE_RND")


def identity(frames):
    yield from frames


def audio_packets(path):
    """(count, total seconds) of the data packets of the first audio stream."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        packets = [p for p in container.demux(stream) if p.size]
        return len(packets), float(sum(p.duration for p in packets) * stream.time_base)


def video_pts_steps(path):
    """Differences between consecutive presentation times of the decoded frames (seconds)."""
    with av.open(str(path)) as container:
        times = [f.time for f in container.decode(video=0)]
    return np.diff(times)


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return make_clip(tmp_path_factory.mktemp("media") / "clip.mp4")


def test_is_video_path():
    for name in ("a.mp4", "b.MOV", "c.mkv", "d.avi", "e.webm", "f.m4v", "g.ts", "h.MTS", "dir/x.y.mp4"):
        assert is_video_path(name), name
    for name in ("a.png", "b.jpg", "mp4", "c.mp4.txt", "d"):
        assert not is_video_path(name), name


def test_probe_made_clip(clip):
    info = probe_video(clip)
    assert isinstance(info, VideoInfo)
    assert (info.width, info.height) == (96, 64)
    assert info.fps == Fraction(24) and isinstance(info.fps, Fraction)
    assert info.frames == 12
    assert info.duration == pytest.approx(0.5, abs=0.01)
    assert info.codec == "h264" and info.pixel_format == "yuv420p"
    assert info.has_audio
    assert not probe_video(make_clip(os.path.join(os.path.dirname(clip), "mute.mkv"), audio=False)).has_audio


def test_read_frames_rgb_in_presentation_order(clip):
    frames = list(read_frames(clip))
    assert len(frames) == 12
    for i, frame in enumerate(frames):
        assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8 and frame.flags.c_contiguous
        # each decoded frame is closest to the synthetic frame of its own index (order, no repeats;
        # H.264 B-frames are decoded out of order, so this also checks the reordering)
        errors = [np.abs(frame.astype(float) - gradient_frame(j, 96, 64)).mean() for j in range(12)]
        assert int(np.argmin(errors)) == i
        assert errors[i] < 3.0


def test_identity_transcode_keeps_frames_size_rate_and_audio(clip, tmp_path):
    calls = []
    dst = tmp_path / "out" / "restored.mp4"
    stats = transcode(clip, dst, identity, progress=lambda done, total: calls.append((done, total)))
    assert isinstance(stats, VideoStats)
    assert stats.frames == 12 and stats.output == str(dst) and stats.seconds > 0 and stats.fps > 0
    assert calls == [(i, 12) for i in range(1, 13)]
    assert sorted(os.listdir(dst.parent)) == ["restored.mp4"]  # no temp file left beside it

    src_info, out_info = probe_video(clip), probe_video(dst)
    assert (out_info.width, out_info.height, out_info.fps, out_info.frames) == (96, 64, Fraction(24), 12)
    assert out_info.codec == "h264" and out_info.pixel_format == "yuv420p"
    assert out_info.duration == pytest.approx(src_info.duration, abs=1 / 24)
    assert np.allclose(video_pts_steps(dst), 1 / 24, atol=1e-3)  # constant frame rate

    # audio copied packet for packet: same count and duration, still AAC at the same rate
    assert out_info.has_audio
    assert audio_packets(dst) == pytest.approx(audio_packets(clip), abs=1e-3)
    with av.open(str(dst)) as container:
        stream = container.streams.audio[0]
        assert stream.codec_context.name == "aac" and stream.codec_context.sample_rate == AUDIO_RATE


@pytest.mark.skipif(not EXACT_SWS, reason="PyAV < 18 cannot select swscale's exact-rounding YUV->RGB path")
def test_identity_transcode_keeps_colours(clip, tmp_path):
    dst = transcode(clip, tmp_path / "same.mkv", identity).output
    before = np.stack(list(read_frames(clip))).astype(np.float64)
    after = np.stack(list(read_frames(dst))).astype(np.float64)
    assert after.shape == before.shape
    assert np.abs(after - before).mean() < 3.0
    # no drift in any channel: FFmpeg's default YUV->RGB conversion darkens ~1.2 levels a pass
    assert np.abs((after - before).mean(axis=(0, 1, 2))).max() < 0.5


def test_frames_pass_through_restore(clip, tmp_path):
    seen = []

    def invert(frames):
        for frame in frames:
            seen.append(frame.copy())
            yield 255 - frame

    dst = tmp_path / "inverted.mp4"
    transcode(clip, dst, invert)
    out = list(read_frames(dst))
    assert len(seen) == len(out) == 12
    for src_frame, out_frame in zip(seen, out):
        # inverted within H.264 loss
        assert abs(out_frame.mean() - (255.0 - src_frame.mean())) < 2.0
        assert np.abs(out_frame.astype(float) - (255.0 - src_frame)).mean() < 4.0
    # ... and far from the frames left as they were
    assert np.abs(np.stack(seen) - (255.0 - np.stack(seen))).mean() > 30


def test_restore_may_run_ahead(clip, tmp_path):
    def lagging(frames):
        # a pipeline that holds 4 frames before its first output
        held = []
        for frame in frames:
            held.append(frame)
            if len(held) > 4:
                yield held.pop(0)
        yield from held

    stats = transcode(clip, tmp_path / "lag.mp4", lagging)
    assert stats.frames == 12 and probe_video(stats.output).frames == 12


def test_odd_size_keeps_exact_size(tmp_path):
    src = make_clip(tmp_path / "odd.mkv", width=95, height=63)
    dst = tmp_path / "odd_out.mp4"
    transcode(src, dst, identity)
    info = probe_video(dst)
    assert (info.width, info.height, info.frames) == (95, 63, 12)
    assert info.pixel_format == "yuv444p"  # 4:2:0 cannot hold an odd size
    frames = list(read_frames(dst))
    assert frames[0].shape == (63, 95, 3)
    assert np.abs(frames[5].astype(float) - gradient_frame(5, 95, 63)).mean() < 3.0


def test_mkv_source_to_mp4_with_audio(tmp_path):
    src = make_clip(tmp_path / "in.mkv", frames=10, fps=Fraction(30000, 1001))
    dst = tmp_path / "out.mp4"
    transcode(src, dst, identity)
    info = probe_video(dst)
    assert info.frames == 10 and info.fps == Fraction(30000, 1001) and info.has_audio
    count, seconds = audio_packets(dst)
    src_count, src_seconds = audio_packets(src)
    assert abs(count - src_count) <= 1 and seconds == pytest.approx(src_seconds, abs=0.05)


def test_clip_without_audio(tmp_path):
    src = make_clip(tmp_path / "mute.mp4", audio=False)
    dst = transcode(src, tmp_path / "mute_out.mov", identity).output
    info = probe_video(dst)
    assert not info.has_audio and info.frames == 12


def cut_in_half(src, dst):
    data = open(src, "rb").read()
    with open(dst, "wb") as fh:
        fh.write(data[: len(data) // 2])
    return str(dst)


@pytest.mark.parametrize("name, options", [("moov_last.mp4", None),
                                           ("faststart.mp4", {"movflags": "faststart"}),
                                           ("cut.mkv", None)])
def test_truncated_file_is_an_error_and_leaves_nothing(tmp_path, name, options):
    whole = make_clip(tmp_path / f"whole_{name}", frames=48, container_options=options)
    assert len(list(read_frames(whole))) == 48
    cut = cut_in_half(whole, tmp_path / name)
    out_dir = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        transcode(cut, out_dir / "restored.mp4", identity)
    assert cut in one_line(err.value)
    assert not out_dir.exists() or os.listdir(out_dir) == []


@pytest.mark.parametrize("name, options", [("faststart.mp4", {"movflags": "faststart"}), ("cut.mkv", None)])
def test_truncated_stream_does_not_end_silently(tmp_path, name, options):
    # these still open (index or header first): the error comes when the frames run out early
    cut = cut_in_half(make_clip(tmp_path / f"whole_{name}", frames=48, container_options=options),
                      tmp_path / name)
    frames = read_frames(cut)
    got = 0
    with pytest.raises(ValueError) as err:
        for _ in frames:
            got += 1
    assert 0 < got < 48
    message = one_line(err.value)
    assert cut in message and f"frame {got}" in message


def test_not_a_video(tmp_path):
    notes = tmp_path / "notes.mp4"
    notes.write_text("not a video\n" * 100)
    for call in (probe_video, read_frames):
        with pytest.raises(ValueError) as err:
            call(notes)
        assert str(notes) in one_line(err.value)
    with pytest.raises(ValueError):
        transcode(notes, tmp_path / "out" / "x.mp4", identity)
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []
    with pytest.raises(ValueError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")
    image = tmp_path / "still.png"
    Image.fromarray(gradient_frame(0, 96, 64)).save(image)
    with pytest.raises(ValueError, match="still image"):
        probe_video(image)


def test_missing_pyav_is_a_one_line_install_hint(clip, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # what `import av` sees when PyAV is not installed
    monkeypatch.setattr(video, "_av_module", None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'deploy-kit\[video\]'"):
        probe_video(clip)


def test_module_imports_without_pyav():
    code = "import sys, deploy_kit.runtime.video; print('av' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_audio_only_file_has_no_video_stream(tmp_path):
    path = tmp_path / "tone.m4a"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate, frame.pts = AUDIO_RATE, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    with pytest.raises(ValueError, match="no video stream"):
        probe_video(path)


def test_ctrl_c_inside_restore_leaves_nothing(clip, tmp_path):
    def interrupted(frames):
        for i, frame in enumerate(frames):
            if i == 5:
                raise KeyboardInterrupt
            yield frame

    out_dir = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        transcode(clip, out_dir / "restored.mp4", interrupted)
    assert os.listdir(out_dir) == []


def test_restore_returning_another_size_is_an_error(clip, tmp_path):
    def crop(frames):
        for frame in frames:
            yield frame[:32]

    out_dir = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        transcode(clip, out_dir / "restored.mp4", crop)
    assert "(32, 96, 3)" in one_line(err.value) and "64x96x3" in str(err.value)
    assert os.listdir(out_dir) == []


def test_restore_dropping_frames_is_a_bug(clip, tmp_path):
    def every_other(frames):
        for i, frame in enumerate(frames):
            if i % 2 == 0:
                yield frame

    with pytest.raises(RuntimeError, match="6 frames for the 12"):
        transcode(clip, tmp_path / "out" / "restored.mp4", every_other)
    assert os.listdir(tmp_path / "out") == []


def test_bad_encoder_settings_are_one_line_errors(clip, tmp_path):
    with pytest.raises(ValueError, match="unknown video extension"):
        transcode(clip, tmp_path / "x.gif", identity)
    with pytest.raises(ValueError, match="not a video encoder"):
        transcode(clip, tmp_path / "x.mp4", identity, codec="no-such-codec")
    with pytest.raises(ValueError, match="no crf option"):
        transcode(clip, tmp_path / "x.mp4", identity, codec="mpeg4")
    with pytest.raises(ValueError) as err:
        transcode(clip, tmp_path / "x.webm", identity)  # WebM holds VP8/VP9/AV1 + Vorbis/Opus only
    assert "webm" in one_line(err.value)
    assert sorted(os.listdir(tmp_path)) == []
    # crf=None: the encoder's own rate control; another encoder still keeps the size and count
    info = probe_video(transcode(clip, tmp_path / "x.avi", identity, codec="mpeg4", crf=None).output)
    assert (info.width, info.height, info.frames, info.codec) == (96, 64, 12, "mpeg4")


@pytest.mark.skipif(not hasattr(av.video.stream.VideoStream, "set_display_rotation"),
                    reason="PyAV < 18 cannot write a display matrix")
def test_phone_rotation_is_kept(tmp_path):
    # restore sees the frames as coded (W x H); the output carries the same display matrix so a
    # portrait phone clip still plays upright
    src = make_clip(tmp_path / "portrait.mov", rotation=90)
    dst = transcode(src, tmp_path / "portrait_out.mp4", identity).output
    with av.open(dst) as container:
        frame = next(container.decode(video=0))
        assert frame.rotation == 90 and (frame.width, frame.height) == (96, 64)


# --- segments: plan, restore apart, join ------------------------------------------------------

def make_gop_clip(path, *, frames=45, width=64, height=48, fps=30, gop=10, codec="libx264"):
    """A clip with a keyframe every ``gop`` frames (x264: B-frames on, its default) and an AAC tone."""
    from tests.media import _audio_frame

    rate = Fraction(fps)
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=rate)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        v.codec_context.time_base = 1 / rate
        v.codec_context.gop_size = gop
        if codec == "libx264":
            v.codec_context.options = {"x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        sound = out.add_stream("aac", rate=AUDIO_RATE, layout="mono")
        sound.codec_context.time_base = Fraction(1, AUDIO_RATE)
        total = int(round(frames / rate * AUDIO_RATE))
        tone = (0.3 * np.sin(2 * np.pi * 440.0 * np.arange(total) / AUDIO_RATE)).astype(np.float32)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(gradient_frame(i, width, height), format="rgb24")
            frame.pts, frame.time_base = i, 1 / rate
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
        for start in range(0, total, 1024):
            out.mux(sound.encode(_audio_frame(av, start, tone[start:start + 1024])))
        out.mux(sound.encode(None))
    return str(path)


def audio_times(path):
    """Presentation times of the first audio stream's data packets (seconds). Compared instead of
    audio_packets' durations: Matroska's demuxer infers the first (priming) packet's duration from
    the blocks around it, 0 in one file and 21 ms in another holding the same packets."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return [float(p.pts * stream.time_base) for p in container.demux(stream) if p.size]


def frame_times(path):
    with av.open(str(path)) as container:
        return [round(f.time, 6) for f in container.decode(video=0)]


def keyframe_times(path):
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return {p.pts for p in container.demux(stream) if p.size and p.is_keyframe}


def restore_segments(src, tmp_path, segments, ext, **options):
    """Each segment through an identity restore that records its frames; the part paths and frames."""
    parts, seen = [], []
    for segment in segments:
        got = []

        def keep(frames, got=got):
            for frame in frames:
                got.append(frame.copy())
                yield frame

        stats = transcode(src, tmp_path / f"part{segment.index}{ext}", keep, segment=segment, audio=False,
                          **options)
        assert stats.frames == segment.frames == len(got)
        parts.append(stats.output)
        seen.append(got)
    return parts, seen


def check_plan(segments, total):
    assert [s.index for s in segments] == list(range(len(segments)))
    assert segments[0].first_frame == 0 and segments[-1].end_pts is None
    for a, b in zip(segments, segments[1:]):
        assert b.first_frame == a.first_frame + a.frames and a.end_pts == b.start_pts
    assert sum(s.frames for s in segments) == total and all(s.total_frames == total for s in segments)


def test_ffv1_segments_join_equal_to_a_single_pass(tmp_path):
    src = make_gop_clip(tmp_path / "src.mkv", frames=40, gop=1, codec="ffv1")  # every frame a keyframe
    segments = video.plan_segments(src, 3)
    assert len(segments) == 3
    check_plan(segments, 40)
    assert [s.frames for s in segments] in ([13, 13, 14], [13, 14, 13], [14, 13, 13])
    # FFmpeg's FFV1 encoder keys every 12th frame by default (its other frames carry the coder
    # state on): the plan splits only there
    keyed = video.plan_segments(make_clip(tmp_path / "g12.mkv", frames=40, codec="ffv1", audio=False), 3)
    assert [s.first_frame for s in keyed] == [0, 12, 24]

    single = transcode(src, tmp_path / "single.mkv", identity, codec="ffv1", crf=None)
    parts, seen = restore_segments(src, tmp_path, segments, ".mkv", codec="ffv1", crf=None)
    for segment, part in zip(segments, parts):
        assert not probe_video(part).has_audio  # audio=False
        # stamped as the single pass stamps those frames
        assert frame_times(part) == frame_times(single.output)[segment.first_frame:][:segment.frames]
    joined = video.join_segments(parts, src, tmp_path / "joined.mkv")
    assert joined.frames == 40 and joined.encoder is None

    # frames restore saw == the single pass's decode; the joined output == the single output
    whole = list(read_frames(src))
    assert all(np.array_equal(a, b) for a, b in zip([f for got in seen for f in got], whole))
    ours, theirs = np.stack(list(read_frames(joined.output))), np.stack(list(read_frames(single.output)))
    assert ours.shape == theirs.shape == (40, 48, 64, 3) and np.array_equal(ours, theirs)
    assert frame_times(joined.output) == frame_times(single.output)
    a, b = probe_video(joined.output), probe_video(single.output)
    assert (a.width, a.height, a.fps, a.frames) == (b.width, b.height, b.fps, b.frames) == (64, 48, Fraction(30), 40)
    assert audio_times(joined.output) == audio_times(single.output) == audio_times(src)
    assert sorted(os.listdir(tmp_path)) == sorted(["src.mkv", "g12.mkv", "single.mkv", "joined.mkv"]
                                                   + [os.path.basename(p) for p in parts])


@pytest.mark.parametrize("ext", [".mp4", ".mkv"])
def test_x264_segments_start_at_keyframes_and_join_like_a_single_pass(tmp_path, ext):
    src = make_gop_clip(tmp_path / "gop.mp4", frames=45, gop=10)
    segments = video.plan_segments(src, 3)
    assert len(segments) == 3
    check_plan(segments, 45)
    keys = keyframe_times(src)
    assert all(s.start_pts in keys for s in segments) and [s.first_frame % 10 for s in segments] == [0, 0, 0]
    assert video.plan_segments(src, 3, decode=True) == segments  # counting by decoding agrees

    single = transcode(src, tmp_path / f"single{ext}", identity)
    parts, seen = restore_segments(src, tmp_path, segments, ext)
    # each segment decoded on its own (seek to its keyframe) gives the single pass's frames exactly
    whole = list(read_frames(src))
    assert sum(len(got) for got in seen) == len(whole) == 45
    assert all(np.array_equal(a, b) for a, b in zip([f for got in seen for f in got], whole))

    joined = video.join_segments(parts, src, tmp_path / f"joined{ext}")
    assert frame_times(joined.output) == frame_times(single.output)
    a, b = probe_video(joined.output), probe_video(single.output)
    # (Matroska has no frame count: probe estimates one from the duration, the same for both)
    assert (a.width, a.height, a.fps, a.frames) == (b.width, b.height, b.fps, b.frames)
    assert (a.width, a.height, a.fps, len(frame_times(joined.output))) == (64, 48, Fraction(30), 45)
    # the copied packets decode to the frames each part decodes to on its own (no broken references)
    from_parts = [f for part in parts for f in read_frames(part)]
    assert all(np.array_equal(x, y) for x, y in zip(read_frames(joined.output), from_parts))
    assert len(list(read_frames(joined.output))) == 45
    # audio copied once, packet for packet, as the single pass copies it
    assert a.has_audio and audio_times(joined.output) == audio_times(single.output)
    assert audio_packets(joined.output)[0] == audio_packets(src)[0]


def test_plan_has_fewer_segments_than_asked_when_keyframes_are_few(tmp_path):
    src = make_gop_clip(tmp_path / "gop.mp4", frames=25, gop=10)  # keyframes at 0, 10, 20
    segments = video.plan_segments(src, 8)
    check_plan(segments, 25)
    assert [s.first_frame for s in segments] == [0, 10, 20]
    one = video.plan_segments(src, 1)
    assert len(one) == 1 and one[0].whole and one[0].frames == 25
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            video.plan_segments(src, bad)


def test_segment_parts_with_audio_carry_their_share(tmp_path):
    src = make_gop_clip(tmp_path / "gop.mp4", frames=45, gop=10)
    counts = []
    for segment in video.plan_segments(src, 3):
        part = transcode(src, tmp_path / f"a{segment.index}.mp4", identity, segment=segment).output
        counts.append(audio_packets(part)[0])
    assert all(c > 0 for c in counts) and sum(counts) == audio_packets(src)[0]


def test_join_refuses_missing_or_mismatched_parts(tmp_path):
    src = make_gop_clip(tmp_path / "gop.mp4", frames=30, gop=10)
    segments = video.plan_segments(src, 3)
    parts, _ = restore_segments(src, tmp_path, segments, ".mp4")
    out = tmp_path / "out"
    with pytest.raises(ValueError) as err:
        video.join_segments(parts[:2], src, out / "joined.mp4")
    assert "20 frames" in one_line(err.value) and "30" in str(err.value)
    other = transcode(src, tmp_path / "other.mp4", identity, segment=segments[2], audio=False, preset="ultrafast")
    with pytest.raises(ValueError, match="extradata differs"):
        video.join_segments(parts[:2] + [other.output], src, out / "joined.mp4")
    with pytest.raises(ValueError, match="at least one part"):
        video.join_segments([], src, out / "joined.mp4")
    assert not out.exists() or os.listdir(out) == []
    # a segment of another video is refused before any work
    ffv1 = make_clip(tmp_path / "other.mkv", frames=10, codec="ffv1")
    with pytest.raises(ValueError, match="another video"):
        transcode(ffv1, out / "x.mkv", identity, segment=segments[1])


# --- encoders: presets, hardware, speed -------------------------------------------------------

def test_unknown_preset_lists_the_valid_ones(clip, tmp_path):
    with pytest.raises(ValueError) as err:
        transcode(clip, tmp_path / "x.mp4", identity, preset="fastest")
    message = one_line(err.value)
    assert "'fastest'" in message and "ultrafast superfast veryfast" in message and "placebo" in message
    with pytest.raises(ValueError, match="libx265 presets"):
        video.check_preset("libx265", "quick")
    # an encoder without presets: it does not apply
    with pytest.raises(ValueError, match="preset does not apply to the mpeg4 encoder"):
        transcode(clip, tmp_path / "x.avi", identity, codec="mpeg4", crf=None, preset="fast")
    assert os.listdir(tmp_path) == []
    stats = transcode(clip, tmp_path / "fast.mp4", identity, preset="ultrafast")
    assert stats.encoder == "libx264" and stats.frames == 12
    assert video.encoder_presets("h264_nvenc")[:7] == ("p1", "p2", "p3", "p4", "p5", "p6", "p7")
    assert video.encoder_presets("mpeg4") is None


def test_hardware_encoders_are_listed_and_a_missing_device_is_one_line(clip, tmp_path):
    listed = video.hardware_encoders()
    assert set(listed) <= set(av.codecs_available)
    assert "libx264" not in listed and "ffv1" not in listed
    assert video.encoder_problem("libx264") is None
    for name in listed:
        if not name.endswith(("_nvenc", "_qsv", "_amf", "_v4l2m2m")):
            continue
        problem = video.encoder_problem(name)
        if problem is None:
            continue  # this machine has the device
        assert name in one_line(ValueError(problem)) and "cannot open here" in problem
        with pytest.raises(ValueError) as err:
            transcode(clip, tmp_path / "hw.mp4", identity, codec=name)
        assert "cannot open here" in one_line(err.value)
        assert os.listdir(tmp_path) == []
        break


def test_stats_say_how_long_the_encoder_took(clip, tmp_path):
    stats = transcode(clip, tmp_path / "x.mp4", identity)
    assert stats.encoder == "libx264"
    assert 0 < stats.encode_seconds <= stats.seconds and stats.encode_fps >= stats.fps
    assert 0 < stats.encode_share <= 1

    def slow(frames):
        import time

        for frame in frames:
            time.sleep(0.02)  # a model far slower than x264 on 96x64 frames
            yield frame

    slowed = transcode(clip, tmp_path / "slow.mp4", slow)
    assert not slowed.encoder_bound and slowed.encode_share < 0.5
    fast = video.encode_only_fps(128, 96, preset="ultrafast", frames=20)
    assert fast > 0
    with pytest.raises(ValueError, match="unknown preset"):
        video.encode_only_fps(128, 96, preset="nope")
    with pytest.raises(ValueError, match="positive integer"):
        video.encode_only_fps(0, 96)
