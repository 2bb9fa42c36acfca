"""The real CLI, end to end on a tiny NAFNet: artifacts, parity gates, engine, bad inputs."""

import json
import os

import onnx
import pytest
import torch

from deploy_kit._deps import available
from deploy_kit.onnxmeta import read_metadata

needs_rtx = pytest.mark.skipif(not available("tensorrt_rtx"), reason="tensorrt-rtx not installed")
TINY = ["--variant", "tiny", "--height", "72", "--width", "100", "--train-size", "32"]


@needs_rtx
def test_export_fp16_end_to_end(cli, tmp_path):
    out = tmp_path / "out"
    r = cli("export", "nafnet", *TINY, "--fp16", "--backend", "tensorrt-rtx", "--out", out)
    assert r.returncode == 0, r.stderr
    stem = out / "nafnet-tiny-72x100-tlc"
    for suffix in (".fp32.onnx", ".fp16.onnx", ".fp16.rtx1.plan", ".fp16.rtx1.plan.json", ".fp16.parity.json", ".fp16.parity.md", ".fp16.heatmap.png"):
        assert (out / (stem.name + suffix)).is_file(), suffix
    report = json.loads((out / (stem.name + ".fp16.parity.json")).read_text())
    assert report["passed"] is True
    by = {(c["backend"], c["precision"]): c for c in report["checks"]}
    assert by[("onnxruntime", "fp32")]["outputs"][0]["max_abs"] <= 1e-4
    assert by[("onnxruntime", "fp16")]["outputs"][0]["psnr"] >= 50
    assert by[("tensorrt-rtx", "fp16")]["status"] in ("skipped", "pass")
    for p in ("fp32", "fp16"):
        ops = {n.op_type for n in onnx.load(str(out / f"{stem.name}.{p}.onnx")).graph.node}
        assert not ops & {"CumSum", "Loop", "If", "ScatterND"}
        assert "AveragePool" in ops  # TLC local pooling really engaged at this size
    manifest = json.loads((out / (stem.name + ".fp16.rtx1.plan.json")).read_text())
    assert manifest["tlc"] == {"train_size": [32, 32], "base_size": [48, 48]}
    assert manifest["backend"]["name"] == "tensorrt-rtx" and manifest["input_shape"] == [1, 3, 72, 100]
    assert "parity: all gates passed" in r.stdout and "random weights" in r.stdout
    # every stage reports the peak memory of the process tree, the summary the whole run's
    assert r.stderr.count("[peak RSS ") >= 6 and "peak RSS" in r.stdout and "(with child processes)" in r.stdout
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temp/work files left
    v = cli("verify", out / (stem.name + ".fp16.onnx"))  # gated as FP16, from its own metadata
    assert v.returncode == 0, v.stdout + v.stderr
    assert "fp16" in v.stdout and "PSNR dB" not in v.stderr
    v = cli("verify", out / (stem.name + ".fp16.rtx1.plan"))  # engines need a GPU: skipped, not passed
    assert v.returncode == 0 and ("skipped" in v.stdout or "pass" in v.stdout)


def test_export_no_tlc_and_verify(cli, tmp_path):
    out = tmp_path / "o"
    r = cli("export", "nafnet", *TINY[:-2], "--no-tlc", "--degradation", "noise:25", "--backend", "none", "--out", out)
    assert r.returncode == 0, r.stderr
    onnx_path = out / "nafnet-tiny-72x100.fp32.onnx"
    nodes = onnx.load(str(onnx_path)).graph.node
    ops = {n.op_type for n in nodes}
    assert "AveragePool" not in ops and "GlobalAveragePool" not in ops
    # the global SCA mean is exported as two MatMuls with ones (GEMM accumulation: ORT accuracy)
    assert sum(n.op_type == "MatMul" and "/sca.0/" in n.name for n in nodes) == 2 * 9  # 9 NAFBlocks in "tiny"
    report = json.loads((out / "nafnet-tiny-72x100.fp32.parity.json").read_text())
    assert report["inputs"][0] == "sample image 0 + noise:25 (seed 0)"
    assert read_metadata(str(onnx_path))["degradation"] == "noise:25"  # verify rebuilds the same inputs
    v = cli("verify", onnx_path)  # rebuilds the same degraded inputs from the metadata
    assert v.returncode == 0, v.stderr
    assert "onnxruntime" in v.stdout and "pass" in v.stdout


