"""EngineSession / EngineRunner: a TensorRT or TensorRT-RTX plan, numpy in and out, passes in flight.

The caller passes the imported runtime module (``tensorrt`` or ``tensorrt_rtx``). Without a usable
GPU construction raises RuntimeError with the reason. Each *slot* owns, made once, what one pass
in flight needs: an execution context (tensor addresses belong to a context, and a context runs
one pass at a time: https://docs.nvidia.com/deeplearning/tensorrt/latest/architecture/how-trt-works.html),
device and page-locked host buffers for every I/O tensor, a stream and an event. A pass enqueues
upload, execution and download on its slot's stream without waiting, so the caller prepares the
next tile while the GPU works. Not thread-safe: one caller thread per session.

TensorRT-RTX compiles its kernels for the GPU when a context is made (JIT); the session keeps them in
``<plan>.rtcache`` beside the plan, so only the first process on a machine pays for it. Builds and
runtimes of one TensorRT module share one logger per process (:func:`trt_logger`).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import warnings
from types import SimpleNamespace
from typing import Iterator

import numpy as np

from ..fsutil import write_bytes
from . import cuda
from .base import Pending, Runner

_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32, "INT64": np.int64, "INT8": np.int8,
           "UINT8": np.uint8, "BOOL": np.bool_}
RUNTIME_CACHE_SUFFIX = ".rtcache"  # TensorRT-RTX's runtime cache of a plan lives beside it: <plan>.rtcache
_LOGGERS: dict[str, object] = {}  # trt module name -> its one logger in this process (trt_logger)
_LOGGERS_LOCK = threading.Lock()


def trt_logger(trt):
    """The one logger of the TensorRT module ``trt`` (``tensorrt`` or ``tensorrt_rtx``) in this process.

    TensorRT keeps one logger pointer at a time: a builder or runtime made while another is alive
    gets the existing logger, not its own ("TensorRT maintains only a single logger pointer at any
    given time", the warning quoted in https://github.com/NVIDIA/TensorRT/issues/1475), so a second
    logger never sees its messages. Builds and runtimes therefore share
    this one: it prints warnings and errors to stderr, except while a build records them
    (``with logger.capture() as rec:`` collects ``rec.errors`` and ``rec.warnings`` instead), so a
    build reports its own messages even when an engine runtime made the logger first.
    """
    with _LOGGERS_LOCK:
        logger = _LOGGERS.get(trt.__name__)
        if logger is None:
            logger = _LOGGERS[trt.__name__] = _make_logger(trt)
        return logger


def _make_logger(trt):
    severity = trt.ILogger.Severity
    errors = (severity.ERROR, severity.INTERNAL_ERROR)

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self._captures: list[SimpleNamespace] = []
            self._lock = threading.Lock()

        def log(self, level, msg):
            if level in errors:
                kind, tag = "errors", "E"
            elif level == severity.WARNING:
                kind, tag = "warnings", "W"
            else:
                return
            with self._lock:
                captures = list(self._captures)
            for rec in captures:
                getattr(rec, kind).append(str(msg))
            if not captures:
                print(f"[{trt.__name__}] [{tag}] {msg}", file=sys.stderr)

        @contextlib.contextmanager
        def capture(self) -> Iterator[SimpleNamespace]:
            rec = SimpleNamespace(errors=[], warnings=[])
            with self._lock:
                self._captures.append(rec)
            try:
                yield rec
            finally:
                with self._lock:
                    self._captures.remove(rec)

    return Logger()


class EngineSession:
    """A deserialized fixed-shape engine with ``slots`` passes that may be in flight at once.

    Args:
        plan_path: a ``.plan`` built by deploy-kit.
        trt: the imported runtime module that built it (``tensorrt`` or ``tensorrt_rtx``).
        slots: passes in flight (2 lets the copies and the host's work overlap the kernels).
        dla_core: the DLA core a Jetson DLA plan was built for (its manifest's ``dla_core``); set on
            the runtime before the plan is deserialized. None for GPU plans.
        runtime_cache: TensorRT-RTX only: True keeps the kernels compiled at run time in
            ``<plan>.rtcache`` (loaded when present, written atomically when the session closes);
            a path keeps them there; False keeps them in memory only.

    Attributes:
        inputs, outputs: I/O tensor names in engine order.
        shapes, dtypes: per tensor name, its fixed shape and numpy dtype.

    Raises:
        RuntimeError: no usable GPU (the reason), or the plan cannot be deserialized here.
        ValueError: an I/O tensor has a dynamic shape, an unsupported dtype or a vectorized format.
        cuda.CudaError: an allocation failed.

    Warns:
        RuntimeWarning: the runtime cache file could not be used or written, or TensorRT-RTX refused
            the runtime cache (the engine then runs, compiling its kernels again in every process).
    """

    def __init__(self, plan_path: str, trt, *, slots: int = 2, dla_core: int | None = None,
                 runtime_cache: bool | str = True):
        ok, why = cuda.gpu_available()
        if not ok:
            raise RuntimeError(why)
        if slots < 1:
            raise ValueError(f"slots must be at least 1, got {slots}")
        self.trt, self.slots = trt, slots
        self._slots: list[SimpleNamespace] = []
        self._next, self._configs, self._cache = 0, [], None
        self._ready = False
        self.cache_path = plan_path + RUNTIME_CACHE_SUFFIX if runtime_cache is True else (runtime_cache or None)
        self._cache_loaded, self._cache_refused = b"", False
        self._runtime = trt.Runtime(trt_logger(trt))
        if dla_core is not None:
            # IRuntime::setDLACore: "the DLA core that the deserialized engine must execute on", so it
            # is set before the plan is deserialized
            # (https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/c-api/classnvinfer1_1_1_i_runtime.html)
            self._runtime.DLA_core = int(dla_core)
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
        self._ready = True

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
                self._load_cache()
            if not config.set_runtime_cache(self._cache) and not self._cache_refused:
                self._cache_refused = True
                warnings.warn(f"{self.trt.__name__} refused the runtime cache: the engine runs, but compiles its "
                              "kernels again in every process", RuntimeWarning, stacklevel=2)
            self._configs.append(config)  # kept as long as the context made from it
            context = engine.create_execution_context(config)
        else:
            context = engine.create_execution_context()
        if context is None:
            raise RuntimeError("could not create an execution context (device memory exhausted?)")
        return context

    def _load_cache(self) -> None:
        """Fill the new runtime cache from :attr:`cache_path` when that file exists.

        TensorRT-RTX checks a cache against this GPU, driver and TensorRT-RTX version and refuses one
        made elsewhere (IRuntimeCache.deserialize returns False); it is then rebuilt and replaced at close
        (https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/inference-library/work-with-runtime-cache.html).
        """
        path = self.cache_path
        if not path or not os.path.isfile(path):
            return
        try:
            with open(path, "rb") as fh:
                blob = fh.read()
        except OSError as exc:
            warnings.warn(f"could not read the runtime cache {path} ({exc.strerror or exc}); kernels are compiled "
                          "again", RuntimeWarning, stacklevel=3)
            return
        if blob and self._cache.deserialize(blob):
            self._cache_loaded = blob
        elif blob:
            warnings.warn(f"the runtime cache {path} was made for another GPU, driver or {self.trt.__name__} version; "
                          "kernels are compiled again and the file is replaced when the session closes",
                          RuntimeWarning, stacklevel=3)

    def _save_cache(self) -> None:
        """Write the runtime cache to :attr:`cache_path` atomically when it holds more than was loaded."""
        path = self.cache_path
        if self._cache is None or not path or self._cache_refused:
            return
        try:
            blob = bytes(memoryview(self._cache.serialize()))
            if blob and blob != self._cache_loaded:
                write_bytes(path, blob)
                self._cache_loaded = blob
        except OSError as exc:  # a read-only bundle folder: the engine ran, only the cache is not kept
            warnings.warn(f"could not write the runtime cache {path} ({exc.strerror or exc}); kernels are compiled "
                          "again next time", RuntimeWarning, stacklevel=3)

    def submit(self, feeds: dict[str, np.ndarray]) -> int:
        """Start a pass on the next slot (round-robin) and return that slot's index at once.

        Waits first for the slot's previous pass. ``feeds`` may be reused as soon as this returns
        (they are copied, cast to the engine's dtype, into the slot's pinned memory).

        Raises:
            ValueError: an input is missing, unknown, of the wrong shape, not castable, or holds values
                the engine's input dtype cannot represent (e.g. 1e5 for a float16 input).
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
            _check_range(name, arr, self.dtypes[name])
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
        if slots and self._ready and not errors:
            self._save_cache()
        self._ready = False
        for slot in slots:
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


def _check_range(name: str, arr: np.ndarray, dtype: np.dtype) -> None:
    """Refuse values that the cast into the engine's input ``dtype`` would overflow.

    ``same_kind`` lets float64 or float32 into a float16 input and int64 into an int32 one; numpy
    then turns 1e5 into inf or wraps integers silently. Checked only when the cast is not safe.

    Raises:
        ValueError: naming the tensor, the values' range and the dtype's.
    """
    if arr.size == 0 or dtype.kind == "b" or np.can_cast(arr.dtype, dtype, "safe"):
        return
    info = np.finfo(dtype) if dtype.kind == "f" else np.iinfo(dtype)
    lo, hi = arr.min(), arr.max()  # NaN compares False: it passes, as it would through a float32 input
    if hi > info.max or lo < info.min:
        raise ValueError(f"input '{name}': values from {float(lo):.6g} to {float(hi):.6g} do not fit the engine's "
                         f"{dtype} input (range {float(info.min):.6g} to {float(info.max):.6g}); scale them first")


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
    """A TensorRT / TensorRT-RTX plan as a :class:`~deploy_kit.runners.base.Runner`.

    Args:
        plan: the ``.plan`` file.
        trt: the imported runtime module (``tensorrt`` or ``tensorrt_rtx``).
        name: the backend name to report (``tensorrt`` or ``tensorrt-rtx``).
        slots: passes that may be in flight (see :meth:`submit`).
        dla_core, runtime_cache: as :class:`EngineSession`.

    Raises:
        RuntimeError, ValueError: as :class:`EngineSession`; ValueError for a multi-input engine.
    """

    def __init__(self, plan: str, trt, *, name: str, slots: int = 2, dla_core: int | None = None,
                 runtime_cache: bool | str = True):
        self.name, self.path = name, plan
        self.session = s = EngineSession(plan, trt, slots=slots, dla_core=dla_core, runtime_cache=runtime_cache)
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
