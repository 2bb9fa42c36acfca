"""``deploy-kit run --ray``: the same job on a local Ray cluster (2 CPUs, started here) writes the same
files as the local run: images byte for byte, a video split into segments frame for frame with equal
timestamps (FFV1, lossless); a worker killed mid-job (``ray.kill``) is restarted by Ray and the job
still completes, each output committed once; a bad image is reported and the rest restored.

One cluster per module (``ray.init(num_cpus=2)``); the CLI runs in a subprocess that joins it with
``--ray ADDRESS``, the Python API (:func:`deploy_kit.runtime.job.run_job`) in this process, which is
a driver of that cluster already. Select these tests with ``pytest tests/integration/test_ray.py``.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")

from deploy_kit.runtime.journal import JOURNAL_NAME, PARTIAL_DIR, JobOptions  # noqa: E402
from tests.conftest import run_cli  # noqa: E402


@pytest.fixture(scope="module")
def address():
    """A local Ray cluster of 2 CPUs for this module; its address (what `ray start --head` would print)."""
    ctx = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        yield ctx.address_info["address"]
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def bundle(tiny_bundle):
    """A tiny NAFNet (TLC) FP32 bundle, batch 1, made by export --bundle (shared: tests/conftest.py)."""
    return tiny_bundle("fp32")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """8 small images (RGB, RGBA, 16-bit gray, JPEG) and one that is not an image."""
    src = tmp_path_factory.mktemp("rayin")
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray((rng.random((70 + 6 * i, 90, 3)) * 255).astype(np.uint8)).save(src / f"rgb{i}.png")
    Image.fromarray((rng.random((60, 80, 4)) * 255).astype(np.uint8), "RGBA").save(src / "alpha.png")
    Image.fromarray((rng.random((50, 70)) * 65535).astype(np.uint16)).save(src / "gray16.png")
    Image.fromarray((rng.random((64, 96, 3)) * 255).astype(np.uint8)).save(src / "photo.jpg")
    (src / "broken.png").write_bytes(b"not an image")
    return src


@pytest.fixture(scope="module")
def local_out(bundle, images, tmp_path_factory):
    """The local run of ``images`` (the reference): exit 1 for the broken file, the rest written."""
    out = tmp_path_factory.mktemp("raylocal") / "out"
    r = run_cli("run", bundle, images, "--out", out)
    assert r.returncode == 1, r.stdout + r.stderr
    return out


def _outputs(folder) -> dict:
    """Visible output files -> bytes."""
    return {f: (folder / f).read_bytes() for f in sorted(os.listdir(folder)) if not f.startswith(".")}


def _journal_counts(folder) -> Counter:
    """How many "done" records the journal holds per input."""
    with open(folder / JOURNAL_NAME) as fh:
        recs = [json.loads(line) for line in fh if line.strip()]
    return Counter(os.path.basename(r["input"]) for r in recs if r.get("t") == "done")


def _clean(folder) -> None:
    """Nothing hidden left behind but the journal (no partials, no video parts)."""
    assert sorted(f for f in os.listdir(folder) if f.startswith(".")) == [JOURNAL_NAME], os.listdir(folder)
    assert not (folder / PARTIAL_DIR).exists()


def test_cli_on_ray_equals_the_local_run_byte_for_byte_and_reports_a_bad_image(address, bundle, images, local_out,
                                                                              tmp_path):
    out = tmp_path / "ray"
    r = run_cli("run", bundle, images, "--out", out, "--ray", address)
    assert r.returncode == 1, r.stdout + r.stderr  # the broken file, as locally
    assert "Traceback" not in r.stderr, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("skipped:")] == \
        [line for line in r.stderr.splitlines() if line.startswith("skipped:") and "broken.png" in line], r.stderr
    assert "1 of 9 inputs failed" in r.stderr, r.stderr
    assert "2 workers (1 CPU each, 1 model thread)" in r.stderr, r.stderr
    assert "restored 8 images" in r.stdout and "  node " in r.stdout, r.stdout
    expect = _outputs(local_out)
    assert len(expect) == 8
    assert _outputs(out) == expect
    assert set(_journal_counts(out).values()) == {1} and len(_journal_counts(out)) == 8
    _clean(out)


def test_a_worker_killed_mid_job_is_restarted_and_the_job_completes_equal(address, bundle, images, local_out,
                                                                         tmp_path):
    """``ray.kill`` of one worker after the first result: Ray restarts it and re-runs its tasks; only the
    driver commits, so every output is there once and equals the local run's."""
    from deploy_kit.runtime.cluster import NAMESPACE
    from deploy_kit.runtime.job import run_job
    from deploy_kit.runtime.restore import collect_inputs

    lines, killed = [], []

    def echo(line="", err=False):
        lines.append(line)
        if line.startswith("progress:") and not killed:
            name = sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
                          if a["namespace"] == NAMESPACE)[0]
            ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=False)
            killed.append(name)

    out = tmp_path / "ray"
    result = run_job(JobOptions(str(bundle)), collect_inputs([str(images)]), str(out), ray_address=address, echo=echo)
    assert killed, lines
    assert any("was restarted by Ray" in line for line in lines), lines
    assert len(result.failed) == 1 and "broken.png" in result.failed[0], result.failed
    assert len(result.written) == 8 and len(set(result.written)) == 8
    assert _outputs(out) == _outputs(local_out)
    assert set(_journal_counts(out).values()) == {1} and len(_journal_counts(out)) == 8
    assert sum(v["images"] for v in result.per_node.values()) == 8
    _clean(out)