def test_official_params_checkpoint_gives_same_outputs_and_variant(cli, tmp_path):
    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_model
    from deploy_kit.parity import run_onnxruntime

    adapter = get_adapter("nafnet")
    model = load_model(adapter, "tiny-notlc", None, seed=7).model
    ck = tmp_path / "NAFNet-tiny.pth"
    torch.save({"params": model.state_dict()}, ck)
    out = tmp_path / "o"
    r = cli("export", "nafnet", "--weights", ck, "--height", "48", "--width", "64", "--backend", "none", "--out", out)
    assert r.returncode == 0, r.stderr
    onnx_path = out / "nafnet-tiny-notlc-48x64.fp32.onnx"  # variant inferred from the checkpoint
    x = torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        ref = model(x).numpy()
    got = run_onnxruntime(str(onnx_path), [x.numpy()])[0][0]
    assert abs(got - ref).max() < 1e-4


def _assert_one_line_error(r, needle, out):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = [l for l in r.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert not out.exists() or not any(out.rglob("*.onnx")) and not any(out.rglob("*.plan"))


def test_bad_inputs_one_line_exit_2_no_artifacts(cli, tmp_path):
    out = tmp_path / "o"
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(2048))
    protocol = tmp_path / "protocol.pth"  # read as pickle protocol 133: torch warns, then fails
    protocol.write_bytes(b"\x80\x85" + os.urandom(2046))
    other = tmp_path / "other.pth"
    torch.save({"params": {"patch_embed.proj.weight": torch.zeros(8, 3, 3, 3)}}, other)
    cases = [
        (["--weights", tmp_path / "missing.pth"], "weights file not found"),
        (["--weights", garbage], "cannot read"),
        (["--weights", protocol], "cannot read"),
        (["--weights", other], "not a NAFNet checkpoint"),
        (["--height", "0"], "must be positive"),
        (["--width", "-16"], "must be positive"),
        (["--variant", "gopro-w99"], "unknown nafnet variant 'gopro-w99'"),
        (["--fp16", "--int8"], "mutually exclusive"),
        (["--no-tlc", "--train-size", "128"], "--train-size only applies with TLC"),
        (["--height", "abc"], "is not a valid integer"),
        (["--degradation", "noise:x"], "bad degradation 'noise:x'"),
        (["--calib", "somewhere"], "--calib only applies with --int8"),
    ]
    for args, needle in cases:
        _assert_one_line_error(cli("export", "nafnet", *args, "--backend", "none", "--out", out), needle, out)
    _assert_one_line_error(cli("export", "resnet50", "--out", out), "unknown model 'resnet50'", out)
    # an engine flag the chosen backend does not take (its typed build options), before any work
    _assert_one_line_error(cli("export", "nafnet", "--variant", "tiny", "--backend", "tensorrt", "--compute-capability",
                               "sm86", "--out", out), "--compute-capability does not apply to the tensorrt backend", out)
    _assert_one_line_error(cli("verify", tmp_path / "nothing.onnx"), "artifact not found", out)
    _assert_one_line_error(cli("verify", garbage), "not a readable ONNX file", out)


def test_stop_after_simplified_ends_after_the_fp32_parity_and_the_model_is_freed_first(tmp_path):
    """One stop point per place the chain can end; the CLI offers exactly the pipeline's. The
    PyTorch model lives only in the first stages' frame: none is alive when ONNX Runtime runs."""
    import gc

    from deploy_kit.cli.build import export
    from deploy_kit.errors import UsageError
    from deploy_kit.pipeline import STOP_POINTS, run_export
    from deploy_kit.specs import ExportRequest

    live_modules = {}

    def progress(event, text):
        if event == "start":
            gc.collect()
            live_modules[text] = sum(issubclass(type(o), torch.nn.Module) for o in gc.get_objects())

    option = next(p for p in export.params if p.name == "stop_after")
    assert tuple(option.type.choices) == STOP_POINTS == ("simplified", "precision", "engine")
    req = ExportRequest("nafnet", "tiny-notlc", 32, 32, precision="fp16")
    with pytest.raises(UsageError, match="--stop-after must be one of simplified, precision, engine"):
        run_export(req, out_dir=str(tmp_path / "x"), backend=None, stop_after="onnx")
    assert not (tmp_path / "x").exists()
    res = run_export(req, out_dir=str(tmp_path / "o"), backend=None, stop_after="simplified", samples=1,
                     progress=progress)
    assert live_modules["export ONNX"] > 0 and live_modules["simplify"] == live_modules["parity fp32 (onnxruntime)"] == 0
    assert [label for label, _ in res.artifacts] == ["FP32 ONNX", "parity heatmap", "parity report"]
    assert [(c.backend, c.precision) for c in res.report.checks] == [("onnxruntime", "fp32")]
    assert "stopped after 'simplified' as asked" in res.notes and res.report.checks[0].heatmap


