"""EngineSession / EngineRunner: a TensorRT or TensorRT-RTX plan, numpy in and out, passes in flight.

The caller passes the imported runtime module (``tensorrt`` or ``tensorrt_rtx``). Without a usable
GPU construction raises RuntimeError with the reason. Each *slot* owns, made once, what one pass
in flight needs: an execution context (tensor addresses belong to a context, and a context runs
one pass at a time: https://docs.nvidia.com/deeplearning/tensorrt/latest/architecture/how-trt-works.html),
device and page-locked host buffers for every I/O tensor, a stream and an event. A pass enqueues
upload, execution and download on its slot's stream without waiting, so the caller prepares the
next tile while the GPU works. Not thread-safe: one caller thread per session.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from . import cuda
from .runners import Pending, Runner

_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8,
           "UINT8": np.uint8, "BOOL": np.bool_}
_LOGGERS: dict[str, object] = {}  # one logger per runtime module: TensorRT warns when they differ


class EngineSession:
    """A deserialized fixed-shape engine with ``slots`` passes that may be in flight at once.

    Args:
        plan_path: a ``.plan`` built by deploy-kit.
        trt: the imported runtime module that built it (``tensorrt`` or ``tensorrt_rtx``).
        slots: passes in flight (2 lets the copies and the host's work overlap the kernels).

    Attributes:
        inputs, outputs: I/O tensor names in engine order.
        shapes, dtypes: per tensor name, its fixed shape and numpy dtype.

    Raises:
        RuntimeError: no usable GPU (the reason), or the plan cannot be deserialized here.
        ValueError: an I/O tensor has a dynamic shape, an unsupported dtype or a vectorized format.
        cuda.CudaError: an allocation failed.
    """

    def __init__(self, plan_path: str, trt, *, slots: int = 2):
        ok, why = cuda.gpu_available()
        if not ok:
            raise RuntimeError(why)
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.trt, self.slots = trt, slots
        self._slots: list[SimpleNamespace] = []
        self._next, self._configs, self._cache = 0, [], None
        if trt.__name__ not in _LOGGERS:
            _LOGGERS[trt.__name__] = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(_LOGGERS[trt.__name__])
        with open(plan_path, "rb") as fh:
            self._engine = self._runtime.deserialize_cuda_engine(fh.read())
        if self._engine is None:
            raise RuntimeError(f"{plan_path} could not be deserialized by {trt.__name__} {trt.__version__} "
                               "(built by another version, or for another GPU?)")
        self.inputs, self.outputs, self.shapes, self.dtypes = [], [], {}, {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            self.shapes[name], self.dtypes[name] = self._describe(name)
            is_input = self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            (self.inputs if is_input else self.outputs).append(name)
        try:
            for _ in range(slots):
                # what one pass in flight owns; device and host buffers by tensor name
                self._slots.append(SimpleNamespace(context=None, stream=None, event=None,
                                                   device={}, host={}, submits=0))
                self._fill(self._slots[-1])
        except BaseException:
            self.close()
            raise

    def _describe(self, name: str) -> tuple[tuple[int, ...], np.dtype]:
        engine = self._engine
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        if any(d < 0 for d in shape):
            raise ValueError(f"tensor '{name}' has a dynamic shape {shape}; EngineSession runs fixed-shape engines")
        kind = engine.get_tensor_dtype(name).name
        if kind not in _DTYPES:
            raise ValueError(f"tensor '{name}' is {kind}; EngineSession handles {', '.join(_DTYPES)}")
        # buffers are sized for the plain row-major layout; a vectorized I/O format pads
        if hasattr(engine, "get_tensor_format") and engine.get_tensor_format(name) != self.trt.TensorFormat.LINEAR:
            raise ValueError(f"tensor '{name}' has I/O format {engine.get_tensor_format(name)}, not LINEAR")
        return shape, np.dtype(_DTYPES[kind])

    def _fill(self, slot: SimpleNamespace) -> None:
        slot.stream, slot.event = cuda.Stream(), cuda.Event()
        for name in self.inputs + self.outputs:
            slot.host[name] = cuda.PinnedBuffer(self.shapes[name], self.dtypes[name])
            slot.device[name] = cuda.DeviceBuffer(slot.host[name].nbytes)
        slot.context = self._new_context()
        for name, buf in slot.device.items():
            if not slot.context.set_tensor_address(name, buf.ptr):
                raise RuntimeError(f"set_tensor_address('{name}') was refused")

    def _new_context(self):
        engine = self._engine
        config = engine.create_runtime_config() if hasattr(engine, "create_runtime_config") else None
        if config is not None and hasattr(config, "create_runtime_cache"):
            # TensorRT-RTX compiles its kernels for this GPU at run time (JIT); one runtime cache
            # in every slot's config lets the later contexts reuse the first one's kernels
            # (https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/inference-library/work-with-runtime-cache.html)
            if self._cache is None:
                self._cache = config.create_runtime_cache()
            config.set_runtime_cache(self._cache)
            self._configs.append(config)  # kept as long as the context made from it
            context = engine.create_execution_context(config)
        else:
            context = engine.create_execution_context()
        if context is None:
            raise RuntimeError("could not create an execution context (device memory exhausted?)")
        return context

    def submit(self, feeds: dict[str, np.ndarray]) -> int:
        """Start a pass on the next slot (round-robin) and return that slot's index at once.

        Waits first for the slot's previous pass. ``feeds`` may be reused as soon as this returns
        (they are copied, cast to the engine's dtype, into the slot's pinned memory).

        Raises:
            ValueError: an input is missing, unknown, of the wrong shape, or not castable.
            RuntimeError: the session is closed, or TensorRT refused to enqueue.
        """
        slots = self._live()
        unknown = sorted(set(feeds) - set(self.inputs))
        if unknown:
            raise ValueError(f"unknown input(s) {unknown}; the engine takes {self.inputs}")
        arrays = {}
        for name in self.inputs:
            if name not in feeds:
                raise ValueError(f"missing input '{name}'")
            arr = arrays[name] = np.asarray(feeds[name])
            if arr.shape != self.shapes[name]:
                raise ValueError(f"input '{name}' must have shape {self.shapes[name]}, got {arr.shape}")
            if not np.can_cast(arr.dtype, self.dtypes[name], "same_kind"):
                raise ValueError(f"input '{name}': {arr.dtype} cannot be cast to {self.dtypes[name]}")
        index = self._next
        slot = slots[index]
        slot.event.synchronize()  # its previous pass is done with the buffers
        for name, arr in arrays.items():
            np.copyto(slot.host[name].array, arr, casting="same_kind")
            cuda.memcpy_async(slot.device[name].ptr, slot.host[name].ptr, slot.host[name].nbytes, cuda.H2D, slot.stream)
        if not slot.context.execute_async_v3(slot.stream.handle):
            raise RuntimeError("TensorRT could not enqueue the engine (see its log above)")
        for name in self.outputs:
            cuda.memcpy_async(slot.host[name].ptr, slot.device[name].ptr, slot.host[name].nbytes, cuda.D2H, slot.stream)
        slot.event.record(slot.stream)
        slot.submits += 1
        self._next = (index + 1) % self.slots
        return index

    def submissions(self, slot: int) -> int:
        """Passes given to ``slot`` so far (tells a waiter whether its outputs were overwritten)."""
        return self._live()[slot].submits

    def _live(self) -> list[SimpleNamespace]:
        if not self._slots:
            raise RuntimeError("EngineSession is closed")
        return self._slots

    def wait(self, slot: int) -> dict[str, np.ndarray]:
        """Block until ``slot``'s pass has finished; its outputs, by name.

        Returns:
            Views of the slot's pinned memory (engine dtype), valid until the slot is submitted
            again (after ``slots - 1`` other submits), never after :meth:`close`.

        Raises:
            RuntimeError: closed, or the slot was never submitted. cuda.CudaError: the pass failed.
        """
        s = self._live()[slot]
        if not s.submits:
            raise RuntimeError(f"slot {slot} has not been submitted")
        s.event.synchronize()
        return {name: s.host[name].array for name in self.outputs}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One pass, synchronously; the outputs are the caller's own copies."""
        return {name: arr.copy() for name, arr in self.wait(self.submit(feeds)).items()}

    def close(self) -> None:
        """Wait for passes in flight, then free every buffer, stream, event and context (idempotent).

        Raises:
            cuda.CudaError: the first failure, after everything else has been released.
        """
        slots, self._slots = self._slots, []
        errors: list[Exception] = []
        for slot in slots:
            errors += _attempt(slot.event and slot.event.synchronize)  # nothing is freed while in use
            slot.context = None  # contexts go before the engine that made them
            for res in [*slot.host.values(), *slot.device.values(), slot.event, slot.stream]:
                errors += _attempt(res and res.close)
        self._configs, self._cache = [], None
        self._engine = self._runtime = None
        if errors:
            raise errors[0]

    def __enter__(self) -> "EngineSession":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _attempt(fn) -> list[Exception]:
    """Call ``fn`` (when set); its CudaError is returned, not raised, so releasing goes on."""
    try:
        if fn:
            fn()
    except cuda.CudaError as exc:
        return [exc]
    return []


class _EnginePending(Pending):
    def __init__(self, runner: "EngineRunner", slot: int, ticket: int):
        super().__init__([])
        self._runner, self._slot, self._ticket = runner, slot, ticket

    def wait(self) -> list[np.ndarray]:
        return self._runner._collect(self._slot, self._ticket)


class EngineRunner(Runner):
    """A TensorRT / TensorRT-RTX plan as a :class:`~deploy_kit.runtime.runners.Runner`.

    Args:
        plan: the ``.plan`` file.
        trt: the imported runtime module (``tensorrt`` or ``tensorrt_rtx``).
        name: the backend name to report (``tensorrt`` or ``tensorrt-rtx``).
        slots: passes that may be in flight (see :meth:`submit`).

    Raises:
        RuntimeError, ValueError: as :class:`EngineSession`; ValueError for a multi-input engine.
    """

    def __init__(self, plan: str, trt, *, name: str, slots: int = 2):
        self.name = name
        self.session = s = EngineSession(plan, trt, slots=slots)
        if len(s.inputs) != 1:
            s.close()
            raise ValueError(f"{plan} has inputs {s.inputs}; EngineRunner runs single-input engines")
        self.slots, self.input_name, self.output_names = slots, s.inputs[0], list(s.outputs)
        self.input_shape = s.shapes[self.input_name]
        # float32 copies of non-float32 outputs (FP16 engines), per slot: made once, like the buffers
        self._f32 = [{n: np.empty(s.shapes[n], np.float32) for n in s.outputs if s.dtypes[n] != np.float32}
                     for _ in range(slots)]

    def submit(self, x: np.ndarray) -> Pending:
        """Start a pass of ``x`` (N, C, H, W as :attr:`input_shape`) and return without waiting.

        ``wait()`` returns the outputs as float32 arrays that belong to the runner (float32
        engine outputs are the pinned buffers themselves, with no copy): valid until ``slots``
        further submits, per the :meth:`Runner.submit` contract.
        """
        slot = self.session.submit({self.input_name: x})
        return _EnginePending(self, slot, self.session.submissions(slot))

    def _collect(self, slot: int, ticket: int) -> list[np.ndarray]:
        if self.session.submissions(slot) != ticket:
            raise RuntimeError(f"outputs overwritten: wait() must come before {self.slots} further submits")
        out, staged = self.session.wait(slot), self._f32[slot]
        for name, dst in staged.items():
            np.copyto(dst, out[name])
        return [staged.get(name, out[name]) for name in self.output_names]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """One pass; the float32 outputs are the caller's own copies."""
        return [a.copy() for a in self.submit(x).wait()]

    def close(self) -> None:
        self.session.close()
