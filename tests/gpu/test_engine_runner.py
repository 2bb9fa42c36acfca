"""EngineSession / EngineRunner on a real engine: needs a CUDA GPU and a TensorRT runtime (skipped otherwise).

Each test runs per installed runtime (TensorRT-RTX, TensorRT). Engines are built here, for this
GPU, from tiny ONNX graphs (onnx helper API) or NAFNet-tiny exported by deploy-kit; ONNX Runtime
on CPU is the reference. TensorRT-RTX targets only some compute capabilities (no Hopper in 1.x:
https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/getting-started/support-matrix.html), so
its cases skip, saying so, on a GPU it cannot build for.
"""

import importlib

import numpy as np
import pytest

from deploy_kit._deps import available
from deploy_kit.runners import cuda
from deploy_kit.runners.session import EngineRunner, EngineSession

GPU_OK, WHY = cuda.gpu_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not GPU_OK, reason=f"needs a GPU: {WHY}")]
BACKENDS = [
    pytest.param("tensorrt-rtx", marks=pytest.mark.skipif(not available("tensorrt_rtx"), reason="tensorrt-rtx not installed")),
    pytest.param("tensorrt", marks=pytest.mark.skipif(not available("tensorrt"), reason="tensorrt not installed")),
]
H = W = 16


@pytest.fixture(params=BACKENDS)
def backend(request):
    """(backend name, imported runtime module)."""
    return request.param, importlib.import_module(request.param.replace("-", "_"))


def tiny_onnx(path, *, batch=1, half=False):
    """input (batch, 3, H, W) -> output = Relu(Conv3x3(input)) (4 channels), aux = Sigmoid(input)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dt, npdt = (TensorProto.FLOAT16, np.float16) if half else (TensorProto.FLOAT, np.float32)
    weight = (rng.standard_normal((4, 3, 3, 3)) * 0.2).astype(npdt)
    bias = (rng.standard_normal(4) * 0.1).astype(npdt)
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["conv"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["conv"], ["output"]),
             helper.make_node("Sigmoid", ["input"], ["aux"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", dt, [batch, 3, H, W])],
        [helper.make_tensor_value_info("output", dt, [batch, 4, H, W]),
         helper.make_tensor_value_info("aux", dt, [batch, 3, H, W])],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # read by every ONNX Runtime and TensorRT parser in use
    onnx.save(model, str(path))
    return str(path)


def build_plan(trt, onnx_path, plan_path):
    """A strongly typed engine for this GPU (as deploy-kit builds them); skips where RTX cannot target it."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(onnx_path)), [str(parser.get_error(i)) for i in range(parser.num_errors)]
    config = builder.create_builder_config()
    if hasattr(trt, "ComputeCapability"):  # TensorRT-RTX: build for this GPU only
        cc = cuda.device_info()["compute_capability"]
        key = "SM" + cc.replace(".", "")
        if key not in trt.ComputeCapability.__members__:
            pytest.skip(f"{trt.__name__} {trt.__version__} does not target this GPU (compute capability {cc})")
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, key), 0)
    data = builder.build_serialized_network(network, config)
    assert data is not None, f"{trt.__name__} could not build {onnx_path}"
    with open(plan_path, "wb") as fh:
        fh.write(memoryview(data))
    return str(plan_path)


def ort_outputs(onnx_path, x):
    from deploy_kit.runners.ort import OrtRunner

    runner = OrtRunner(onnx_path)
    return dict(zip(runner.output_names, runner.run(x)))


def engine(backend, tmp_path, **kw):
    name, trt = backend
    onnx_path = tiny_onnx(tmp_path / "tiny.onnx", **kw)
    return onnx_path, build_plan(trt, onnx_path, tmp_path / "tiny.plan")


def inputs(n, batch=1, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((batch, 3, H, W)).astype(np.float32) for _ in range(n)]


def test_submit_wait_equals_run_and_onnxruntime(backend, tmp_path):
    onnx_path, plan = engine(backend, tmp_path)
    (x,) = inputs(1)
    ref = ort_outputs(onnx_path, x)
    with EngineRunner(plan, backend[1], name=backend[0], slots=2) as r:
        assert (r.name, r.slots, r.input_name, r.input_shape) == (backend[0], 2, "input", (1, 3, H, W))
        assert sorted(r.output_names) == ["aux", "output"]
        ran = r.run(x)
        waited = [a.copy() for a in r.submit(x).wait()]
        for name, a, b in zip(r.output_names, ran, waited):
            assert a.dtype == b.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
            # TensorRT may run FP32 convolutions as TF32
            np.testing.assert_allclose(a, ref[name], rtol=5e-3, atol=5e-3)


