"""EngineSession: run a deploy-kit plan with numpy in, numpy out (tensorrt or tensorrt_rtx).

Runs only where a CUDA GPU and a TensorRT runtime exist; on the machine that built an RTX plan
ahead of time it cannot run (tests mark this ``gpu`` and skip with the reason).
"""

from __future__ import annotations

import importlib
import os

import numpy as np

from . import cuda
from .runners import Runner

_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8, "BOOL": np.bool_}


class EngineSession:
    """A deserialized engine with device buffers for its fixed-shape I/O.

    Args:
        plan_path: path of a ``.plan`` built by deploy-kit (its sidecar says which runtime).
        backend: ``"tensorrt"`` or ``"tensorrt-rtx"``; read from the sidecar when omitted.
    """

    def __init__(self, plan_path: str, backend: str | None = None):
        ok, why = cuda.gpu_available()
        if not ok:
            raise RuntimeError(why)
        if backend is None:
            from ..manifest import read_manifest

            backend = read_manifest(plan_path + ".json")["backend"]["name"] if os.path.exists(plan_path + ".json") else "tensorrt"
        self.trt = importlib.import_module("tensorrt_rtx" if backend == "tensorrt-rtx" else "tensorrt")
        logger = self.trt.Logger(self.trt.Logger.WARNING)
        self.runtime = self.trt.Runtime(logger)
        with open(plan_path, "rb") as fh:
            self.engine = self.runtime.deserialize_cuda_engine(fh.read())
        if self.engine is None:
            raise RuntimeError(f"{plan_path} could not be deserialized by {backend} {self.trt.__version__}")
        self.context = self.engine.create_execution_context()
        self.stream = cuda.Stream()
        self.inputs, self.outputs, self.buffers = [], [], {}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = _DTYPES[self.engine.get_tensor_dtype(name).name]
            buf = cuda.DeviceBuffer(int(np.prod(shape)) * np.dtype(dtype).itemsize)
            self.buffers[name] = (buf, shape, dtype)
            self.context.set_tensor_address(name, buf.ptr.value)
            is_input = self.engine.get_tensor_mode(name) == self.trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs in, execute, copy outputs out (synchronous)."""
        for name in self.inputs:
            buf, shape, dtype = self.buffers[name]
            arr = np.ascontiguousarray(feeds[name], dtype=dtype)
            if arr.shape != shape:
                raise ValueError(f"input {name} must have shape {shape}, got {arr.shape}")
            buf.upload(arr, self.stream)
        if not self.context.execute_async_v3(self.stream.handle.value or 0):
            raise RuntimeError("engine execution failed")
        results = {}
        for name in self.outputs:
            buf, shape, dtype = self.buffers[name]
            results[name] = np.empty(shape, dtype=dtype)
            buf.download(results[name], self.stream)
        self.stream.synchronize()
        return results

    def close(self) -> None:
        for buf, _, _ in self.buffers.values():
            buf.close()
        self.stream.close()


class EngineRunner(Runner):
    """A TensorRT / TensorRT-RTX plan through :class:`deploy_kit.runtime.session.EngineSession`.

    Args:
        plan: the ``.plan`` file.
        backend: ``tensorrt`` or ``tensorrt-rtx`` (the runtime that deserializes it).
    """

    def __init__(self, plan: str, backend: str):
        self.name = backend
        self.session = EngineSession(plan, backend)
        self.input_name = self.session.inputs[0]
        self.input_shape = self.session.buffers[self.input_name][1]
        self.output_names = list(self.session.outputs)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        out = self.session.run({self.input_name: x})
        return [np.asarray(out[n], dtype=np.float32) for n in self.output_names]

    def close(self) -> None:
        self.session.close()
