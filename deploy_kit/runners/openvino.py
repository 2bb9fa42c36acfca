"""OpenVINO (CPU) as a :class:`~deploy_kit.runners.base.Runner`; the only place in deploy-kit that compiles
an OpenVINO model.

numpy only at import time; openvino is imported when a model is compiled or the CPU is asked what it runs.

Precision: OpenVINO's CPU plugin executes a graph at its ``INFERENCE_PRECISION_HINT`` (f32, bf16 or f16),
whatever the graph's own types. Where the CPU cannot run the precision asked, OpenVINO 2026.4 compiles
FP32 without a word (measured on an AVX2-only AMD EPYC: ``bf16`` asked, ``f32`` read back), so this runner
checks the CPU's ``OPTIMIZATION_CAPABILITIES`` first and reads the precision back from the compiled
model: :attr:`OpenVINORunner.precision` is what really runs, never what was asked.
"""

from __future__ import annotations

import functools
import importlib
import os
import time

import numpy as np

from .._deps import require
from ..errors import UsageError
from .base import Runner

OV_MODULE = "openvino"  # the Python package (the backend's name is the registry's: deploy_kit.backends)
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# deploy-kit's precision names <-> OpenVINO's element types (INFERENCE_PRECISION_HINT)
_OV_TYPE = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_FROM_OV = {v: k for k, v in _OV_TYPE.items()}
# OPTIMIZATION_CAPABILITIES entry that says the CPU plugin runs a precision natively
# (https://docs.openvino.ai/2026/openvino-workflow/running-inference/inference-devices-and-modes/cpu-device.html)
_CAPABILITY = {"bf16": "BF16", "fp16": "FP16"}
CACHE_FOLDER = "openvino-cache"  # beside the graph (inside a bundle) when that folder is writable


@functools.lru_cache(maxsize=1)
def cpu_facts() -> tuple[str, tuple[str, ...], str]:
    """What OpenVINO's CPU plugin says of this CPU: (architecture, optimisation capabilities, name).

    Returns:
        e.g. ``("intel64", ("FP32", "INT8", "BIN", "EXPORT_IMPORT"), "AMD EPYC")``; architecture is
        ``intel64`` on x86-64, ``arm64`` on 64-bit ARM.

    Raises:
        MissingDependencyError: openvino is not installed (names the extra).
    """
    ov = require(OV_MODULE)
    core = ov.Core()
    caps = tuple(str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    arch = str(core.get_property("CPU", "DEVICE_ARCHITECTURE"))
    return arch, caps, str(core.get_property("CPU", "FULL_DEVICE_NAME"))


def cpu_precisions() -> tuple[str, ...]:
    """The inference precisions OpenVINO's CPU plugin runs natively here, fastest first; always ends in ``fp32``.

    ``bf16`` needs AMX or AVX-512-BF16 (Intel Xeon from Cooper Lake / Sapphire Rapids, AMD Zen 4+),
    ``fp16`` an ARM CPU with FP16 arithmetic (ARMv8.2-A and later) or AVX-512-FP16/AMX-FP16.

    Raises:
        MissingDependencyError: openvino is not installed.
    """
    _, caps, _ = cpu_facts()
    return tuple(p for p in ("bf16", "fp16") if _CAPABILITY[p] in caps) + ("fp32",)


def resolve_precision(asked: str, offered: tuple[str, ...]) -> str:
    """The precision to compile: ``auto`` is the fastest the CPU offers, a named one must be offered.

    Args:
        asked: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        offered: :func:`cpu_precisions` (a caller testing this rule may pass its own).

    Raises:
        UsageError: an unknown precision, or one this CPU cannot run (one line: why, and use fp32).
    """
    if asked not in PRECISIONS:
        raise UsageError(f"unknown OpenVINO precision '{asked}'; choose one of: {', '.join(PRECISIONS)}")
    if asked == "auto":
        return offered[0]
    if asked not in offered:
        need = ("AMX or AVX-512-BF16 (e.g. Intel Xeon Sapphire Rapids, AMD Zen 4)" if asked == "bf16"
                else "FP16 arithmetic (ARMv8.2-A or later, or AVX-512-FP16)")
        raise UsageError(f"OpenVINO {asked.upper()} needs a CPU with {need}; this CPU runs "
                         f"{', '.join(p.upper() for p in offered)}: use fp32 (--precision fp32)")
    return asked


def default_cache_dir(path: str) -> str:
    """Where compiled models of the graph at ``path`` are cached: ``openvino-cache/`` beside it (inside a
    bundle) when that folder is writable, else ``$XDG_CACHE_HOME/deploy-kit/openvino`` (``~/.cache/...``).

    OpenVINO keys each cached blob by the model, the device and its settings, and the OpenVINO
    version, so one folder serves any number of graphs and precisions.
    """
    folder = os.path.dirname(os.path.abspath(path))
    beside = os.path.join(folder, CACHE_FOLDER)
    if os.access(beside if os.path.isdir(beside) else folder, os.W_OK):
        return beside
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "deploy-kit", "openvino")


