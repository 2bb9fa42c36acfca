"""Your own model through the whole pipeline: ``export --module FILE.py:NAME`` and ``export model.onnx``.

The architectures are examples/tiny_models.py (Swin-style windowed attention, an RRDB x4
super-resolution net, an SE U-Net with global pooling) and an ONNX file written by
``torch.onnx.export`` outside deploy-kit. Engines are really built with TensorRT-RTX where it is
installed; parity is ONNX Runtime on CPU and the true-FP16 emulation.
"""

import json
import os
import sys

import numpy as np
import pytest

from deploy_kit._deps import available

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
EXAMPLES = os.path.abspath(os.path.join(ROOT, "examples", "tiny_models.py"))
needs_rtx = pytest.mark.skipif(not available("tensorrt_rtx"), reason="tensorrt-rtx not installed")

# name, extra flags, export size, scale
ARCHS = [
    ("TinySwin", [], 64, 1),
    ("TinyRRDB", [], 32, 4),
    ("SEUNet", ["--tlc", "--train-size", "32"], 64, 1),
]


def _report(path):
    return json.loads(path.read_text())


def _row(rep, backend_prefix, precision):
    return next(c for c in rep["checks"] if c["backend"].startswith(backend_prefix) and c["precision"] == precision)


def _psnr(row):
    return min(float(o["psnr"]) for o in row["outputs"])


def _image(path, h, w, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 90 * np.sin(yy / (9 + c) + xx / 13) for c in range(3)], -1) + rng.normal(0, 8, (h, w, 3))
    cv2.imwrite(str(path), np.clip(img, 0, 255).astype(np.uint8))


def _one_line_error(r):
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