def test_two_slots_in_flight_equal_sequential_runs(backend, tmp_path):
    _, plan = engine(backend, tmp_path)
    xs = inputs(6, seed=1)
    with EngineRunner(plan, backend[1], name=backend[0], slots=2) as r:
        expected = [r.run(x) for x in xs]
        got, pending = [], [r.submit(xs[0])]
        for x in xs[1:]:  # keep two passes in flight: submit the next, then wait for the older
            pending.append(r.submit(x))
            got.append([a.copy() for a in pending.pop(0).wait()])
        got.append([a.copy() for a in pending.pop(0).wait()])
        for exp, out in zip(expected, got):
            for a, b in zip(exp, out):
                np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


def test_batched_engine(backend, tmp_path):
    onnx_path, plan = engine(backend, tmp_path, batch=2)
    (x,) = inputs(1, batch=2, seed=2)
    ref = ort_outputs(onnx_path, x)
    with EngineRunner(plan, backend[1], name=backend[0]) as r:
        assert r.input_shape == (2, 3, H, W)
        for name, out in zip(r.output_names, r.submit(x).wait()):
            assert out.shape[0] == 2
            np.testing.assert_allclose(out, ref[name], rtol=5e-3, atol=5e-3)
        with pytest.raises(ValueError, match="input 'input' must have shape"):
            r.submit(x[:1])


def test_fp16_engine_gives_float32(backend, tmp_path):
    _, plan = engine(backend, tmp_path, half=True)
    ref_onnx = tiny_onnx(tmp_path / "ref.onnx")
    (x,) = inputs(1, seed=3)
    ref = ort_outputs(ref_onnx, x)
    with EngineRunner(plan, backend[1], name=backend[0]) as r:
        assert r.session.dtypes["input"] == np.float16
        for name, out in zip(r.output_names, r.submit(x).wait()):
            assert out.dtype == np.float32
            np.testing.assert_allclose(out, ref[name], rtol=2e-2, atol=2e-2)
        assert all(o.dtype == np.float32 for o in r.run(x))


def test_steady_state_allocates_nothing(backend, tmp_path, monkeypatch):
    _, plan = engine(backend, tmp_path)
    xs = inputs(2, seed=4)
    with EngineSession(plan, backend[1], slots=2) as s:
        calls, call = [], cuda._call
        monkeypatch.setattr(cuda, "_call", lambda fn, *args: (calls.append(fn), call(fn, *args))[1])
        addresses = []
        for i in range(8):
            out = s.wait(s.submit({"input": xs[i % 2]}))
            addresses.append(out["output"].ctypes.data)
        # per pass: copies, an event record and syncs only; nothing created or allocated
        assert set(calls) == {"cudaMemcpyAsync", "cudaEventRecord", "cudaEventSynchronize"}, set(calls)
        assert addresses[0::2] == [addresses[0]] * 4 and addresses[1::2] == [addresses[1]] * 4
        assert addresses[0] != addresses[1]


def test_close_twice_and_use_after_close(backend, tmp_path):
    _, plan = engine(backend, tmp_path)
    r = EngineRunner(plan, backend[1], name=backend[0])
    (x,) = inputs(1)
    pending = r.submit(x)  # close waits for a pass still in flight
    r.close()
    r.close()
    with pytest.raises(RuntimeError, match="closed"):
        r.submit(x)
    with pytest.raises(RuntimeError, match="closed"):
        pending.wait()


def test_nafnet_tiny_engine_matches_onnxruntime(backend, tmp_path, cli):
    out = tmp_path / "o"
    res = cli("export", "nafnet", "--variant", "tiny", "--height", "64", "--width", "64", "--stop-after", "simplified",
              "--backend", "none", "--out", out)
    assert res.returncode == 0, res.stdout + res.stderr
    (onnx_path,) = [str(p) for p in out.glob("*.onnx")]
    plan = build_plan(backend[1], onnx_path, tmp_path / "nafnet.plan")
    x = np.random.default_rng(5).random((1, 3, 64, 64), dtype=np.float32)
    ref = ort_outputs(onnx_path, x)
    with EngineRunner(plan, backend[1], name=backend[0], slots=2) as r:
        first, second = r.submit(x), r.submit(x[:, :, ::-1].copy())
        for name, got in zip(r.output_names, first.wait()):
            np.testing.assert_allclose(got, ref[name], rtol=1e-2, atol=1e-2)
        assert second.wait()[0].shape == ref[r.output_names[0]].shape
