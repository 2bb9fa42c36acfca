"""A stand-in engine — NOT TensorRT — for checking deploy-kit's engine runner on a GPU without TensorRT.

:func:`module` returns a small module object with the part of the ``tensorrt`` Python API that
deploy_kit/runners/session.py's EngineSession calls: ``ILogger`` with its ``Severity`` (deploy-kit
subclasses it), ``Logger``, ``Runtime(logger).deserialize_cuda_engine``, the engine's
``num_io_tensors`` / ``get_tensor_name`` / ``get_tensor_shape`` / ``get_tensor_dtype`` /
``get_tensor_mode`` / ``get_tensor_format`` and ``create_execution_context``, and the context's
``set_tensor_address`` and ``execute_async_v3``. Given to the REAL EngineSession / EngineRunner /
Restorer in place of ``tensorrt``, it lets their pinned buffers, streams, events and slots run on a
GPU that has no TensorRT. What it measures is deploy-kit's runtime around a kernel of known cost and
known output — never TensorRT: every name, version and row that shows it says "stand-in".

The logger it is given gets an ERROR, as from TensorRT, when a file is not a stand-in plan or a pass
cannot be enqueued. Its "plan" (:func:`write_plan`) is a small JSON file: one FLOAT input, one FLOAT
output of the same shape, the kernel's cost in milliseconds and its function
``output = input * scale + offset`` (the product and the sum each rounded once in float32, as numpy
does, so a CPU reference equals it bit for bit: :class:`ReferenceRunner`). Any other file
deserializes to None, as a foreign plan does in TensorRT.

``execute_async_v3(stream)`` hands the stream it is given and the device addresses set on the
context to a *kernel*:

* :class:`CupyKernel` — a CuPy RawKernel launched ON THAT STREAM (``cupy.cuda.ExternalStream``) on
  the device buffers deploy-kit allocated (wrapped, not copied, with ``cupy.cuda.UnownedMemory``).
  It first spins for the plan's cost on the GPU's nanosecond clock (``%globaltimer``,
  https://docs.nvidia.com/cuda/parallel-thread-execution/index.html#special-registers-globaltimer),
  then writes the output from the input. Its grid fills every SM's thread slots, so the kernels of
  two slots do not run side by side (an engine usually fills the GPU too). deploy-kit's ctypes
  libcudart and CuPy share the device's primary context, so the addresses and streams are valid.
* :class:`HostKernel` — the same function in numpy on host addresses, for the CPU tests whose
  libcudart is a host-memory fake: it checks deploy-kit's and the check script's logic, not a GPU.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types

import numpy as np

from deploy_kit.fsutil import write_text
from deploy_kit.runners.base import Runner

PLAN_FORMAT = "deploy-kit stand-in plan (not a TensorRT engine)"
MODULE_NAME = "deploy_kit_standin"  # what EngineSession reports as the runtime module's name
VERSION = "1 (stand-in, not TensorRT)"


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class TensorFormat(enum.Enum):
    LINEAR = 0


class DataType(enum.Enum):  # EngineSession reads ``.name`` ("FLOAT"), as of TensorRT's DataType
    FLOAT = 0


class ILogger:
    """TensorRT's logger interface: deploy-kit subclasses it and overrides :meth:`log`."""

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self):
        pass

    def log(self, severity, msg: str) -> None:
        pass


class Logger(ILogger):
    """TensorRT's ready-made logger (severity levels as class attributes); logs nothing here."""

    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = ILogger.Severity

    def __init__(self, min_severity=ILogger.Severity.WARNING):
        super().__init__()
        self.min_severity = min_severity


def write_plan(path: str, shape, *, kernel_ms: float, scale: float = 0.5, offset: float = 0.25) -> str:
    """Write a stand-in plan.

    Args:
        path: the file to write.
        shape: the input's (and output's) fixed shape, e.g. (4, 3, 256, 256).
        kernel_ms: what one execution costs on the GPU (the kernel spins that long first).
        scale, offset: the kernel's function, ``output = input * scale + offset``.

    Returns:
        ``path``.
    """
    shape = [int(d) for d in shape]
    data = {"format": PLAN_FORMAT,
            "tensors": [{"name": "input", "shape": shape, "dtype": "FLOAT", "mode": "INPUT"},
                        {"name": "output", "shape": shape, "dtype": "FLOAT", "mode": "OUTPUT"}],
            "kernel": {"ms": float(kernel_ms), "scale": float(scale), "offset": float(offset)}}
    write_text(path, json.dumps(data, indent=1))
    return path


