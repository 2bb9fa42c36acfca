"""The OpenVINO backend with the real openvino package: verify rows (FP32 bundles and FP16 bundles at FP32,
BF16 where the CPU has it), ``run`` through it against ONNX Runtime, the Python API, the compiled-model
cache, a precision this CPU lacks and a missing openvino as one line each."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from deploy_kit import backends
from deploy_kit.errors import UsageError
from deploy_kit.metrics import psnr

OV = backends.get(backends.OPENVINO)
pytestmark = pytest.mark.skipif(not OV.installed(), reason="openvino not installed (pip install 'deploy-kit[openvino]')")
HAS_BF16 = OV.installed() and "bf16" in OV.precisions()
NO_BF16 = "this CPU has no BF16 (AMX / AVX-512-BF16): OpenVINO would compile FP32"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """FP32 and FP16 bundles of a tiny NAFNet (TLC, 64x64), made by export --bundle."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("ov")
    made = {}
    for prec in ("fp32", "fp16"):
        flags = [] if prec == "fp32" else ["--fp16"]
        r = run_cli("export", "nafnet", "--variant", "tiny", "--height", 64, "--width", 64, "--train-size", 32,
                    "--degradation", "noise:10", *flags, "--bundle", "--backend", "none", "--samples", 1, "--out", out)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        made[prec] = out / f"nafnet-tiny-64x64-tlc.{prec}.bundle"
    return made


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("prec", ["fp32", "fp16"])
def test_verify_row_on_openvino_fp32(cli, bundles, tmp_path, prec):
    """An FP32 bundle is an fp32 row (max-abs gate); an FP16 bundle run at FP32 arithmetic stays an fp16
    row (its weights are FP16). The compiled precision is read back and named in the note and the file."""
    b = _copy(bundles[prec], tmp_path / "b")
    r = cli("verify", b, "--backend", backends.OPENVINO, "--precision", "fp32")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"verify: {backends.OPENVINO} (CPU, FP32) on nafnet-tiny-64x64-tlc.{prec}.onnx" in r.stderr
    assert "parity: all gates passed" in r.stdout
    rep = json.loads((b / "verify-openvino-fp32.parity.json").read_text())
    check = rep["checks"][0]
    assert rep["passed"] and check["backend"] == backends.OPENVINO and check["precision"] == prec
    gates = " ".join(g["what"] for g in check["gates"])
    assert ("max abs" in gates) if prec == "fp32" else ("PSNR dB" in gates), gates
    assert os.listdir(b / "openvino-cache"), "the compiled model is cached beside the bundle"


@pytest.mark.skipif(not HAS_BF16, reason=NO_BF16)
def test_verify_row_on_openvino_bf16(cli, bundles, tmp_path):
    """Where the CPU has BF16: an FP32 bundle run at BF16 is a bf16 row with the BF16 PSNR gate."""
    b = _copy(bundles["fp32"], tmp_path / "b")
    r = cli("verify", b, "--backend", backends.OPENVINO, "--precision", "bf16")
    assert r.returncode == 0, r.stdout + r.stderr
    check = json.loads((b / "verify-openvino-bf16.parity.json").read_text())["checks"][0]
    gate = next(g for g in check["gates"] if g["what"] == "output PSNR dB")
    assert check["precision"] == "bf16" and gate["op"] == ">="
    assert gate["limit"] == json.loads((b / "manifest.json").read_text())["tolerance"]["bf16_min_psnr"]


@pytest.mark.skipif(HAS_BF16, reason="this CPU has BF16: the refusal is for CPUs without it")
def test_bf16_on_a_cpu_without_it_is_one_line_exit_2(cli, bundles, tmp_path):
    b = _copy(bundles["fp32"], tmp_path / "b")
    r = cli("verify", b, "--backend", backends.OPENVINO, "--precision", "bf16")
    assert r.returncode == 2, r.stdout + r.stderr
    line = r.stderr.strip()
    assert "\n" not in line and "Traceback" not in r.stderr, r.stderr
    assert line.startswith("error: OpenVINO BF16 needs a CPU with AMX or AVX-512-BF16") and "use fp32" in line, line
    assert not list(b.glob("verify-*")), "nothing written"
    from deploy_kit.runtime.restorer import Restorer

    with pytest.raises(UsageError, match=r"^OpenVINO BF16 needs a CPU with AMX or AVX-512-BF16"):
        Restorer(str(b), backends.OPENVINO, run_options=backends.OpenVINORunOptions(precision="bf16"))


