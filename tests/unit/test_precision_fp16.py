import numpy as np
import onnx.numpy_helper
import onnx
import torch

from deploy_kit.export import export_onnx
from deploy_kit.models import get_adapter
from deploy_kit.models.checkpoint import load_model
from deploy_kit.compare import metrics
from deploy_kit.parity import run_onnxruntime
from deploy_kit.precision.fp16 import convert_fp16
from deploy_kit.specs import ExportRequest, TLCConfig

ADAPTER = get_adapter("nafnet")


def test_fp16_graph_is_fp16_end_to_end_with_fp32_io(tmp_path):
    """NAFNet with TLC: the range-safe rewrites leave no FP32 island; Casts only at the graph I/O."""
    req = ExportRequest("nafnet", "tiny", 64, 80, precision="fp16", tlc=TLCConfig.from_train_size(32))
    model = load_model(ADAPTER, "tiny", None).model
    src = str(tmp_path / "m.onnx")
    x = torch.rand(1, 3, 64, 80)
    export_onnx(ADAPTER.wrap(model, req, static=True), x, src, input_names=["input"], output_names=["output"], metadata={})
    from deploy_kit.simplify import simplify

    simplify(src, str(tmp_path / "s.onnx"))  # as the pipeline does (folds the tracer's shape Casts)
    src, dst = str(tmp_path / "s.onnx"), str(tmp_path / "m16.onnx")
    rep = convert_fp16(src, dst, ADAPTER.fp32_islands(req))
    assert rep.kept_fp32 == []
    g = onnx.load(dst).graph
    casts = [n for n in g.node if n.op_type == "Cast"]
    assert all(n.input[0] == "input" or n.output[0] == "output" for n in casts), [n.name for n in casts]
    assert any(n.op_type == "AveragePool" for n in g.node)  # TLC's local mean, now in FP16
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert g.input[0].type.tensor_type.elem_type == f32 and g.output[0].type.tensor_type.elem_type == f32
    conv_weights = {n.input[1] for n in g.node if n.op_type == "Conv"}
    inits = {i.name: i.data_type for i in g.initializer}
    assert {inits[w] for w in conv_weights if w in inits} == {f16}
    ref = run_onnxruntime(src, [x.numpy()])[0][0]
    out = run_onnxruntime(dst, [x.numpy()])[0][0]
    m = metrics("output", ref, out, "image")
    assert m.nonfinite == 0 and m.psnr > 50


def test_graph_output_that_feeds_another_node_converts_to_valid_graph(tmp_path):
    class TwoOut(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Conv2d(3, 4, 3, padding=1)
            self.b = torch.nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            f1 = self.a(x)
            return f1, self.b(f1)  # f1 is a graph output *and* feeds conv b

    src, dst = str(tmp_path / "m.onnx"), str(tmp_path / "m16.onnx")
    x = torch.rand(1, 3, 16, 16)
    export_onnx(TwoOut(), x, src, input_names=["input"], output_names=["feat1", "feat2"], metadata={})
    convert_fp16(src, dst, [])
    ref = run_onnxruntime(src, [x.numpy()])[0]
    out = run_onnxruntime(dst, [x.numpy()])[0]  # raised "bound to different types" before the guard
    for r, o in zip(ref, out):
        assert o.dtype == np.float32 and metrics("f", r, o, "features").cosine > 0.9999


def test_sca_global_mean_is_range_safe_in_fp16(tmp_path):
    """NAFNet's global SCA mean over 128x128 once summed 16 384 values and divided by 16 384 (above
    the converter's 1e4 clamp: 12.6 dB, and a sum beyond FP16's range on real activations). As two
    MatMuls with 1/w and 1/h (tlc.spatial_mean) it needs no FP32 island and no large constant."""
    req = ExportRequest("nafnet", "tiny-notlc", 128, 128, precision="fp16")
    model = load_model(ADAPTER, "tiny-notlc", None).model
    src, dst = str(tmp_path / "m.onnx"), str(tmp_path / "m16.onnx")
    x = torch.rand(1, 3, 128, 128)
    export_onnx(ADAPTER.wrap(model, req, static=True), x, src, input_names=["input"], output_names=["output"], metadata={})
    from deploy_kit.simplify import simplify

    simplify(src, str(tmp_path / "s.onnx"))
    rep = convert_fp16(str(tmp_path / "s.onnx"), dst, [r"/norm[12]/"])  # the SCA runs in FP16
    assert not any("/sca.0/" in n for n in rep.kept_fp32)
    g = onnx.load(dst).graph
    assert not [n.name for n in g.node if n.op_type in ("Div", "ReduceSum", "ReduceMean") and "/sca.0/" in n.name]
    big = [n.output[0] for n in g.node if n.op_type == "Constant"
           and np.abs(onnx.numpy_helper.to_array(n.attribute[0].t).astype(np.float64)).max(initial=0) > 1e4]
    assert big == []
    ref = run_onnxruntime(src, [x.numpy()])[0][0]
    out = run_onnxruntime(dst, [x.numpy()])[0][0]
    assert metrics("output", ref, out, "image").psnr > 50


def _shared_bias_graph(path):
    """LayerNormalization (kept FP32) and Gemm (FP16) reading ONE zero-bias initializer, as onnxsim
    writes it when official init leaves equal tensors (PVT's 'Gemm bound to different types')."""
    from onnx import TensorProto, helper

    zeros = onnx.numpy_helper.from_array(np.zeros(8, np.float32), "shared_zero_bias")
    ones = onnx.numpy_helper.from_array(np.ones(8, np.float32), "ln_scale")
    w = onnx.numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32), "w")
    nodes = [
        helper.make_node("LayerNormalization", ["input", "ln_scale", "shared_zero_bias"], ["ln"], name="/norm/LayerNormalization", axis=-1),
        helper.make_node("Gemm", ["ln", "w", "shared_zero_bias"], ["output"], name="Gemm_1"),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [4, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [4, 8])], [zeros, ones, w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def test_fp16_constant_shared_with_an_fp32_island_gets_its_own_copy(tmp_path):
    src, dst = str(tmp_path / "s.onnx"), str(tmp_path / "s16.onnx")
    _shared_bias_graph(src)
    convert_fp16(src, dst, [r"/LayerNormalization$"])  # raised 'bound to different types' before the fix
    x = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    ref, out = run_onnxruntime(src, [x])[0][0], run_onnxruntime(dst, [x])[0][0]
    assert np.abs(ref - out).max() < 1e-2
    inits = {i.name: i.data_type for i in onnx.load(dst).graph.initializer}
    assert inits["shared_zero_bias__dk_fp32"] == onnx.TensorProto.FLOAT  # the island's own copy


def test_fp16_graph_that_does_not_load_is_the_tools_error_naming_stage_and_node(tmp_path, monkeypatch):
    import pytest

    from deploy_kit.errors import DeployKitError, InvalidGraphError
    from deploy_kit.precision import fp16

    src, dst = str(tmp_path / "s.onnx"), str(tmp_path / "s16.onnx")
    _shared_bias_graph(src)
    monkeypatch.setattr(fp16, "unshare_constants", lambda *a, **k: 0)  # the converter's own behaviour
    with pytest.raises(InvalidGraphError) as info:
        convert_fp16(src, dst, [r"/LayerNormalization$"])
    msg = str(info.value)
    assert isinstance(info.value, DeployKitError) and "\n" not in msg
    assert "fp16 stage" in msg and "Gemm_1 (Gemm)" in msg
    assert not (tmp_path / "s16.onnx").exists() and [p.name for p in tmp_path.iterdir()] == ["s.onnx"]
