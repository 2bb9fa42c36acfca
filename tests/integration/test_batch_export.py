"""``export --batch N``: a static batch dimension through the ONNX graphs, the engine, the manifest,
parity (every batch element against its own PyTorch FP32 reference) and the device bundle.

The real CLI in subprocesses on tiny variants at 64x64 with TLC engaged (``--train-size 32``: the
TLC kernel, 48 px at full resolution, is smaller than the map, so NAFNet pools locally and
Restormer attends in 2 x 2 windows per level).
"""

import json
import os

import numpy as np
import onnx
import pytest

from deploy_kit._deps import available

RTX = available("tensorrt_rtx")
needs_rtx = pytest.mark.skipif(not RTX, reason="tensorrt-rtx not installed")
TINY = ["--variant", "tiny", "--height", 64, "--width", 64, "--train-size", 32]
# the samples are clean photos; noise keeps a random tiny model away from exactly flat regions,
# where FP32 rounding is amplified (docs/correctness.md)
NOISE = ["--degradation", "noise:10"]


def _export(run_cli, out, *args):
    r = run_cli("export", *args, "--out", out)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The exports the tests read: NAFNet FP32 at batch 1 and 2, NAFNet FP16 batch 2 with a bundle,
    Restormer FP32 at batch 1 and 2 with three samples (the second batch is filled up by cycling)."""
    from tests.conftest import run_cli

    root = tmp_path_factory.mktemp("batch")
    runs = {
        "nafnet-b1": _export(run_cli, root / "nafnet-b1", "nafnet", *TINY, *NOISE, "--backend", "none"),
        "nafnet-b2": _export(run_cli, root / "nafnet-b2", "nafnet", *TINY, *NOISE, "--batch", 2,
                             "--backend", "tensorrt-rtx" if RTX else "none"),
        "fp16-b2": _export(run_cli, root / "fp16-b2", "nafnet", *TINY, *NOISE, "--fp16", "--batch", 2, "--bundle",
                           "--backend", "none"),
        "restormer-b1": _export(run_cli, root / "restormer-b1", "restormer", *TINY, "--samples", 3, "--backend", "none"),
        "restormer-b2": _export(run_cli, root / "restormer-b2", "restormer", *TINY, "--samples", 3, "--batch", 2,
                                "--backend", "none"),
    }
    return root, runs


def _report(path):
    return json.loads(path.read_text())


def _input_dims(path):
    graph = onnx.load(str(path)).graph
    return [[d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input]


def _check(report, backend, precision):
    return next(c for c in report["checks"] if c["backend"] == backend and c["precision"] == precision)


def _assert_same_per_element(report_b1, report_b2, backend, precision):
    """Every element of the batch-2 report has the numbers of its sample in the batch-1 report."""
    by_sample = {e["sample"]: e for e in _check(report_b1, backend, precision)["elements"]}
    elements = _check(report_b2, backend, precision)["elements"]
    assert len(by_sample) == len(report_b1["samples"]) and {e["sample"] for e in elements} == set(by_sample)
    for e in elements:
        one = by_sample[e["sample"]]
        for m2, m1 in zip(e["outputs"], one["outputs"], strict=True):
            # the same reference (each element keeps its own sample's PyTorch output) ...
            assert m2["ref_max_abs"] == m1["ref_max_abs"], (e, one)
            # ... and the same error against it, up to FP32 rounding of a different kernel schedule
            assert abs(m2["max_abs"] - m1["max_abs"]) <= 1e-6 and abs(m2["mean_abs"] - m1["mean_abs"]) <= 1e-7, (m2, m1)
            assert m2["max_abs"] <= 1e-5


def test_fp32_batch2_graph_manifest_and_per_element_parity(made):
    root, _ = made
    b1, b2 = root / "nafnet-b1", root / "nafnet-b2"
    assert (b1 / "nafnet-tiny-64x64-tlc.fp32.onnx").is_file()  # batch 1 keeps today's names
    onnx_b2 = b2 / "nafnet-tiny-64x64-tlc-b2.fp32.onnx"
    assert _input_dims(onnx_b2) == [[2, 3, 64, 64]]
    assert _input_dims(b1 / "nafnet-tiny-64x64-tlc.fp32.onnx") == [[1, 3, 64, 64]]
    ops = {n.op_type for n in onnx.load(str(onnx_b2)).graph.node}
    assert "AveragePool" in ops and not ops & {"CumSum", "Loop", "If", "ScatterND"}  # TLC pooling, static

    from deploy_kit.onnxmeta import read_metadata

    meta = read_metadata(str(onnx_b2))
    assert meta["batch"] == 2 and meta["input_shape"] == [2, 3, 64, 64]

    r1 = _report(b1 / "nafnet-tiny-64x64-tlc.fp32.parity.json")
    r2 = _report(b2 / "nafnet-tiny-64x64-tlc-b2.fp32.parity.json")
    assert r1["passed"] is True and r2["passed"] is True
    assert r2["input_shape"] == [2, 3, 64, 64] and len(r2["inputs"]) == 1 and r2["inputs"][0].startswith("batch 0: ")
    assert [(e["input"], e["element"], e["sample"]) for e in _check(r2, "onnxruntime", "fp32")["elements"]] == [(0, 0, 0), (0, 1, 1)]
    _assert_same_per_element(r1, r2, "onnxruntime", "fp32")


def test_batched_graph_computes_each_element_as_batch_1_does(made):
    """Independent of the report: the batch-2 graph on two samples equals the batch-1 graph on each."""
    import onnxruntime as ort

    from deploy_kit.data.samples import sample_images

    root, _ = made
    x = sample_images(2, 3, 64, 64, "noise:10", 0)
    one = ort.InferenceSession(str(root / "nafnet-b1" / "nafnet-tiny-64x64-tlc.fp32.onnx"))
    two = ort.InferenceSession(str(root / "nafnet-b2" / "nafnet-tiny-64x64-tlc-b2.fp32.onnx"))
    batched = two.run(None, {"input": np.concatenate(x)})[0]
    for b in range(2):
        assert np.abs(batched[b : b + 1] - one.run(None, {"input": x[b]})[0]).max() < 1e-5
    assert np.abs(batched[0] - batched[1]).max() > 1e-2  # two different images, not one twice


@needs_rtx
def test_rtx_engine_is_built_at_batch_2_and_the_hint_does_not_offer_trtexec(made):
    root, runs = made
    plan = root / "nafnet-b2" / "nafnet-tiny-64x64-tlc-b2.fp32.rtx1.plan"
    assert plan.is_file() and plan.stat().st_size > 100_000
    manifest = json.loads((root / "nafnet-b2" / (plan.name + ".json")).read_text())
    assert manifest["backend"]["name"] == "tensorrt-rtx"
    assert manifest["batch"] == 2 and manifest["input_shape"] == [2, 3, 64, 64]
    report = _report(root / "nafnet-b2" / "nafnet-tiny-64x64-tlc-b2.fp32.parity.json")
    assert _check(report, "tensorrt-rtx", "fp32")["status"] in ("skipped", "pass")  # runs only on a GPU
    stdout = runs["nafnet-b2"].stdout
    assert "batch 2" in stdout
    nxt = stdout[stdout.index("\nNext:"):]
    assert "trtexec --loadEngine" not in nxt  # trtexec (TensorRT) cannot load a TensorRT-RTX plan
    assert f"deploy-kit verify {plan}" in nxt and f"deploy-kit run {plan}" in nxt


def test_restormer_tlc_windows_at_batch_2_with_cycled_samples(made):
    """Restormer-Local cuts each map into windows on the batch axis: at batch 2 every window of
    every element goes back to its own element. Three samples fill two batches: (0, 1), (2, 0)."""
    root, _ = made
    onnx_b2 = root / "restormer-b2" / "restormer-tiny-64x64-tlc-b2.fp32.onnx"
    assert _input_dims(onnx_b2) == [[2, 3, 64, 64]]
    r1 = _report(root / "restormer-b1" / "restormer-tiny-64x64-tlc.fp32.parity.json")
    r2 = _report(root / "restormer-b2" / "restormer-tiny-64x64-tlc-b2.fp32.parity.json")
    assert r1["passed"] is True and r2["passed"] is True
    assert [(e["input"], e["element"], e["sample"]) for e in _check(r2, "onnxruntime", "fp32")["elements"]] == [
        (0, 0, 0), (0, 1, 1), (1, 0, 2), (1, 1, 0)]
    _assert_same_per_element(r1, r2, "onnxruntime", "fp32")


def test_fp16_batch2_bundle_holds_batches_and_verifies(made, cli, tmp_path):
    root, _ = made
    out = root / "fp16-b2"
    report = _report(out / "nafnet-tiny-64x64-tlc-b2.fp16.parity.json")
    assert report["passed"] is True
    assert {c["backend"] for c in report["checks"] if c["status"] == "pass"} >= {"onnxruntime", "true-fp16 (onnxruntime, no fusion)"}
    for c in report["checks"]:
        if c["status"] == "pass":
            assert len(c["elements"]) == 2
    assert _input_dims(out / "nafnet-tiny-64x64-tlc-b2.fp16.onnx") == [[2, 3, 64, 64]]

    bundle = out / "nafnet-tiny-64x64-tlc-b2.fp16.bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["batch"] == 2 and manifest["input_shape"] == [2, 3, 64, 64] and manifest["references"]["count"] == 1
    ref = np.load(bundle / "reference.npz")
    assert ref["input_0"].shape == (2, 3, 64, 64) and ref["output_0_output"].shape == (2, 3, 64, 64)
    v = cli("verify", bundle, "--backend", "onnxruntime")
    assert v.returncode == 0, v.stdout + v.stderr
    assert "parity: all gates passed" in v.stdout

    # 'bundle ARTIFACT' stacks the rebuilt references the same way: three samples, two batches
    again = tmp_path / "again.bundle"
    r = cli("bundle", out / "nafnet-tiny-64x64-tlc-b2.fp16.onnx", "--samples", 3, "--out", again)
    assert r.returncode == 0, r.stdout + r.stderr
    ref2 = np.load(again / "reference.npz")
    assert sorted(ref2.files) == ["input_0", "input_1", "output_0_output", "output_1_output"]
    assert ref2["input_1"].shape == (2, 3, 64, 64)
    assert np.array_equal(ref2["input_0"], ref["input_0"])  # the same seeded samples as the export
    assert np.array_equal(ref2["input_1"][1], ref2["input_0"][0])  # sample 0 fills the last batch
    v = cli("verify", again, "--backend", "onnxruntime")
    assert v.returncode == 0, v.stdout + v.stderr


def test_verify_of_a_batched_onnx_passes(made, cli):
    """The first 'Next:' step: verify rebuilds single sample images; they go through the graph two at a time."""
    root, _ = made
    v = cli("verify", root / "nafnet-b2" / "nafnet-tiny-64x64-tlc-b2.fp32.onnx")
    assert v.returncode == 0, v.stdout + v.stderr
    assert "parity: all gates passed" in v.stdout


@pytest.mark.parametrize("value", ["0", "-3"])
def test_batch_below_1_is_one_line_exit_2_nothing_written(cli, tmp_path, value):
    out = tmp_path / "o"
    r = cli("export", "nafnet", *TINY, "--batch", value, "--backend", "none", "--out", out)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--batch" in lines[0] and f"got {value}" in lines[0], r.stderr
    assert not os.path.exists(out)


def test_manifest_batch_field_old_manifests_read_as_1(made):
    """'batch' is optional in the one manifest schema: older manifests (no field) read as batch 1;
    a batch that disagrees with input_shape is refused."""
    from deploy_kit.manifest import ManifestError, input_batch, validate

    root, _ = made
    manifest = json.loads((root / "fp16-b2" / "nafnet-tiny-64x64-tlc-b2.fp16.bundle" / "manifest.json").read_text())
    assert input_batch(validate(dict(manifest), "m")) == 2
    old = {k: v for k, v in manifest.items() if k != "batch"}
    old["input_shape"] = [1, 3, 64, 64]
    assert input_batch(validate(old, "old")) == 1
    with pytest.raises(ManifestError, match="batch 3 differs from input_shape"):
        validate({**manifest, "batch": 3}, "bad")
    with pytest.raises(ManifestError, match="'batch' has the wrong type"):
        validate({**manifest, "batch": True}, "bad")


def test_batch_members_cycle_to_fill_the_last_batch():
    from deploy_kit.compare import batch_members

    assert batch_members(2, 1) == [[0], [1]]
    assert batch_members(2, 2) == [[0, 1]]
    assert batch_members(3, 2) == [[0, 1], [2, 0]]
    assert batch_members(2, 4) == [[0, 1, 0, 1]]
