"""The device half in the dev environment: export --bundle, bundle ARTIFACT, build/verify/run a
bundle, and tampered bundles as one-line errors. (The torch-free install is tested in
test_device_core.py, from the built wheel.)"""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from deploy_kit._deps import available
from deploy_kit.fsutil import disk_size, human_size
from deploy_kit.runners.cuda import gpu_available

needs_rtx = pytest.mark.skipif(not available("tensorrt_rtx"), reason="tensorrt-rtx not installed")
GPU_OK, GPU_WHY = gpu_available()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """An FP16 and an INT8 bundle of a tiny NAFNet (TLC) made by export --bundle."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("bundles")
    made = {}
    for prec, extra in (("fp16", []), ("int8", ["--calib-count", "8"])):
        # noisy inputs: a random tiny model on an exactly flat dark region is ill-conditioned in FP32
        # (its LayerNorms amplify rounding; docs/correctness.md)
        r = run_cli("export", "nafnet", "--variant", "tiny", "--height", 64, "--width", 64, "--train-size", 32,
                    "--degradation", "noise:10",
                    f"--{prec}", *extra, "--bundle", "--backend", "none", "--samples", 2, "--out", out)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        made[prec] = out / f"nafnet-tiny-64x64-tlc.{prec}.bundle"
        line = next(l for l in r.stdout.splitlines() if "device bundle" in l)  # the run prints the bundle size
        assert line.endswith(f"({human_size(disk_size(str(made[prec])))})") and disk_size(str(made[prec])) > 100_000, line
    return made


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_bundle_contents_and_manifest(bundles):
    from deploy_kit.bundle import open_bundle

    b = open_bundle(str(bundles["int8"]))
    m = b.manifest
    assert m["schema"] == "deploy-kit/manifest" and m["precision"] == "int8" and m["tlc"]
    assert m["input"]["channels"] == 3 and m["input"]["range"] == [0.0, 1.0] and m["input"]["pad_multiple"] == 16
    assert m["tolerance"]["int8_min_psnr"] == 35.0 and m["degradation"] == "noise:10"
    assert set(m["files"]) >= {"nafnet-tiny-64x64-tlc.int8.onnx", "reference.npz", "build.sh", "README.md",
                               "int8/nafnet-tiny-64x64-tlc.fp32.onnx", "int8/nafnet-tiny-64x64-tlc.int8.calib"}
    inputs, refs = b.references()
    assert len(inputs) == 2 and inputs[0].shape == (1, 3, 64, 64) and refs[0][0].shape == (1, 3, 64, 64)
    script = (bundles["int8"] / "build.sh").read_text()
    assert "--stronglyTyped" in script and "--useDLACore=0" in script and "--calib=int8/" in script


@pytest.mark.parametrize("prec", ["fp16", "int8"])
def test_verify_bundle_on_onnxruntime_passes(cli, bundles, tmp_path, prec):
    b = _copy(bundles[prec], tmp_path / "b")
    r = cli("verify", b, "--backend", "onnxruntime")  # auto may pick OpenVINO (tests/integration/test_openvino.py)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "onnxruntime" in r.stdout and "parity: all gates passed" in r.stdout
    rep = json.loads((b / "verify-onnxruntime-cpu.parity.json").read_text())
    assert rep["passed"] and rep["checks"][0]["precision"] == prec


def test_verify_bundle_fails_with_exit_1_when_outputs_differ(cli, bundles, tmp_path):
    """The gate is real: a bundle whose stored reference is off must fail (re-signed so only parity can catch it)."""
    from deploy_kit.manifest import file_sha256, read_manifest, write_manifest

    b = _copy(bundles["fp16"], tmp_path / "b")
    data = dict(np.load(b / "reference.npz"))
    data["output_0_output"] = data["output_0_output"] + 0.05
    np.savez_compressed(b / "reference.npz", **data)
    m = read_manifest(str(b / "manifest.json"))
    m["files"]["reference.npz"] = file_sha256(str(b / "reference.npz"))
    write_manifest(str(b / "manifest.json"), m)
    r = cli("verify", b)
    assert r.returncode == 1 and "PARITY FAILED" in r.stderr


@pytest.mark.parametrize("damage, expect", [
    ("flip", "does not match its sha256"),
    ("missing", "is missing"),
    ("newer", "newer than this deploy-kit reads"),
    ("garbage", "not valid JSON"),
])
def test_tampered_bundle_is_one_line_exit_2(cli, bundles, tmp_path, damage, expect):
    b = _copy(bundles["fp16"], tmp_path / "b")
    onnx_file = b / "nafnet-tiny-64x64-tlc.fp16.onnx"
    if damage == "flip":
        raw = bytearray(onnx_file.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        onnx_file.write_bytes(bytes(raw))
    elif damage == "missing":
        (b / "reference.npz").unlink()
    elif damage == "newer":
        m = json.loads((b / "manifest.json").read_text())
        m["schema_version"] = 99
        (b / "manifest.json").write_text(json.dumps(m))
    else:
        (b / "manifest.json").write_text("{not json")
    for cmd in (("verify", b), ("build", b, "--backend", "tensorrt-rtx"), ("run", b, tmp_path, "--out", tmp_path / "o")):
        r = cli(*cmd)
        assert r.returncode == 2, (cmd, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and expect in r.stderr and "Traceback" not in r.stderr
    assert not list(b.glob("*.plan"))


def test_build_refuses_a_flag_its_backend_does_not_take_in_one_line(cli, bundles, tmp_path):
    """Each engine backend takes its own typed build options; a flag for another is exit 2, one line,
    before any work (no plan written). Needs no engine package: the options are checked first."""
    b = _copy(bundles["fp16"], tmp_path / "b")
    cases = [(("--backend", "tensorrt-rtx", "--timing-cache", tmp_path / "t.cache"),
              "--timing-cache does not apply to the tensorrt-rtx backend; drop it"),
             (("--backend", "tensorrt", "--compute-capability", "sm86"),
              "--compute-capability does not apply to the tensorrt backend; drop it"),
             (("--backend", "tensorrt-rtx", "--dla-core", "0"), "--dla-core needs --backend tensorrt"),
             (("--backend", "tensorrt", "--dla-core", "-1"), "--dla-core must be 0 or 1; got -1")]
    for flags, expect in cases:
        r = cli("build", b, *flags)
        assert r.returncode == 2, (flags, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and expect in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not list(b.glob("*.plan")) and not (tmp_path / "t.cache").exists()


@needs_rtx
def test_build_bundle_with_rtx_from_the_bundle_alone(cli, bundles, tmp_path):
    b = _copy(bundles["fp16"], tmp_path / "elsewhere" / "b")  # nothing of the export is beside it
    r = cli("build", b, "--backend", "tensorrt-rtx")
    assert r.returncode == 0, r.stdout + r.stderr
    plan = b / "nafnet-tiny-64x64-tlc.fp16.rtx1.plan"
    assert plan.stat().st_size > 100_000
    side = json.loads((b / "nafnet-tiny-64x64-tlc.fp16.rtx1.plan.json").read_text())
    assert side["backend"]["name"] == "tensorrt-rtx" and side["precision"] == "fp16" and "files" not in side
    # verify auto falls back to ONNX Runtime and says why; an explicit engine backend says why not
    r = cli("verify", b)
    assert r.returncode == 0 and ("no built engine can run here" in r.stderr or GPU_OK)
    if not GPU_OK:
        r = cli("verify", b, "--backend", "tensorrt-rtx")
        assert r.returncode == 2 and "cannot run a tensorrt-rtx engine here" in r.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not GPU_OK, reason=f"needs a GPU: {GPU_WHY}")
@needs_rtx
def test_verify_bundle_on_the_engine(cli, bundles, tmp_path):
    b = _copy(bundles["fp16"], tmp_path / "b")
    assert cli("build", b, "--backend", "tensorrt-rtx").returncode == 0
    r = cli("verify", b, "--backend", "tensorrt-rtx")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tensorrt-rtx" in r.stdout and "parity: all gates passed" in r.stdout


def test_bundle_command_from_an_existing_onnx(cli, bundles, tmp_path):
    onnx_path = bundles["fp16"].parent / "nafnet-tiny-64x64-tlc.fp16.onnx"
    r = cli("bundle", onnx_path, "--out", tmp_path / "again")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "bundle:" in r.stdout and "KB" in r.stdout
    a = np.load(bundles["fp16"] / "reference.npz")
    b = np.load(tmp_path / "again" / "reference.npz")
    assert np.array_equal(a["input_0"], b["input_0"])  # the same seeded inputs as the export
    assert np.abs(a["output_0_output"] - b["output_0_output"]).max() < 1e-5
    r = cli("bundle", tmp_path / "nothing.onnx")
    assert r.returncode == 2 and "artifact not found" in r.stderr


def test_run_keeps_format_depth_and_alpha(cli, bundles, tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray((rng.random((90, 130, 4)) * 255).astype(np.uint8), "RGBA").save(src / "rgba.png")
    Image.fromarray((rng.random((70, 50)) * 65535).astype(np.uint16)).save(src / "gray16.png")
    Image.fromarray((rng.random((40, 41, 3)) * 255).astype(np.uint8)).save(src / "small.jpg", quality=95)
    r = cli("run", bundles["fp16"], src, "--out", tmp_path / "out")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "restored 3 images" in r.stdout and "MP/s" in r.stdout
    rgba, g16, jpg = (Image.open(tmp_path / "out" / n) for n in ("rgba.png", "gray16.png", "small.jpg"))
    assert rgba.mode == "RGBA" and rgba.size == (130, 90)
    assert np.array_equal(np.asarray(rgba)[..., 3], np.asarray(Image.open(src / "rgba.png"))[..., 3])
    assert g16.mode in ("I;16", "I") and g16.size == (50, 70) and np.asarray(g16).max() > 255
    assert jpg.format == "JPEG" and jpg.size == (41, 40)


def test_run_bad_inputs_are_one_line(cli, bundles, tmp_path):
    (tmp_path / "not-an-image.png").write_bytes(b"nope")
    for args, expect in (((tmp_path / "missing.png",), "input not found"),
                         ((tmp_path / "not-an-image.png", "--overlap", "40"), "--overlap must be between")):
        r = cli("run", bundles["fp16"], *args, "--out", tmp_path / "o")
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and expect in r.stderr, r.stderr
    assert not (tmp_path / "o").exists()


def test_bundle_names_the_checkpoint_and_records_the_graph_io(bundles, tmp_path):
    """manifest.json names the checkpoint by file name and sha256 (no build-machine path), while the ONNX keeps
    the path bundle/verify re-load it from; the graph's I/O is recorded for the device."""
    from deploy_kit.bundle import open_bundle
    from deploy_kit.bundle_writer import write_bundle
    from deploy_kit.export import update_metadata
    from deploy_kit.onnxmeta import read_metadata
    from deploy_kit.manifest import file_sha256

    onnx_path = tmp_path / "nafnet-tiny-64x64-tlc.fp16.onnx"
    shutil.copyfile(bundles["fp16"].parent / onnx_path.name, onnx_path)
    weights = tmp_path / "secret-home" / "run7.pth"
    weights.parent.mkdir()
    weights.write_bytes(b"stand-in checkpoint")
    update_metadata(str(onnx_path), {"weights": str(weights), "weights_sha256": file_sha256(str(weights))})
    inputs, refs = open_bundle(str(bundles["fp16"])).references()
    write_bundle(str(onnx_path), inputs, refs, str(tmp_path / "b"))
    text = (tmp_path / "b" / "manifest.json").read_text()
    m = json.loads(text)
    assert m["weights"] == "run7.pth" and m["weights_sha256"] == file_sha256(str(weights))
    assert "secret-home" not in text and str(tmp_path) not in text
    assert read_metadata(str(onnx_path))["weights"] == str(weights)  # the build machine's record is kept
    assert m["graph_io"] == {"inputs": [{"name": "input", "dtype": "float32", "dims": [1, 3, 64, 64]}],
                             "outputs": [{"name": "output", "dtype": "float32", "dims": [1, 3, 64, 64]}]}


