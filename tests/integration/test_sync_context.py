"""Tiles that equal the full image for global-context models: the sync graph through export, bundle, run and seam-check."""

import dataclasses
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from deploy_kit.artifact import artifact_request  # noqa: E402
from deploy_kit.data.samples import sample_images  # noqa: E402
from deploy_kit.metrics import psnr  # noqa: E402
from deploy_kit.models import get_adapter  # noqa: E402
from deploy_kit.models.checkpoint import load_request  # noqa: E402
from deploy_kit.runtime.restorer import Restorer  # noqa: E402

EXAMPLES = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "examples", "tiny_models.py"))


def _full_image(onnx_path, x):
    """The eager PyTorch model on the whole image (what tiles should equal)."""
    req, _ = artifact_request(str(onnx_path))
    adapter = get_adapter(req.model)
    net = load_request(adapter, req).model
    full = adapter.wrap(net, dataclasses.replace(req, height=x.shape[1], width=x.shape[2]), static=False)
    with torch.no_grad():
        return np.clip(full(torch.from_numpy(x[None]))[0].numpy(), 0, 1)


@pytest.fixture(scope="module")
def pointwise(tmp_path_factory):
    """A global-context module whose pixels see no neighbour: synchronised tiles must be exact."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("pw")
    r = run_cli("export", "--module", f"{EXAMPLES}:PointwiseSE", "--height", "64", "--width", "64", "--backend", "none",
                "--bundle", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    return out / "pointwisese-64x64.fp32.onnx", out / "pointwisese-64x64.fp32.bundle"


@pytest.mark.parametrize("h,w", [(150, 211), (64, 64), (40, 50)], ids=["odd-sizes", "one-tile", "smaller-than-a-tile"])
def test_sync_tiles_equal_the_full_image(pointwise, h, w):
    onnx_path, bundle = pointwise
    x = sample_images(1, 3, h, w, "noise:25", 0)[0][0]
    ref = _full_image(onnx_path, x)
    got = {}
    for ctx in ("tile", "sync:3"):
        with Restorer(str(bundle), "onnxruntime", context=ctx) as r:
            got[ctx] = r.restore(np.ascontiguousarray(x.transpose(1, 2, 0))).transpose(2, 0, 1)
    assert float(np.abs(got["sync:3"] - ref).max()) < 2e-6  # FP32: the statistics are exact sums
    if (h, w) == (150, 211):
        assert float(np.abs(got["tile"] - ref).max()) > 1e-4  # tiles with their own statistics are not


def test_nafnet_without_tlc_sync_closes_the_gap(cli, tmp_path):
    out = tmp_path / "o"
    r = cli("export", "nafnet", "--variant", "tiny-notlc", "--height", "128", "--width", "128", "--fp16",
            "--backend", "none", "--bundle", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sync graph" in r.stdout
    stem = "nafnet-tiny-notlc-128x128"
    bundle = out / f"{stem}.fp16.bundle"
    assert (bundle / f"{stem}.fp16.sync.onnx").is_file()
    x = sample_images(1, 3, 208, 272, "noise:25", 0)[0][0]
    ref = _full_image(out / f"{stem}.fp32.onnx", x)
    scores = {}
    for ctx in ("tile", "sync:2", "sync:3"):
        with Restorer(str(bundle), "onnxruntime", context=ctx, overlap=32) as rest:
            scores[ctx] = psnr(rest.restore(np.ascontiguousarray(x.transpose(1, 2, 0))).transpose(2, 0, 1), ref)
    assert scores["tile"] + 10 < scores["sync:2"] < scores["sync:3"], scores

    import cv2

    img = tmp_path / "in.png"
    cv2.imwrite(str(img), (x.transpose(1, 2, 0)[..., ::-1] * 255 + 0.5).astype(np.uint8))
    r = cli("run", bundle, img, "--out", tmp_path / "r", "--context", "sync:2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "sync:" in r.stderr and "2 passes" in r.stderr
    r = cli("seam-check", out / f"{stem}.fp16.onnx")  # the sync graph beside it: both modes measured
    assert r.returncode == 0, r.stdout + r.stderr
    assert "context sync:2" in r.stdout and "context sync:3" in r.stdout


def _one_line(r):
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_sync_needs_a_sync_graph_and_a_valid_mode(cli, tmp_path, pointwise):
    out = tmp_path / "o"
    r = cli("export", "nafnet", "--variant", "tiny", "--height", "64", "--width", "64", "--train-size", "32",
            "--backend", "none", "--bundle", "--out", out)  # TLC: local context, no sync graph
    assert r.returncode == 0, r.stdout + r.stderr
    bundle = next(out.glob("*.bundle"))
    assert not list(bundle.glob("*.sync.onnx"))
    img = tmp_path / "in.png"
    import cv2

    cv2.imwrite(str(img), np.zeros((70, 90, 3), np.uint8))
    assert "sync graph" in _one_line(cli("run", bundle, img, "--out", tmp_path / "r", "--context", "sync"))
    assert "--context" in _one_line(cli("run", pointwise[1], img, "--out", tmp_path / "r", "--context", "sync:0"))
    assert not (tmp_path / "r").exists()
