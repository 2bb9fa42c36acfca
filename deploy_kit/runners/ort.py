"""ONNX Runtime as a :class:`~deploy_kit.runners.base.Runner`; the only place in deploy-kit that builds
an ``InferenceSession``.

numpy only at import time; onnxruntime is imported when a session is made.
"""

from __future__ import annotations

import importlib
from typing import Sequence

import numpy as np

from .._deps import require
from ..errors import UsageError
from .base import Runner, in_child_process

ORT_MODULE = "onnxruntime"  # the Python package (the backend's name is the registry's: deploy_kit.backends)
ORT_PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}
# graph optimisation levels by deploy-kit's names (onnxruntime.GraphOptimizationLevel)
ORT_LEVELS = {"all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED", "basic": "ORT_ENABLE_BASIC",
              "disabled": "ORT_DISABLE_ALL"}


def ort_session(model, *, threads: int = 0, optimize: bool = True, arena: bool = True, providers: str = "cpu",
                level: str = "all", spinning: bool | None = None):
    """An ONNX Runtime session (the single place one is built).

    Args:
        model: an ONNX path or serialized model bytes.
        threads: intra-op threads (0 = ONNX Runtime's default); inter-op is then 1.
        optimize: False disables every graph optimisation (no fused kernels: each node runs as
            written, which is what load checks and the INT8 calibrator want); it overrides ``level``.
        level: graph optimisation level, a key of :data:`ORT_LEVELS` (ONNX Runtime's default: ``all``).
        spinning: ``session.intra_op.allow_spinning``: False makes idle intra-op threads sleep instead of
            spin-waiting for the next op, leaving the cores to the runtime's decode/blend/encode threads;
            None keeps ONNX Runtime's default (spinning on). Measured: docs/cpu.md.
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
    if level not in ORT_LEVELS:
        raise UsageError(f"unknown graph optimisation level '{level}'; choose one of: {', '.join(ORT_LEVELS)}")
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, ORT_LEVELS[level if optimize else "disabled"])
    if spinning is not None:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
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
        threads, optimize, arena, level, spinning: see :func:`ort_session`.
        input_name: which input takes the image (default: the first).
        name: the backend name reported (the registry, :mod:`deploy_kit.backends`, passes its own).
    """

    def __init__(self, path: str, *, device: str = "cpu", threads: int = 0, optimize: bool = True,
                 arena: bool = True, input_name: str | None = None, name: str = "", level: str = "all",
                 spinning: bool | None = None):
        self.name = name
        if device == "auto":
            device = "cuda" if "CUDAExecutionProvider" in ort_providers_available() else "cpu"
        self.device = device
        self.path = path
        self.session = ort_session(path, threads=threads, optimize=optimize, arena=arena, providers=device,
                                   level=level, spinning=spinning)
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