def test_run_through_openvino_equals_onnxruntime_within_the_bf16_gate(cli, bundles, tmp_path):
    """``run --backend openvino`` and ``run --backend onnxruntime`` on one photo: the same files, their
    pixels within the bundle's BF16 gate of each other (OpenVINO here computes whatever ``auto`` gives)."""
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    yy, xx = np.mgrid[0:150, 0:170]
    photo = (127 + 80 * np.sin(xx / 9.0) * np.cos(yy / 7.0))[..., None] + rng.normal(0, 10, (150, 170, 3))
    Image.fromarray(photo.clip(0, 255).astype(np.uint8)).save(src / "a.png")
    outs = {}
    for name in (backends.OPENVINO, backends.ONNXRUNTIME):
        r = cli("run", bundles["fp32"], src, "--out", tmp_path / name, "--backend", name)
        assert r.returncode == 0, r.stdout + r.stderr
        assert f"({name})" in r.stdout
        outs[name] = np.asarray(Image.open(tmp_path / name / "a.png"), np.float32) / 255
    gate = json.loads((bundles["fp32"] / "manifest.json").read_text())["tolerance"]["bf16_min_psnr"]
    assert outs[backends.OPENVINO].shape == (150, 170, 3)
    assert psnr(outs[backends.ONNXRUNTIME], outs[backends.OPENVINO]) >= gate


def test_restorer_python_api_on_openvino(bundles):
    """``Restorer(bundle, backend='openvino')`` with its own run options among another backend's; the
    result agrees with ONNX Runtime's to FP32 rounding (FP32 compiled here, read back)."""
    from deploy_kit.runtime.restorer import Restorer

    frame = (np.random.default_rng(1).random((70, 90, 3)) * 255).astype(np.uint8)
    opts = [backends.OpenVINORunOptions(precision="fp32", threads=1), backends.OrtRunOptions(threads=1)]
    with Restorer(str(bundles["fp32"]), "openvino", run_options=opts) as r:
        assert r.runner.name == backends.OPENVINO and r.runner.precision == "fp32"
        assert "(CPU, FP32)" in r.note
        got = r.restore(frame)
    with Restorer(str(bundles["fp32"]), backends.ONNXRUNTIME) as r:
        want = r.restore(frame)
    assert got.shape == want.shape == frame.shape
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1  # uint8 rounding of FP32 differences


def test_auto_on_this_cpu_says_why_it_chose_its_runner(bundles):
    """``auto`` without engines: OpenVINO where :meth:`preferred_on_cpu` says so on this (real) CPU, with
    the reason in the note; the real compiled precision is the fastest this CPU offers."""
    from deploy_kit.bundle import open_bundle
    from deploy_kit.runtime.target import bundle_runner

    preferred, why = OV.preferred_on_cpu()
    runner, note = bundle_runner(open_bundle(str(bundles["fp32"])), "auto")
    try:
        if preferred:
            assert runner.name == backends.OPENVINO and runner.precision == OV.precisions()[0]
            assert note.startswith(f"{backends.OPENVINO} ({runner.precision.upper()}, CPU) on ") and why in note
        else:
            assert runner.name == backends.ONNXRUNTIME and f"{backends.OPENVINO} not used: {why}" in note
    finally:
        runner.close()


def test_second_start_imports_the_cached_model(bundles, tmp_path):
    """The first start compiles and writes OpenVINO's cache; the second imports it (same outputs)."""
    from deploy_kit.bundle import open_bundle

    b = open_bundle(str(_copy(bundles["fp32"], tmp_path / "b")))
    x = b.references()[0][0]
    opts = OV.run_options(precision="fp32")
    with OV.open_runner(b.onnx, opts) as first:
        assert first.cache_dir == os.path.join(b.path, "openvino-cache")
        y1 = first.run(x)[0]
    blobs = sorted(os.listdir(first.cache_dir))
    assert blobs
    with OV.open_runner(b.onnx, opts) as second:
        y2 = second.run(x)[0]
    assert sorted(os.listdir(first.cache_dir)) == blobs  # nothing new: imported, not compiled again
    assert np.array_equal(y1, y2)
    with OV.open_runner(b.onnx, OV.run_options(precision="fp32", cache_dir="")) as none:
        assert none.cache_dir == "" and np.array_equal(none.run(x)[0], y1)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_bundle_caches_in_the_user_cache(bundles, tmp_path, monkeypatch):
    from deploy_kit.runners.openvino import default_cache_dir

    b = _copy(bundles["fp32"], tmp_path / "b")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    os.chmod(b, 0o555)
    try:
        assert default_cache_dir(str(b / "x.onnx")) == str(tmp_path / "xdg" / "deploy-kit" / "openvino")
    finally:
        os.chmod(b, 0o755)


def test_missing_openvino_is_one_line_naming_the_extra(bundles, tmp_path):
    """No openvino importable in the CLI's process (``sys.modules['openvino'] = None`` makes Python's import
    fail as for a missing package): ``--backend openvino`` is one line naming the extra, exit 2; ``auto``
    runs ONNX Runtime."""
    b = _copy(bundles["fp32"], tmp_path / "b")
    code = ("import sys; sys.modules['openvino'] = None; from deploy_kit.cli import main; "
            "sys.argv = ['deploy-kit', *sys.argv[1:]]; main()")
    r = subprocess.run([sys.executable, "-c", code, "verify", str(b), "--backend", backends.OPENVINO],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip() == ("error: cannot run openvino here: openvino is not installed "
                                "(pip install 'deploy-kit[openvino]')"), r.stderr
    r = subprocess.run([sys.executable, "-c", code, "verify", str(b)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify: onnxruntime (CPU) on " in r.stderr and "openvino" not in r.stderr  # not installed: not named
