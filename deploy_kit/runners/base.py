"""The one runner interface: numpy in, numpy out, whatever computes it.

Parity, ``verify``, the INT8 quality table, the seam check and the runtime all run models
through a :class:`Runner`:

* :class:`OrtRunner` — ONNX Runtime (CPU; the CUDA execution provider when installed and asked
  for). This module is the only place in deploy-kit that builds an ``InferenceSession``.
* :class:`deploy_kit.runtime.session.EngineRunner` — a TensorRT / TensorRT-RTX plan (needs a CUDA GPU).
* ``deploy_kit.reference.TorchRunner`` — the PyTorch FP32 reference (build machine only; it
  lives outside the runtime because the runtime never imports torch).

numpy only at import time; onnxruntime and tensorrt are imported when a runner is opened.
"""

from __future__ import annotations

import importlib
from typing import Sequence

import numpy as np

from .._deps import require
from ..errors import UsageError
from ..memory import map_large_allocations, release_memory

ORT_MODULE = "onnxruntime"  # the Python package (the backend's name is the registry's: deploy_kit.backends)
ORT_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


class Runner:
    """Runs one model with a fixed-shape input.

    Attributes:
        name: ``pytorch`` | ``onnxruntime`` | ``tensorrt`` | ``tensorrt-rtx``.
        input_name: the (single) image input's name.
        output_names: output names, in the order :meth:`run` returns them.
        input_shape: (N, C, H, W) the model takes, or None when any shape is accepted.
    """

    name = ""
    input_name = "input"
    output_names: list[str] = []
    input_shape: tuple[int, ...] | None = None

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """One forward pass: float32 NCHW in, the outputs (float32) in ``output_names`` order."""
        raise NotImplementedError

    def submit(self, x: np.ndarray) -> "Pending":
        """Start a forward pass of ``x``; :meth:`Pending.wait` returns its outputs.

        ``x`` may be reused by the caller as soon as ``submit`` returns. Runners that execute
        asynchronously (the engine runner) return before the pass ends, so up to :attr:`slots`
        passes can be in flight; the arrays ``wait`` returns stay valid until ``slots`` further
        passes have been submitted. The default runs the pass now.
        """
        return Pending(self.run(x))

    # passes that may be in flight at once (see submit)
    slots = 1

    def run_many(self, inputs: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """:meth:`run` for each input (outputs per input)."""
        return [self.run(x) for x in inputs]

    def close(self) -> None:
        return None

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Pending:
    """A forward pass started by :meth:`Runner.submit`; synchronous runners hand back a done one."""

    def __init__(self, outputs: list[np.ndarray]):
        self._outputs = outputs

    def wait(self) -> list[np.ndarray]:
        """The outputs (float32, in ``output_names`` order), once the pass has finished."""
        return self._outputs


def ort_session(model, *, threads: int = 0, optimize: bool = True, arena: bool = True, providers: str = "cpu"):
    """An ONNX Runtime session (the single place one is built).

    Args:
        model: an ONNX path or serialized model bytes.
        threads: intra-op threads (0 = ONNX Runtime's default); inter-op is then 1.
        optimize: False disables every graph optimisation (no fused kernels: each node runs as
            written, which is what load checks and the INT8 calibrator want).
        arena: False turns the CPU memory arena off, so peak memory is not kept alive between
            runs of a one-shot session.
        providers: ``cpu`` or ``cuda`` (CUDA EP first, CPU fallback).

    Raises:
        MissingDependencyError: onnxruntime is not installed (names the extra).
    """
    ort = require(ORT_MODULE)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    if not optimize:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_cpu_mem_arena = arena
    return ort.InferenceSession(model, opts, providers=ORT_PROVIDERS[providers])


def ort_providers_available() -> list[str]:
    """Execution providers of the installed onnxruntime ([] when it is not installed)."""
    try:
        ort = importlib.import_module(ORT_MODULE)
    except Exception:  # noqa: BLE001 - a broken install counts as missing
        return []
    return list(ort.get_available_providers())


class OrtRunner(Runner):
    """ONNX Runtime on one ONNX file.

    Args:
        path: ONNX file.
        device: ``cpu``, ``cuda`` or ``auto`` (CUDA EP when this onnxruntime has it).
        threads, optimize, arena: see :func:`ort_session`.
        input_name: which input takes the image (default: the first).
        name: the backend name reported (the registry, :mod:`deploy_kit.backends`, passes its own).
    """

    def __init__(self, path: str, *, device: str = "cpu", threads: int = 0, optimize: bool = True,
                 arena: bool = True, input_name: str | None = None, name: str = ""):
        self.name = name
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in ort_providers_available() else "cpu"
        self.device = device
        self.path = path
        self.session = ort_session(path, threads=threads, optimize=optimize, arena=arena, providers=device)
        ins = self.session.get_inputs()
        chosen = next((i for i in ins if i.name == input_name), None) if input_name else ins[0]
        if chosen is None:
            raise UsageError(f"{path} has no input named '{input_name}' (inputs: {', '.join(i.name for i in ins)})")
        self.input_name = chosen.name
        self._half = chosen.type == "tensor(float16)"
        self.input_shape = tuple(d if isinstance(d, int) else -1 for d in chosen.shape)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        feed = np.ascontiguousarray(x, dtype=np.float16 if self._half else np.float32)
        outs = self.session.run(None, {self.input_name: feed})
        return [np.asarray(o, dtype=np.float32) for o in outs]

    def run_feeds(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One pass of a graph with several inputs, fed by name (each cast to its input's float type)."""
        types = {i.name: i.type for i in self.session.get_inputs()}
        feed = {k: np.ascontiguousarray(v, dtype=np.float16 if types.get(k) == "tensor(float16)" else np.float32)
                for k, v in feeds.items()}
        return [np.asarray(o, dtype=np.float32) for o in self.session.run(None, feed)]

    def close(self) -> None:
        self.session = None


def in_child_process(fn, *args, lean: bool = True):
    """``fn(*args)`` in a fresh (spawned) process; returns its result (``fn`` must be importable).

    Used for ONNX Runtime runs next to a PyTorch process: the child imports numpy + onnxruntime
    only, so ONNX Runtime's peak memory does not stack on what PyTorch holds in this one
    (Restormer-Local at 720x1280 peaks at ~9 GB in ONNX Runtime alone, ~18 GB before the export form's
    graph changes; the export process OOM'd on 24 GB when both lived in one process). This
    process first hands its freed heap back to the OS (:func:`deploy_kit.memory.release_memory`):
    it waits idle, resident, for the whole child run. The child serves large allocations with
    their own mappings (:func:`deploy_kit.memory.map_large_allocations`): the 720p Restormer
    FP16 parity child peaked at 9624 MiB without, 9122 MiB with (two samples).
    ``lean=False`` leaves the child's allocator as glibc sets it, for timing runs: a fresh mapping
    per large allocation costs its page faults every time (PyTorch eager NAFNet-w32 at 256x256, 2
    threads: 283 ms with glibc's default, 904 ms with every 1 MiB+ allocation mapped).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    release_memory()
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=map_large_allocations if lean else None) as pool:
        return pool.submit(fn, *args).result()


def run_isolated(path: str, inputs: Sequence[np.ndarray], threads: int = 0) -> list[list[np.ndarray]]:
    """ONNX Runtime CPU outputs per input, computed in a fresh process (:func:`in_child_process`),
    with the arena off (one-shot session)."""
    return in_child_process(_run_ort_once, path, list(inputs), threads)


def _run_ort_once(path: str, inputs: list, threads: int) -> list[list[np.ndarray]]:
    runner = OrtRunner(path, threads=threads, arena=False)
    try:
        return runner.run_many(inputs)
    finally:
        runner.close()