def read_plan(data: bytes) -> dict | None:
    """The plan in ``data``, or None when it is not a valid stand-in plan (as TensorRT returns None)."""
    try:
        plan = json.loads(data.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
        return None
    tensors = plan.get("tensors")
    kernel = plan.get("kernel")
    if (not isinstance(tensors, list) or len(tensors) != 2 or not isinstance(kernel, dict)
            or [t.get("mode") for t in tensors] != ["INPUT", "OUTPUT"]
            or any(t.get("dtype") != "FLOAT" for t in tensors)
            or tensors[0].get("shape") != tensors[1].get("shape")
            or not all(isinstance(kernel.get(k), (int, float)) for k in ("ms", "scale", "offset"))):
        return None
    return plan


def load_plan(path: str) -> dict:
    """:func:`read_plan` of a file; ValueError when it is not a stand-in plan."""
    with open(path, "rb") as fh:
        plan = read_plan(fh.read())
    if plan is None:
        raise ValueError(f"{path} is not a {PLAN_FORMAT}")
    return plan


def reference(x: np.ndarray, plan: dict) -> np.ndarray:
    """The plan's function on the CPU: ``x * scale + offset`` in float32, each step rounded once."""
    k = plan["kernel"]
    return np.asarray(x, np.float32) * np.float32(k["scale"]) + np.float32(k["offset"])


class ReferenceRunner(Runner):
    """The stand-in's function as a CPU :class:`~deploy_kit.runners.base.Runner` (numpy): the
    reference the engine runner's outputs are compared with."""

    name = "stand-in CPU reference (numpy)"

    def __init__(self, plan: dict):
        self.plan = plan
        self.input_shape = tuple(plan["tensors"][0]["shape"])
        self.output_names = ["output"]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return [reference(x, self.plan)]


# ----------------------------------------------------------------------------- the module

class _Engine:
    def __init__(self, plan: dict, kernel, logger):
        self.plan, self._kernel, self._logger = plan, kernel, logger
        self._tensors = {t["name"]: t for t in plan["tensors"]}
        self._names = [t["name"] for t in plan["tensors"]]
        self.count = int(np.prod(plan["tensors"][0]["shape"]))

    @property
    def num_io_tensors(self) -> int:
        return len(self._names)

    def get_tensor_name(self, index: int) -> str:
        return self._names[index]

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._tensors[name]["shape"])

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType[self._tensors[name]["dtype"]]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode[self._tensors[name]["mode"]] if name in self._tensors else TensorIOMode.NONE

    def get_tensor_format(self, name: str) -> TensorFormat:
        return TensorFormat.LINEAR

    def create_execution_context(self) -> "_Context":
        return _Context(self)


class _Context:
    def __init__(self, engine: _Engine):
        self.engine = engine
        self._addresses: dict[str, int] = {}

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if name not in self.engine._tensors:
            return False
        self._addresses[name] = int(ptr)
        return True

    def get_tensor_address(self, name: str) -> int:
        return self._addresses.get(name, 0)

    def execute_async_v3(self, stream_handle: int) -> bool:
        """Enqueue the kernel on ``stream_handle``; False (as TensorRT) when an address is missing."""
        src, dst = (self._addresses.get(n) for n in self.engine._names)
        if not src or not dst:
            missing = [n for n in self.engine._names if not self._addresses.get(n)]
            self.engine._logger.log(ILogger.Severity.ERROR, f"stand-in: no address set for {missing}")
            return False
        self.engine._kernel.launch(int(stream_handle), src, dst, self.engine.count, self.engine.plan["kernel"])
        return True


