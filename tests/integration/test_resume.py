"""Resumable ``deploy-kit run`` (docs/jobs.md): the output folder's journal, runs killed with SIGKILL at
chosen and at random moments and run again, what a changed bundle, option, input or output redoes, bad
inputs, a second run on the same folder, and ``--ray`` without Ray.

Every run here uses ``--backend onnxruntime`` so that all of them, killed or not, run the same model
code and their outputs compare byte for byte with one uninterrupted run.

Kills at exact moments use the journal's test hook (``DEPLOY_KIT_TEST_KILL=POINT=N``, documented in
deploy_kit/runtime/journal.py: the run SIGKILLs itself the Nth time it reaches POINT); the process really
dies by SIGKILL, nothing is simulated.
"""

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from deploy_kit.runtime.journal import JOURNAL_NAME, PARTIAL_DIR

RUN = ("--backend", "onnxruntime")
N_PHOTOS = 10


def _dk(*args, env=None, pre=""):
    """``deploy-kit ARGS`` in a subprocess (``pre``: Python run before the CLI, e.g. to hide a module)."""
    cmd = [sys.executable, "-c", f"{pre}from deploy_kit.cli import main; main()", *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def bundles(tiny_bundle):
    """Two tiny NAFNet (TLC) FP32 bundles with different random weights (seeds 0 and 1; shared:
    tests/conftest.py)."""
    return {seed: tiny_bundle("fp32", seed) for seed in (0, 1)}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Ten small images: RGB, RGBA and 16-bit gray PNG, and JPEG."""
    src = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(N_PHOTOS):
        h, w = 40 + 7 * i, 90 - 4 * i
        kind = i % 4
        if kind == 0:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / f"p{i}.png")
        elif kind == 1:
            Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), "RGBA").save(src / f"p{i}.png")
        elif kind == 2:
            Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)).save(src / f"p{i}.png")
        else:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(src / f"p{i}.jpg", quality=90)
    return src


@pytest.fixture(scope="module")
def reference(bundles, photos, tmp_path_factory):
    """The outputs of one uninterrupted run: name -> bytes."""
    out = tmp_path_factory.mktemp("reference") / "out"
    r = _dk("run", bundles[0], photos, "--out", out, *RUN)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"restored {N_PHOTOS} images" in r.stdout
    return {f: (out / f).read_bytes() for f in os.listdir(out) if f != JOURNAL_NAME}


def _done_records(out) -> list[dict]:
    lines = (out / JOURNAL_NAME).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["t"] == "done"]


def _outputs(out) -> dict:
    return {f: (out / f).read_bytes() for f in os.listdir(out) if not f.startswith(".")}


def _restored(r) -> int:
    """The image count of the run's "restored N images" line (0 when it restored none)."""
    line = [l for l in r.stdout.splitlines() if l.startswith("restored ") and " images " in l]
    return int(line[0].split()[1]) if line else 0


def _assert_only_complete_outputs(out, reference):
    """Every output in the folder is whole: byte-identical to the uninterrupted run's."""
    for name, data in _outputs(out).items():
        assert data == reference[name], f"{name} differs from the uninterrupted run's"


def _assert_finished(out, reference):
    assert _outputs(out) == reference
    counts = collections.Counter(r["output"] for r in _done_records(out))
    assert set(counts) == set(reference) and set(counts.values()) == {1}, counts  # none committed twice
    assert sorted(os.listdir(out)) == sorted([JOURNAL_NAME, *reference])  # no partial, no temp file


def test_sigkill_at_each_commit_point_then_resume(bundles, photos, reference, tmp_path):
    """Killed (SIGKILL) before a record, between the record and the rename, and after a rename; each next
    run finishes the stopped commit or removes the partial, and the last one completes the job: outputs
    identical to an uninterrupted run, each committed once, and the last run restores exactly the rest."""
    out = tmp_path / "out"
    for point, n in (("after-record", 3), ("before-record", 2), ("after-rename", 2)):
        r = _dk("run", bundles[0], photos, "--out", out, *RUN, env={"DEPLOY_KIT_TEST_KILL": f"{point}={n}"})
        assert r.returncode == -signal.SIGKILL, (point, r.stdout + r.stderr)
        _assert_only_complete_outputs(out, reference)
        counts = collections.Counter(rec["output"] for rec in _done_records(out))
        assert set(counts.values()) <= {1}, counts
    # the kill after the third record left its partial in place, finished by the next run: 3 + 1 + 2
    assert len(_done_records(out)) == 6
    r = _dk("run", bundles[0], photos, "--out", out, *RUN)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resumed: 6 done earlier, {N_PHOTOS - 6} to do" in r.stderr, r.stderr
    assert _restored(r) == N_PHOTOS - 6
    _assert_finished(out, reference)


def test_recovery_finishes_a_recorded_commit_and_removes_partials(bundles, photos, reference, tmp_path):
    """Between the record and the rename the output exists only as its partial; the next run renames
    it (no restoration), and removes the partials that have no record."""
    out = tmp_path / "out"
    r = _dk("run", bundles[0], photos, "--out", out, *RUN, env={"DEPLOY_KIT_TEST_KILL": "after-record=1"})
    assert r.returncode == -signal.SIGKILL
    (name,) = [rec["output"] for rec in _done_records(out)]
    assert not (out / name).exists() and (out / PARTIAL_DIR / name).read_bytes() == reference[name]
    (out / PARTIAL_DIR / "stray.png").write_bytes(b"half an image")
    r = _dk("run", bundles[0], photos, "--out", out, *RUN)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "finished 1 commit(s)" in r.stderr and "removed" in r.stderr, r.stderr
    assert f"resumed: 1 done earlier, {N_PHOTOS - 1} to do" in r.stderr
    _assert_finished(out, reference)


def test_sigkill_at_random_moments_then_resume(bundles, photos, reference, tmp_path):
    """Killed from outside once k outputs exist (k = 1, 4, 7; the run is then anywhere: decoding, in the
    model, encoding a file, committing); the next runs finish the job with nothing lost or done twice."""
    out = tmp_path / "out"
    for k in (1, 4, 7):
        proc = subprocess.Popen([sys.executable, "-c", "from deploy_kit.cli import main; main()", "run",
                                 str(bundles[0]), str(photos), "--out", str(out), *RUN],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if out.is_dir() and sum(not f.startswith(".") for f in os.listdir(out)) >= k:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _assert_only_complete_outputs(out, reference)
    r = _dk("run", bundles[0], photos, "--out", out, *RUN)
    assert r.returncode == 0, r.stdout + r.stderr
    done = len(reference) - _restored(r)
    assert f"{done} done earlier" in r.stderr or done == 0, r.stderr
    _assert_finished(out, reference)


def test_what_changed_is_redone_and_the_run_says_why(bundles, photos, reference, tmp_path):
    out, src = tmp_path / "out", tmp_path / "in"
    shutil.copytree(photos, src)
    r = _dk("run", bundles[0], src, "--out", out, *RUN)
    assert r.returncode == 0 and _outputs(out) == reference, r.stdout + r.stderr
    journal_size = (out / JOURNAL_NAME).stat().st_size

    # unchanged: nothing restored, nothing written
    before = {f: os.stat(out / f).st_mtime_ns for f in reference}
    r = _dk("run", bundles[0], src, "--out", out, *RUN)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"resumed: {N_PHOTOS} done earlier, 0 to do" in r.stderr and "nothing to do" in r.stdout
    assert {f: os.stat(out / f).st_mtime_ns for f in reference} == before
    assert (out / JOURNAL_NAME).stat().st_size == journal_size

    # the folder copied elsewhere (new inodes): hashed once, found done, and "seen" so the next run does not hash
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    r = _dk("run", bundles[0], src, "--out", copy, *RUN)
    assert r.returncode == 0 and "nothing to do" in r.stdout, r.stdout + r.stderr
    lines = [json.loads(l) for l in (copy / JOURNAL_NAME).read_text().splitlines()]
    assert sorted(l["output"] for l in lines if l["t"] == "seen") == sorted(reference)
    size = (copy / JOURNAL_NAME).stat().st_size
    r = _dk("run", bundles[0], src, "--out", copy, *RUN)
    assert r.returncode == 0 and "nothing to do" in r.stdout and (copy / JOURNAL_NAME).stat().st_size == size

    # an output modified, one deleted, one input changed: those three are redone, each kind said
    (out / "p0.png").write_bytes(reference["p1.png"])
    (out / "p2.png").unlink()
    Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(src / "p4.png")
    r = _dk("run", bundles[0], src, "--out", out, *RUN)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "output modified since it was written: redoing 1 output (p0.png)" in r.stderr, r.stderr
    assert "output missing: redoing 1 output (p2.png)" in r.stderr
    assert "input changed since the journal: redoing 1 output (p4.png)" in r.stderr
    assert _restored(r) == 3
    got = _outputs(out)
    assert all(got[f] == reference[f] for f in reference if f != "p4.png") and got["p4.png"] != reference["p4.png"]

    # an option that changes the bytes redoes everything
    r = _dk("run", bundles[0], src, "--out", out, *RUN, "--overlap", 8)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"options changed since the journal (overlap 16 -> 8): redoing {N_PHOTOS} outputs" in r.stderr, r.stderr
    assert _restored(r) == N_PHOTOS

    # another bundle (other weights): everything redone, and it says so
    r = _dk("run", bundles[1], src, "--out", out, *RUN, "--overlap", 8)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"bundle changed since the journal: redoing {N_PHOTOS} outputs" in r.stderr, r.stderr
    assert _restored(r) == N_PHOTOS
    assert all(_outputs(out)[f] != reference[f] for f in reference)

    # --force: all restored again, the journal started afresh (one record per output)
    r = _dk("run", bundles[1], src, "--out", out, *RUN, "--overlap", 8, "--force")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--force" in r.stderr and _restored(r) == N_PHOTOS
    assert collections.Counter(rec["output"] for rec in _done_records(out)) == {f: 1 for f in reference}


def test_a_bad_input_is_reported_per_file_and_the_job_goes_on(bundles, photos, reference, tmp_path):
    out, src = tmp_path / "out", tmp_path / "in"
    shutil.copytree(photos, src)
    good = (src / "p0.png").read_bytes()
    (src / "broken.png").write_bytes(good[: len(good) // 2])
    r = _dk("run", bundles[0], src, "--out", out, *RUN)
    assert r.returncode == 1, r.stdout + r.stderr
    assert any(l.startswith("skipped: ") and "broken.png" in l for l in r.stderr.splitlines()), r.stderr
    assert f"1 of {N_PHOTOS + 1} inputs failed" in r.stderr and _restored(r) == N_PHOTOS
    assert _outputs(out) == reference and "Traceback" not in r.stderr
    # a run killed while appending a record leaves a cut line: dropped with a note, not a crash
    with open(out / JOURNAL_NAME, "ab") as fh:
        fh.write(b'{"t":"done","input":"/cut-sh')
    r = _dk("run", bundles[0], src, "--out", out, *RUN)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "dropped its last line" in r.stderr and f"resumed: {N_PHOTOS} done earlier, 1 to do" in r.stderr, r.stderr
    assert any(l.startswith("skipped: ") and "broken.png" in l for l in r.stderr.splitlines())
    assert _restored(r) == 0 and _outputs(out) == reference


def test_a_second_run_on_the_same_folder_is_one_line_exit_2(bundles, photos, tmp_path):
    """The journal is locked while a run works in the folder (flock: released when the process ends)."""
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out / JOURNAL_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a running `deploy-kit run` holds
        r = _dk("run", bundles[0], photos, "--out", out, *RUN)
    finally:
        os.close(fd)
    assert r.returncode == 2, r.stdout + r.stderr
    errors = [l for l in r.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "in use by another deploy-kit run" in errors[0] and "Traceback" not in r.stderr
    assert os.listdir(out) == [JOURNAL_NAME]


def test_two_inputs_with_one_output_name_are_refused_before_any_work(bundles, photos, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(photos / "p0.png", other / "p0.png")
    r = _dk("run", bundles[0], photos, other, "--out", tmp_path / "out", *RUN)
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("error:"), r.stdout + r.stderr
    assert "p0.png" in r.stderr and not (tmp_path / "out").exists()


def test_ray_without_ray_is_one_line_naming_the_extra(bundles, photos, tmp_path):
    """``sys.modules["ray"] = None`` makes ``import ray`` fail as for a missing package."""
    for args in (("--ray",), ("--ray=127.0.0.1:6379",)):
        r = _dk("run", bundles[0], photos, "--out", tmp_path / "out", *args, pre="import sys; sys.modules['ray'] = None; ")
        assert r.returncode == 2, r.stdout + r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "pip install 'deploy-kit[ray]'" in lines[0], r.stderr
        assert not (tmp_path / "out").exists()


av = pytest.importorskip("av")


def test_a_video_killed_while_it_is_encoded_is_redone_whole(bundles, tmp_path):
    """SIGKILL at the 4th encoded frame: a half-written temp file and no output; the next run removes the
    temp and writes the video, identical to an uninterrupted run's. A changed --crf redoes the video only."""
    from tests.media import make_clip

    src = tmp_path / "in"
    src.mkdir()
    make_clip(str(src / "clip.mp4"), frames=10, width=96, height=64, fps=24, audio=True)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(src / "still.png")
    ref = tmp_path / "ref"
    r = _dk("run", bundles[0], src, "--out", ref, *RUN)
    assert r.returncode == 0 and "restored 10 frames" in r.stdout, r.stdout + r.stderr
    out = tmp_path / "out"
    r = _dk("run", bundles[0], src, "--out", out, *RUN, env={"DEPLOY_KIT_TEST_KILL": "video-frame=4"})
    assert r.returncode == -signal.SIGKILL, r.stdout + r.stderr
    assert not (out / "clip.mp4").exists() and os.listdir(out / PARTIAL_DIR)  # killed while writing it
    r = _dk("run", bundles[0], src, "--out", out, *RUN)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "resumed: 1 done earlier, 1 to do" in r.stderr and "restored 10 frames" in r.stdout, r.stderr
    assert (out / "clip.mp4").read_bytes() == (ref / "clip.mp4").read_bytes()
    assert sorted(os.listdir(out)) == [JOURNAL_NAME, "clip.mp4", "still.png"]
    r = _dk("run", bundles[0], src, "--out", out, *RUN, "--crf", 30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "options changed since the journal (crf 18 -> 30): redoing 1 output (clip.mp4)" in r.stderr, r.stderr
    assert "resumed: 1 done earlier, 1 to do" in r.stderr