@needs_rtx
@pytest.mark.parametrize("name,flags,size,scale", ARCHS, ids=[a[0] for a in ARCHS])
def test_module_fp16_engine_bundle_and_run(cli, tmp_path, name, flags, size, scale):
    out = tmp_path / "o"
    r = cli("export", "--module", f"{EXAMPLES}:{name}", *flags, "--height", size, "--width", size, "--fp16",
            "--backend", "tensorrt-rtx", "--bundle", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"scale x{scale}" in r.stderr  # what was inferred is shown
    stem = f"{name.lower()}-{size}x{size}{'-tlc' if '--tlc' in flags else ''}"
    rep = _report(out / f"{stem}.fp16.parity.json")
    assert rep["passed"]
    assert _row(rep, "onnxruntime", "fp32")["status"] == "pass"
    assert _psnr(_row(rep, "true-fp16", "fp16")) >= 50.0
    assert "FP16 (graph-level range-safe pass)" in r.stdout and "kept FP32: 0 nodes" in r.stdout
    assert (out / f"{stem}.fp16.rtx1.plan").stat().st_size > 10_000
    bundle = out / f"{stem}.fp16.bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["scale"] == scale and manifest["source"]["kind"] == "module"
    assert manifest["source"]["ref"] == f"tiny_models.py:{name}"  # no build-machine path travels
    assert manifest["global_context"] is False  # SEUNet's pools were made local by --tlc

    img = tmp_path / "big.png"
    _image(img, size * 2 + 7, size + 13)  # larger than the engine, odd sizes
    r = cli("run", bundle, img, "--out", tmp_path / "restored")
    assert r.returncode == 0, r.stdout + r.stderr
    import cv2

    got = cv2.imread(str(tmp_path / "restored" / "big.png"))
    assert got.shape == ((size * 2 + 7) * scale, (size + 13) * scale, 3)


@pytest.mark.parametrize("name,flags,size,scale", ARCHS, ids=[a[0] for a in ARCHS])
def test_module_int8_bundle_verifies(cli, tmp_path, name, flags, size, scale):
    out = tmp_path / "o"
    r = cli("export", "--module", f"{EXAMPLES}:{name}", *flags, "--height", size, "--width", size, "--int8",
            "--calib-count", "8", "--backend", "none", "--bundle", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    stem = f"{name.lower()}-{size}x{size}{'-tlc' if '--tlc' in flags else ''}"
    rep = _report(out / f"{stem}.int8.parity.json")
    assert rep["passed"] and _psnr(_row(rep, "onnxruntime", "int8")) >= 35.0
    r = cli("verify", out / f"{stem}.int8.bundle")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("seam-check", out / f"{stem}.int8.onnx")  # tiles blended in output space, against the module
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PSNR" in r.stdout and (f"(x{scale} out)" in r.stdout) == (scale > 1)


def test_onnx_file_from_outside(cli, tmp_path):
    """An ONNX written by torch.onnx.export elsewhere, with dynamic H/W: fixed by --height/--width, its own reference."""
    import torch

    sys.path.insert(0, os.path.dirname(EXAMPLES))
    try:
        from tiny_models import TinyRRDB
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)
    src = tmp_path / "My SR x2.onnx"
    torch.onnx.export(TinyRRDB(scale=2).eval(), (torch.rand(1, 3, 32, 32),), str(src), dynamo=False, opset_version=17,
                      input_names=["lr"], output_names=["hr"], dynamic_axes={"lr": {2: "h", 3: "w"}, "hr": {2: "H", 3: "W"}})
    _one_line_error(cli("export", src, "--backend", "none", "--out", tmp_path / "x"))  # dynamic: asks for the size
    out = tmp_path / "o"
    r = cli("export", src, "--height", "40", "--width", "48", "--int8", "--calib-count", "8", "--backend", "none",
            "--bundle", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    rep = _report(out / "my-sr-x2-40x48.int8.parity.json")
    assert rep["passed"] and "ONNX Runtime" in rep["reference"] and "My SR x2.onnx" in rep["reference"]
    assert _row(rep, "onnxruntime", "fp32")["outputs"][0]["max_abs"] == 0.0  # simplify kept the user's graph exactly
    r = cli("export", src, "--height", "40", "--width", "48", "--fp16", "--backend", "none", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _psnr(_row(_report(out / "my-sr-x2-40x48.fp16.parity.json"), "true-fp16", "fp16")) >= 50.0
    img = tmp_path / "in.png"
    _image(img, 70, 101)
    r = cli("run", out / "my-sr-x2-40x48.int8.bundle", img, "--out", tmp_path / "r")
    assert r.returncode == 0, r.stdout + r.stderr
    import cv2

    assert cv2.imread(str(tmp_path / "r" / "in.png")).shape == (140, 202, 3)
    r = cli("verify", out / "my-sr-x2-40x48.fp16.onnx")  # the build machine re-runs the source graph
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("seam-check", out / "my-sr-x2-40x48.fp16.onnx")  # the source graph at the full size is the reference
    assert r.returncode == 0, r.stdout + r.stderr
    assert "on your graph My SR x2.onnx" in r.stdout and "(x2 out)" in r.stdout


def test_tlc_finds_sites_and_global_context_is_recorded(cli, tmp_path):
    out = tmp_path / "o"
    r = cli("export", "--module", f"{EXAMPLES}:SEUNet", "--height", "64", "--width", "64", "--backend", "none",
            "--stop-after", "simplified", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "10 global average pools" in r.stderr  # 5 SE blocks, each pooling two ways
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(out / "seunet-64x64.fp32.onnx")).metadata_props}
    assert json.loads(meta["global_context"]) is True
    line = _one_line_error(cli("export", "--module", f"{EXAMPLES}:TinySwin", "--tlc", "--height", "64", "--width", "64",
                               "--backend", "none", "--out", tmp_path / "x"))
    assert "no global average pooling" in line


def test_weights_wrapped_and_mismatched(cli, tmp_path):
    import torch

    sys.path.insert(0, os.path.dirname(EXAMPLES))
    try:
        from tiny_models import SEUNet, TinySwin
    finally:
        sys.path.pop(0)
    good = tmp_path / "seunet.pth"
    torch.save({"params_ema": SEUNet().state_dict()}, good)
    r = cli("export", "--module", f"{EXAMPLES}:SEUNet", "--weights", good, "--height", "32", "--width", "32",
            "--backend", "none", "--stop-after", "simplified", "--out", tmp_path / "o")
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "swin.pth"
    torch.save(TinySwin().state_dict(), bad)
    line = _one_line_error(cli("export", "--module", f"{EXAMPLES}:SEUNet", "--weights", bad, "--height", "32",
                               "--width", "32", "--backend", "none", "--out", tmp_path / "x"))
    assert "missing" in line and "inp.weight" in line
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("args,expect", [
    (["--module", "nowhere.py:Net"], "file not found"),
    (["--module", f"{EXAMPLES}:NoSuchNet"], "no class or function named NoSuchNet"),
    (["--module", f"{EXAMPLES}"], "FILE.py:NAME"),
    (["--module", f"{EXAMPLES}:SEUNet", "--init-args", "{width: 8}"], "not JSON"),
    (["--module", f"{EXAMPLES}:SEUNet", "--init-args", '{"nope": 1}'], "raised TypeError"),
    (["--module", f"{EXAMPLES}:TinySwin", "--height", "60", "--width", "64"], "multiples of 8"),
    (["--module", f"{EXAMPLES}:TinyRRDB", "--scale", "2"], "--scale 2"),
    (["nafnet", "--module", f"{EXAMPLES}:SEUNet"], "not both"),
    (["nafnet", "--scale", "2"], "applies to your own model"),
    (["--module", f"{EXAMPLES}:SEUNet", "--variant", "x"], "built-in models"),
])
def test_bad_input_is_one_line(cli, tmp_path, args, expect):
    out = tmp_path / "o"
    line = _one_line_error(cli("export", *args, "--backend", "none", "--out", out))
    assert expect in line, line
    assert not out.exists()


def test_value_range_255_and_the_graph_level_fp16_pass(cli, tmp_path):
    """Inputs in [0, 255] make the token LayerNorms' statistics leave FP16: the graph-level pass rescales them."""
    out = tmp_path / "o"
    r = cli("export", "--module", f"{EXAMPLES}:TinySwin", "--value-range", "255", "--height", "64", "--width", "64",
            "--fp16", "--backend", "none", "--out", out)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "values [0, 255]" in r.stderr
    assert "sites rescaled (layernorm" in r.stdout, r.stdout
    rep = _report(out / "tinyswin-64x64.fp16.parity.json")
    assert rep["passed"] and _psnr(_row(rep, "true-fp16", "fp16")) >= 50.0
