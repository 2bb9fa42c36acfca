import os

import onnx
import pytest
import torch

from deploy_kit.errors import ExportError
from deploy_kit.export import export_onnx
from deploy_kit.onnxmeta import read_metadata
from deploy_kit.models import get_adapter
from deploy_kit.models.checkpoint import load_model
from deploy_kit.simplify import simplify
from deploy_kit.specs import ExportRequest, TLCConfig

ADAPTER = get_adapter("nafnet")


def _export(tmp_path, req):
    model = load_model(ADAPTER, req.variant, None).model
    path = str(tmp_path / "m.onnx")
    info = export_onnx(ADAPTER.wrap(model, req, static=True), torch.rand(1, 3, req.height, req.width), path,
                       input_names=["input"], output_names=["output"], metadata={"model": "nafnet", "tlc": {"a": 1}})
    return path, info


def test_tlc_export_is_static_separable_pooling(tmp_path):
    req = ExportRequest("nafnet", "tiny", 80, 112, tlc=TLCConfig.from_train_size(32))
    path, info = _export(tmp_path, req)
    ops = info.op_counts
    assert "CumSum" not in ops and "Loop" not in ops and "If" not in ops
    assert ops.get("AveragePool", 0) >= 1 and ops.get("MatMul", 0) >= 1  # banded MatMul down, 1 x k pool across
    pools = [n for n in onnx.load(path).graph.node if n.op_type == "AveragePool"]
    shapes = {tuple(a.ints) for n in pools for a in n.attribute if a.name == "kernel_shape"}
    assert shapes and all(s[0] == 1 for s in shapes)  # every pool runs along the rows (1 x k)
    assert any(n.op_type == "Pad" for n in onnx.load(path).graph.node)  # replicate edge pad
    assert read_metadata(path)["tlc"] == {"a": 1}


def test_forbidden_op_rejected_and_no_file_left(tmp_path):
    class Cum(torch.nn.Module):
        def forward(self, x):
            return x.cumsum(-1)

    path = str(tmp_path / "bad.onnx")
    with pytest.raises(ExportError, match="CumSum"):
        export_onnx(Cum(), torch.rand(1, 3, 8, 8), path, input_names=["input"], output_names=["output"], metadata={})
    assert os.listdir(tmp_path) == []


def test_huge_pool_window_rejected(tmp_path):
    class Pool(torch.nn.Module):
        def forward(self, x):
            return torch.nn.functional.avg_pool2d(x, (320, 320), stride=1)

    with pytest.raises(ExportError, match="exceeds TensorRT's limit"):
        export_onnx(Pool(), torch.rand(1, 1, 330, 330), str(tmp_path / "p.onnx"), input_names=["input"], output_names=["output"], metadata={})


def test_simplify_never_modifies_input_and_keeps_metadata(tmp_path):
    req = ExportRequest("nafnet", "tiny-notlc", 32, 32)
    path, _ = _export(tmp_path, req)
    before = open(path, "rb").read()
    rep = simplify(path, str(tmp_path / "s.onnx"))
    assert open(path, "rb").read() == before
    assert rep.nodes_after < rep.nodes_before
    assert read_metadata(str(tmp_path / "s.onnx"))["model"] == "nafnet"


def test_simplify_falls_back_when_onnxruntime_cannot_load_the_result(tmp_path, monkeypatch):
    """A simplifier result ORT rejects is never written (onnxsim 0.8.1 did this once on Restormer)."""
    import deploy_kit.simplify as simp
    from deploy_kit.parity import run_onnxruntime

    req = ExportRequest("nafnet", "tiny-notlc", 32, 32)
    path, _ = _export(tmp_path, req)

    def broken(src):
        m = onnx.load(src)
        div = next(n for n in m.graph.node if n.op_type in ("Div", "Mul", "Add"))
        div.input[1] = m.graph.input[0].name  # shape-incompatible operand: checker passes, ORT refuses
        return m, "test"

    monkeypatch.setattr(simp, "_onnxsim", broken)
    rep = simplify(path, str(tmp_path / "s.onnx"))
    assert rep.tool.startswith("onnxslim") and "onnxsim failed" in rep.note
    run_onnxruntime(str(tmp_path / "s.onnx"), [torch.rand(1, 3, 32, 32).numpy()])