def module(kernel) -> types.ModuleType:
    """The stand-in runtime module, whose engines run ``kernel`` (:class:`CupyKernel` or :class:`HostKernel`).

    Pass it where deploy-kit takes the imported ``tensorrt`` module:
    ``EngineRunner(plan, module(CupyKernel()), name="stand-in (not TensorRT)")``.
    """
    m = types.ModuleType(MODULE_NAME, "A stand-in for the tensorrt module (not TensorRT): see benchmarks/_standin.py")
    m.__version__ = f"{VERSION}, kernel: {kernel.label}"
    m.ILogger, m.Logger = ILogger, Logger
    m.TensorIOMode, m.TensorFormat, m.DataType = TensorIOMode, TensorFormat, DataType

    class Runtime:
        DLA_core = -1  # settable, as on TensorRT's Runtime; the stand-in has no DLA

        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data: bytes):
            plan = read_plan(bytes(data))
            if plan is None:
                self.logger.log(ILogger.Severity.ERROR, f"stand-in: not a {PLAN_FORMAT}")
                return None
            return _Engine(plan, kernel, self.logger)

    m.Runtime = Runtime
    m.kernel = kernel
    return m


# ----------------------------------------------------------------------------- kernels

class HostKernel:
    """The plan's function in numpy on HOST addresses — for tests with a host-memory fake libcudart.

    Not a GPU kernel: it runs at once, ignores the cost, and records each launch's (stream, src,
    dst) so a test can check that deploy-kit passed the slot's own stream and buffers.
    """

    label = "numpy on host memory (test fake, not a GPU)"
    asynchronous = False  # it computes during the launch

    def __init__(self, fn=None):
        self.launches: list[tuple[int, int, int]] = []
        self.fn = fn or (lambda x, k: reference(x, {"kernel": k}))

    def launch(self, stream: int, src: int, dst: int, count: int, spec: dict) -> None:
        self.launches.append((stream, src, dst))
        nbytes = count * 4
        x = np.frombuffer((ctypes.c_ubyte * nbytes).from_address(src), np.float32)
        y = np.frombuffer((ctypes.c_ubyte * nbytes).from_address(dst), np.float32)
        np.copyto(y, self.fn(x, spec))

    def measure_ms(self, plan: dict) -> dict | None:
        return None  # no GPU time to measure

    def pool_bytes(self) -> int | None:
        return None


_SOURCE = r"""
extern "C" __global__ void standin_affine(const float* __restrict__ src, float* __restrict__ dst,
                                          long long n, float scale, float offset,
                                          unsigned long long spin_ns) {
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    now = start;
    while (now - start < spin_ns) {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    }
    long long stride = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        dst[i] = __fadd_rn(__fmul_rn(src[i], scale), offset);  // no FMA contraction: numpy's roundings
    }
}
"""


