"""``deploy-kit run`` end to end: folders with broken images, decompression bombs, pipelined output
equal to the serial Python API, and videos (frame count, size, rate, audio; corrupt files)."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from deploy_kit.runtime.imageio import decode_image
from deploy_kit.runtime.journal import JOURNAL_NAME
from deploy_kit.runtime.restorer import Restorer


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    """A tiny NAFNet (TLC) FP32 bundle, batch 1, made by export --bundle (shared: tests/conftest.py)."""
    return tiny_bundle("fp32")


def _png_claiming(path, width, height):
    """A PNG whose header claims width x height pixels and holds almost nothing."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def _leftovers(folder):
    """Temp or partial files left in an output folder (its journal, docs/jobs.md, is meant to stay)."""
    return [f for f in os.listdir(folder) if f != JOURNAL_NAME and (f.startswith(".") or f.endswith((".tmp", ".part")))]


def test_a_folder_with_broken_images_restores_the_rest(cli, bundle, tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray((rng.random((150, 170, 3)) * 255).astype(np.uint8)).save(src / "a.png")
    Image.fromarray((rng.random((90, 130, 4)) * 255).astype(np.uint8), "RGBA").save(src / "b.png")
    good = (src / "a.png").read_bytes()
    (src / "c-truncated.png").write_bytes(good[: len(good) // 2])
    (src / "d-not-an-image.jpg").write_bytes(b"hello")
    Image.fromarray((rng.random((70, 50)) * 65535).astype(np.uint16)).save(src / "e16.png")
    out = tmp_path / "out"
    r = cli("run", bundle, src, "--out", out, "--backend", "onnxruntime")  # compared with ONNX Runtime below
    assert r.returncode == 1, r.stdout + r.stderr
    assert "restored 3 images" in r.stdout
    assert "2 of 5 inputs failed" in r.stderr
    assert any("c-truncated.png" in l and l.startswith("skipped") for l in r.stderr.splitlines()), r.stderr
    assert any("d-not-an-image.jpg" in l and l.startswith("skipped") for l in r.stderr.splitlines()), r.stderr
    assert "Traceback" not in r.stderr
    assert sorted(os.listdir(out)) == [JOURNAL_NAME, "a.png", "b.png", "e16.png"] and not _leftovers(out)
    # the pipelined command equals the serial Python API, byte for byte
    arr, _ = decode_image(str(src / "a.png"))
    with Restorer(str(bundle), "onnxruntime") as rest:
        serial = rest.restore(arr)
    assert np.array_equal(decode_image(str(out / "a.png"))[0], serial)


def test_the_python_api_passes_each_backend_its_own_run_options(bundle):
    """``Restorer(..., run_options=...)``: the options of every backend ``auto`` may open; the one that
    runs takes its own type. Anything else is one line, before a runner is opened."""
    from deploy_kit.backends import EngineRunOptions, OrtRunOptions
    from deploy_kit.errors import UsageError

    with Restorer(str(bundle), "onnxruntime", run_options=[OrtRunOptions(threads=1), EngineRunOptions(slots=1)]) as r:
        assert r.runner.session.get_session_options().intra_op_num_threads == 1
        assert r.restore(np.zeros((40, 30, 3), np.uint8)).shape == (40, 30, 3)
    with pytest.raises(UsageError, match=r"^run options must be a backend's RunOptions .*; got dict$"):
        Restorer(str(bundle), run_options=[{"threads": 1}])


def test_a_decompression_bomb_is_one_line_exit_2_and_nothing_written(cli, bundle, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(src / "fine.png")
    _png_claiming(src / "bomb.png", 100000, 100000)
    r = cli("run", bundle, src, "--out", tmp_path / "out")
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "bomb.png" in r.stderr and "--max-pixels" in r.stderr, r.stderr
    assert not (tmp_path / "out").exists()
    r = cli("run", bundle, src / "fine.png", "--out", tmp_path / "out2", "--max-pixels", "100")
    assert r.returncode == 2 and "fine.png" in r.stderr and "more than the limit of 100" in r.stderr, r.stderr


av = pytest.importorskip("av")


def test_video_keeps_frames_size_rate_and_audio(cli, bundle, tmp_path):
    from deploy_kit.runtime.video import probe_video, read_frames
    from tests.media import make_clip

    clip = make_clip(str(tmp_path / "clip.mp4"), frames=10, width=96, height=70, fps=25, audio=True)
    out = tmp_path / "out"
    r = cli("run", bundle, clip, "--out", out, "--crf", "10")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "restored 10 frames" in r.stdout and "frames/s" in r.stdout
    src, dst = probe_video(clip), probe_video(str(out / "clip.mp4"))
    assert (dst.width, dst.height, dst.fps, dst.frames) == (src.width, src.height, src.fps, 10)
    assert dst.has_audio and dst.codec == "h264"
    # the frames went through the model: close to the serial API's restoration of the decoded input
    with Restorer(str(bundle), "onnxruntime") as rest:
        expect = [rest.restore(f) for f in read_frames(clip)]
    got = list(read_frames(str(out / "clip.mp4")))
    assert len(got) == 10
    src_frames = list(read_frames(clip))

    def err(x, y):  # on 8x8 block means: a random tiny model makes pixel noise that 4:2:0 H.264 cannot keep
        def blocks(a):
            h, w = (a.shape[0] // 8) * 8, (a.shape[1] // 8) * 8
            return a[:h, :w].astype(float).reshape(h // 8, 8, w // 8, 8, 3).mean(axis=(1, 3))
        return np.mean([np.abs(blocks(a) - blocks(b)).mean() for a, b in zip(x, y)])

    # each output frame is its own restoration: far closer to it than to its input or to a neighbour's
    assert err(got, expect) < 0.5 * err(got, src_frames), (err(got, expect), err(got, src_frames))
    assert err(got, expect) < 0.5 * err(got[1:], expect[:-1]), (err(got, expect), err(got[1:], expect[:-1]))
    assert not _leftovers(out)


def test_a_truncated_video_is_reported_per_file_and_leaves_no_output(cli, bundle, tmp_path):
    """A bad input does not stop the job (docs/jobs.md): the video is reported as skipped, the run
    ends with the summary and exit 1, and no output (nor a partial) is left for it."""
    from tests.media import make_clip

    clip = make_clip(str(tmp_path / "full.mp4"), frames=30, width=96, height=64, fps=24, audio=False)
    data = open(clip, "rb").read()
    bad = tmp_path / "cut.mp4"
    bad.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    r = cli("run", bundle, bad, "--out", out)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    assert any(l.startswith("skipped: ") and "cut.mp4" in l for l in r.stderr.splitlines()), r.stderr
    assert "1 of 1 inputs failed" in r.stderr
    assert not (out / "cut.mp4").exists() and not _leftovers(out)
    r = cli("run", bundle, clip, "--out", out, "--codec", "no-such-encoder")  # a bad option still stops the run
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error:"), r.stdout + r.stderr