def ov_available() -> bool:
    """openvino imports here (a broken install counts as missing)."""
    try:
        importlib.import_module(OV_MODULE)
    except Exception:  # noqa: BLE001 - any import failure means it cannot be used
        return False
    return True


class OpenVINORunner(Runner):
    """OpenVINO's CPU plugin on one ONNX file.

    Args:
        path: ONNX file (FP32, FP16 or Q/DQ INT8 graph).
        precision: ``auto`` (the fastest the CPU runs natively: BF16, then FP16, else FP32), ``fp32``,
            ``bf16`` or ``fp16``.
        threads: ``INFERENCE_NUM_THREADS`` (0: OpenVINO's default, one per physical core).
        cache_dir: OpenVINO's ``CACHE_DIR`` (a second start imports the compiled model instead of
            compiling it); None: :func:`default_cache_dir`; "": no cache.
        name: the backend name reported (the registry, :mod:`deploy_kit.backends`, passes its own).
        offered: the precisions this CPU runs (None: :func:`cpu_precisions`); only tests of deploy-kit's
            own choice pass a stand-in.

    Attributes:
        precision: the inference precision that compiled, read back from the compiled model.
        cache_dir: the compiled-model cache used ("" for none).
        compile_s: seconds to compile (or import from the cache) the model.

    Raises:
        MissingDependencyError: openvino is not installed; UsageError: a precision this CPU cannot run,
            or the compiled model reports another precision than asked (one line each).
    """

    slots = 1
    device = "cpu"

    def __init__(self, path: str, *, precision: str = "auto", threads: int = 0, cache_dir: str | None = None,
                 name: str = "", offered: tuple[str, ...] | None = None):
        ov = require(OV_MODULE)
        self.name = name
        self.path = path
        want = resolve_precision(precision, offered if offered is not None else cpu_precisions())
        config = {"INFERENCE_PRECISION_HINT": _OV_TYPE[want], "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        self.cache_dir = default_cache_dir(path) if cache_dir is None else cache_dir
        core = ov.Core()
        if self.cache_dir:
            os.makedirs(self.cache_dir, exist_ok=True)
            core.set_property({"CACHE_DIR": self.cache_dir})
        t0 = time.perf_counter()
        try:
            self.compiled = core.compile_model(path, "CPU", config)
        except RuntimeError as exc:  # OpenVINO's messages run to many lines; the first names the problem
            first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
            raise UsageError(f"OpenVINO cannot compile {path}: {first[:300]}") from None
        self.compile_s = time.perf_counter() - t0
        got = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.precision = _FROM_OV.get(got, got)
        if self.precision != want:  # never report a precision that did not run
            raise UsageError(f"OpenVINO compiled {path} at {self.precision} where {want} was asked; use fp32 (--precision fp32)")
        first_in = self.compiled.inputs[0]
        self.input_name = first_in.get_any_name()
        self._in_type = np.float16 if first_in.get_element_type().get_type_name() == "f16" else np.float32
        shape = first_in.get_partial_shape()
        self.input_shape = tuple(d.get_length() if d.is_static else -1 for d in shape)
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        feed = np.ascontiguousarray(x, dtype=self._in_type)
        # share_outputs=False: copies, so the arrays outlive the next pass (the request reuses its buffers)
        res = self.request.infer({0: feed}, share_inputs=False, share_outputs=False)
        return [np.asarray(res[o], dtype=np.float32) for o in self.compiled.outputs]

    def close(self) -> None:
        self.request = None
        self.compiled = None