def test_typed_manifest_view(bundles):
    """One function reads what consumers use, typed; old manifests (no batch, no graph_io) still read."""
    from deploy_kit.manifest import Manifest, ManifestError, read_typed
    from deploy_kit.specs import Tolerance

    raw = json.loads((bundles["int8"] / "manifest.json").read_text())
    t = read_typed(str(bundles["int8"] / "manifest.json"))
    assert (t.model, t.variant, t.precision, t.output_kind) == ("nafnet", "tiny", "int8", "image")
    assert t.input_shape == (1, 3, 64, 64) and t.batch == 1 and (t.channels, t.pad_multiple) == (3, 16)
    assert t.output_names == ("output",) and t.input_dtype == "float32" and t.global_context is False
    assert t.tolerance == Tolerance(**raw["tolerance"]) and t.backend is None and t.tlc["train_size"]
    with pytest.raises(AttributeError):
        t.batch = 2  # read-only
    old = {k: v for k, v in raw.items() if k not in ("batch", "graph_io", "tolerance")}
    o = Manifest.from_dict(old)
    assert o.batch == 1 and o.graph_inputs is None and o.tolerance == Tolerance()
    for change, match in (({"input": {**raw["input"], "pad_multiple": "16"}}, "input pad_multiple '16' is invalid"),
                          ({"tolerance": {"bogus": 1}}, "tolerance 'bogus' is unknown"),
                          ({"graph_io": {"inputs": [{"name": 1}]}}, "bad graph_io inputs entry"),
                          ({"batch": 2}, "batch 2 differs from input_shape")):
        with pytest.raises(ManifestError, match=match):
            Manifest.from_dict({**raw, **change}, "m.json")