def test_fp32_gate_failure_is_diagnosed(tmp_path, monkeypatch):
    """A failed FP32 gate gets a float64 re-run that says whether the input or the export is to blame."""
    import dataclasses

    from deploy_kit.models import registry
    from deploy_kit.pipeline import run_export
    from deploy_kit.specs import ExportRequest

    strict = dataclasses.replace(registry.get_spec("nafnet"), tolerance=dataclasses.replace(registry.get_spec("nafnet").tolerance, fp32_max_abs=1e-12))
    monkeypatch.setitem(registry._MODELS, "nafnet", strict)
    res = run_export(ExportRequest("nafnet", "tiny", 40, 56), out_dir=str(tmp_path), backend=None, stop_after="simplified", samples=1)
    assert res.report.failures() and "onnxruntime fp32" in res.report.failures()[0]
    note = next(n for n in res.notes if n.startswith("fp32 diagnosis, sample 0:"))
    assert "from a float64 run of the same model" in note and "ONNX Runtime" in note


def test_engine_that_runs_here_gets_its_parity_row_and_manifest(tmp_path, monkeypatch):
    """The engine stage's GPU branch on any machine: a stand-in backend whose "plan" is the ONNX
    itself, run by ONNX Runtime. Its row follows the graph's rows, and the manifest records all."""
    import shutil
    import types

    from deploy_kit import backends
    from deploy_kit.backends._trt import BuildResult, EngineBackend
    from deploy_kit.pipeline import run_export
    from deploy_kit.precision.truefp16 import BACKEND as TRUE_FP16
    from deploy_kit.runners.ort import OrtRunner
    from deploy_kit.specs import ExportRequest

    class StandIn(EngineBackend):
        name = "stand-in"

        def trt(self):
            return types.SimpleNamespace(__version__="0.0")

        def major(self):
            return "standin0"

        def can_run(self):
            return True, ""

        def build(self, onnx_path, plan_path, options=None):
            assert options == self.check_build_options(None)  # the pipeline hands its typed defaults
            shutil.copyfile(onnx_path, plan_path)
            return BuildResult(plan_path, 0.5, os.path.getsize(plan_path), self.name, "0.0", {})

        def open_runner(self, path, options=None, *, manifest=None):
            return OrtRunner(path, name=self.name, threads=1)

    monkeypatch.setitem(backends.REGISTRY, StandIn.name, StandIn())
    res = run_export(ExportRequest("nafnet", "tiny-notlc", 32, 32, precision="fp16"), out_dir=str(tmp_path),
                     backend=StandIn.name, stop_after="engine", samples=1)
    rows = [(c.backend, c.precision, c.status) for c in res.report.checks]
    assert rows == [("onnxruntime", "fp32", "pass"), ("onnxruntime", "fp16", "pass"),
                    (TRUE_FP16, "fp16", "pass"), ("stand-in", "fp16", "pass")]
    plan = str(tmp_path / "nafnet-tiny-notlc-32x32.fp16.standin0.plan")
    manifest = json.loads(open(plan + ".json").read())
    assert [c["backend"] for c in manifest["parity"]["checks"]] == [b for b, _, _ in rows]
    assert res.report.checks[1].heatmap and not res.report.checks[-1].heatmap  # the heatmap is ONNX Runtime's
    assert "stopped after 'engine' as asked" in res.notes
    assert any(s.startswith(f"on the target GPU: trtexec --loadEngine={plan}") for s in res.next_steps)