def _packets(path) -> list:
    """(stream kind, pts, dts, key) of every packet of ``path``, in file order."""
    import av

    with av.open(str(path)) as c:
        return [(p.stream.type, p.pts, p.dts, p.is_keyframe) for p in c.demux() if p.size]


def test_a_video_split_into_segments_equals_the_local_run_frame_for_frame(address, bundle, tmp_path):
    pytest.importorskip("av")
    from deploy_kit.runtime.job import run_job
    from deploy_kit.runtime.restorer import Restorer
    from deploy_kit.runtime.video import probe_video, read_frames
    from tests.media import make_clip

    src = tmp_path / "in"
    src.mkdir()
    clip = make_clip(str(src / "clip.mkv"), frames=60, width=64, height=48, fps=25, audio=True, codec="ffv1")
    opts = JobOptions(str(bundle), codec="ffv1", crf=None)
    with Restorer(str(bundle)) as restorer:
        local = run_job(opts, [clip], str(tmp_path / "local"), restorer=restorer)
    lines = []
    result = run_job(opts, [clip], str(tmp_path / "ray"), ray_address=address,
                     echo=lambda line="", err=False: lines.append(line))
    assert not local.failed and not result.failed, (local.failed, result.failed, lines)
    seg = [line for line in lines if line.startswith("ray: clip.mkv: ")]
    assert seg and int(seg[0].split()[2]) >= 3, lines  # "ray: clip.mkv: 4 segments of 12, 12, 12, 24 frames"
    a, b = tmp_path / "local" / "clip.mkv", tmp_path / "ray" / "clip.mkv"
    assert probe_video(str(b)) == probe_video(str(a)) and probe_video(str(b)).frames == 60
    fa, fb = list(read_frames(str(a))), list(read_frames(str(b)))
    assert len(fa) == len(fb) == 60 and all(np.array_equal(x, y) for x, y in zip(fa, fb))
    pa, pb = _packets(a), _packets(b)
    assert [p for p in pb if p[0] == "video"] == [p for p in pa if p[0] == "video"]  # timestamps and keyframes
    audio = [p for p in pa if p[0] == "audio"]
    assert len(audio) == len([p for p in _packets(clip) if p[0] == "audio"]) > 0
    assert [p for p in pb if p[0] == "audio"] == audio  # copied once, as the local run copies it
    assert result.frames == 60 and sum(v["frames"] for v in result.per_node.values()) == 60
    _clean(tmp_path / "ray")


def test_a_target_the_workers_cannot_run_is_one_line_before_any_work(address, bundle, images, tmp_path):
    """Each worker opens the bundle on its own node; one that cannot (here: no TensorRT) stops the job
    in one line naming the node, exit 2, and nothing is written."""
    out = tmp_path / "ray"
    r = run_cli("run", bundle, images, "--out", out, "--ray", address, "--backend", "tensorrt")
    assert r.returncode == 2, r.stdout + r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "a Ray worker on node" in last and "cannot open the target" in last and "tensorrt" in last, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert not out.exists() or _outputs(out) == {}