class CupyKernel:
    """The stand-in's GPU kernel (CuPy RawKernel), launched on the stream execute_async_v3 is given.

    Compiled (NVRTC) when made, so no launch pays for it. The device buffers deploy-kit allocated
    are wrapped as CuPy arrays once per address (``UnownedMemory``: CuPy neither copies nor frees
    them), so a launch allocates nothing.

    Raises:
        ImportError: CuPy is not installed. cupy errors: no usable GPU, or NVRTC failed.
    """

    label = "CuPy RawKernel"
    asynchronous = True  # a launch returns before the kernel ends
    BLOCK = 256

    def __init__(self, device: int | None = None):
        import cupy

        self.cupy = cupy
        self.device = cupy.cuda.runtime.getDevice() if device is None else int(device)
        self._fn = cupy.RawKernel(_SOURCE, "standin_affine")
        attrs = cupy.cuda.Device(self.device).attributes
        sms = int(attrs.get("MultiProcessorCount", 1))
        threads = int(attrs.get("MaxThreadsPerMultiProcessor", 2048))
        regs_sm = int(attrs.get("MaxRegistersPerMultiprocessor", 65536))
        regs = max(1, int(self._fn.attributes.get("num_regs", 32)))  # compiles the kernel now
        blocks_sm = int(attrs.get("MaxBlocksPerMultiprocessor", 16))
        per_sm = max(1, min(threads // self.BLOCK, regs_sm // (regs * self.BLOCK), blocks_sm))
        self.grid = sms * per_sm  # every block resident at once: the spin costs the plan's time, once
        self.info = {"sms": sms, "blocks_per_sm": per_sm, "block": self.BLOCK, "registers": regs,
                     "cupy": cupy.__version__, "device": self.device}
        self._views: dict[tuple[int, int], object] = {}
        self._streams: dict[int, object] = {}

    def _view(self, ptr: int, count: int):
        key = (ptr, count)
        arr = self._views.get(key)
        if arr is None:
            cp = self.cupy
            mem = cp.cuda.UnownedMemory(ptr, count * 4, self, self.device)
            arr = self._views[key] = cp.ndarray((count,), cp.float32, cp.cuda.MemoryPointer(mem, 0))
        return arr

    def _stream(self, handle: int):
        stream = self._streams.get(handle)
        if stream is None:
            stream = self._streams[handle] = self.cupy.cuda.ExternalStream(handle, self.device)
        return stream

    def _enqueue(self, src, dst, count: int, spec: dict) -> None:
        """Launch on CuPy's current stream (RawKernel launches there)."""
        self._fn((self.grid,), (self.BLOCK,),
                 (src, dst, np.int64(count), np.float32(spec["scale"]), np.float32(spec["offset"]),
                  np.uint64(int(round(float(spec["ms"]) * 1e6)))))

    def launch(self, stream: int, src: int, dst: int, count: int, spec: dict) -> None:
        """Enqueue the kernel on ``stream`` (a cudaStream_t handle) over device addresses ``src``/``dst``."""
        with self._stream(stream):
            self._enqueue(self._view(src, count), self._view(dst, count), count, spec)

    def measure_ms(self, plan: dict, repeats: int = 3) -> dict:
        """The kernel's own time (CUDA events, median of ``repeats``) on a CuPy stream, and two launches
        on two streams at once (about twice one when they do not run side by side)."""
        cp = self.cupy
        count = int(np.prod(plan["tensors"][0]["shape"]))
        src, dst, dst2 = cp.zeros(count, cp.float32), cp.empty(count, cp.float32), cp.empty(count, cp.float32)
        a, b = cp.cuda.Stream(non_blocking=True), cp.cuda.Stream(non_blocking=True)
        times = []
        for _ in range(repeats + 1):  # the first is a warm-up
            start, end = cp.cuda.Event(), cp.cuda.Event()
            start.record(a)
            with a:
                self._enqueue(src, dst, count, plan["kernel"])
            end.record(a)
            end.synchronize()
            times.append(cp.cuda.get_elapsed_time(start, end))
        start, end_a, end_b = cp.cuda.Event(), cp.cuda.Event(), cp.cuda.Event()
        start.record(a)
        b.wait_event(start)
        with a:
            self._enqueue(src, dst, count, plan["kernel"])
        with b:
            self._enqueue(src, dst2, count, plan["kernel"])
        end_a.record(a)
        end_b.record(b)
        end_a.synchronize()
        end_b.synchronize()
        both = max(cp.cuda.get_elapsed_time(start, end_a), cp.cuda.get_elapsed_time(start, end_b))
        times = sorted(times[1:])
        return {"kernel_ms": round(times[len(times) // 2], 3), "two_streams_ms": round(both, 3)}

    def reference_wait(self, ms: float, *, blocking: bool):
        """Launch a ``ms`` kernel on a CuPy stream and return a function that waits for it through a
        CuPy event: ``blocking`` True makes the event cudaEventBlockingSync (the host thread sleeps),
        False leaves the default flags (the driver spins or yields: CUDA's cudaDeviceScheduleAuto)."""
        cp = self.cupy
        src, dst = cp.zeros(1024, cp.float32), cp.empty(1024, cp.float32)
        stream = cp.cuda.Stream(non_blocking=True)
        event = cp.cuda.Event(block=blocking, disable_timing=True)
        with stream:
            self._enqueue(src, dst, 1024, {"ms": ms, "scale": 1.0, "offset": 0.0})
        event.record(stream)

        def wait():
            event.synchronize()
            _ = (src, dst, stream)  # alive until the kernel is done

        return wait

    def pool_bytes(self) -> int:
        """Bytes held by CuPy's default device memory pool (the stand-in's own allocations)."""
        return int(self.cupy.get_default_memory_pool().total_bytes())


__all__ = ["PLAN_FORMAT", "MODULE_NAME", "ILogger", "Logger", "write_plan", "read_plan", "load_plan", "reference", "ReferenceRunner",
           "module", "HostKernel", "CupyKernel"]
