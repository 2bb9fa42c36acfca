"""The one backend registry: every backend that runs (and, for engines, builds) a model.

Each backend is one module of this package and declares its name there, once:

* :mod:`.onnxruntime` — ONNX Runtime on a graph (CPU, or its CUDA execution provider);
* :mod:`.openvino` — OpenVINO's CPU plugin on a graph (FP32, BF16 on AMX/AVX-512-BF16, FP16 on ARM);
* :mod:`.tensorrt` — TensorRT 10/11: builds on the target GPU (desktop, Jetson, DLA);
* :mod:`.tensorrt_rtx` — TensorRT for RTX: builds ahead of time, even without a GPU.

A backend says whether it can run here and why not (:meth:`Backend.can_run`), whether it can
build here (:meth:`Backend.can_build`), builds (engines) and opens a runner
(:meth:`Backend.open_runner`), each with its typed, frozen options declared in its own module
(:class:`~.tensorrt.TensorRTBuildOptions`, :class:`~.tensorrt_rtx.RTXBuildOptions`,
:class:`~.onnxruntime.OrtRunOptions`, :class:`~.openvino.OpenVINORunOptions`, :class:`~._trt.EngineRunOptions`), made from flags by
:meth:`Backend.build_options` / :meth:`Backend.run_options`. The CLI choices, ``env``, ``bench``,
``verify``, ``run``, ``build``, ``triton`` and the export pipeline read this registry; nothing else
spells a backend's name.
Importing it is light (numpy and ctypes through the runners; no onnxruntime, OpenVINO or TensorRT):
each backend imports its package when asked. ``_ALL`` is the preference order: engines first; of the
graph runners ``auto`` takes ONNX Runtime with a CUDA provider, then OpenVINO where
:meth:`.openvino.OpenVINO.preferred_on_cpu` says so, then ONNX Runtime on the CPU
(:func:`deploy_kit.runtime.target.bundle_runner`).
"""

from __future__ import annotations

from ..errors import UsageError
from ._trt import EngineRunOptions
from .base import Backend, BuildOptions, RunOptions, RunOptionsArg, as_run_options
from .onnxruntime import OnnxRuntime, OrtRunOptions
from .openvino import OpenVINO, OpenVINORunOptions
from .tensorrt import TensorRT, TensorRTBuildOptions
from .tensorrt_rtx import RTXBuildOptions, TensorRTRTX

_ALL: tuple[Backend, ...] = (TensorRTRTX(), TensorRT(), OnnxRuntime(), OpenVINO())
REGISTRY: dict[str, Backend] = {b.name: b for b in _ALL}

ONNXRUNTIME = OnnxRuntime.name
OPENVINO = OpenVINO.name
TENSORRT = TensorRT.name
TENSORRT_RTX = TensorRTRTX.name


AUTO = "auto"  # what --backend means when it lets deploy-kit choose


def choices() -> tuple[str, ...]:
    """What ``--backend`` accepts where a bundle is run (verify, run): ``auto`` and every backend."""
    return (AUTO, *names())


def names(*, engines: bool | None = None) -> tuple[str, ...]:
    """Backend names in preference order; ``engines=True`` only engine (plan) backends, False only graph runners."""
    return tuple(b.name for b in _ALL if engines is None or b.engine == engines)


def get(name: str) -> Backend:
    """The backend called ``name``.

    Raises:
        UsageError: an unknown name (the message lists the known ones).
    """
    if name not in REGISTRY:
        raise UsageError(f"unknown backend '{name}'; choose one of: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def status() -> dict[str, tuple[bool, str]]:
    """name -> (can run a model here, why not / what it would use), for every backend."""
    return {b.name: b.can_run() for b in _ALL}


def builders() -> list[Backend]:
    """Engine backends whose package is installed here (they may still need a GPU to build)."""
    return [b for b in _ALL if b.engine and b.installed()]


def default_builder(*, prefer_device: bool = False) -> Backend | None:
    """The engine backend ``auto`` means: the export pipeline prefers TensorRT-RTX (it builds without a
    GPU); ``build`` on a device (``prefer_device``) prefers TensorRT (the device's own runtime)."""
    order = [b for b in builders() if not (prefer_device and b.builds_without_gpu)] + \
            [b for b in builders() if prefer_device and b.builds_without_gpu]
    return order[0] if order else None


__all__ = ["Backend", "REGISTRY", "AUTO", "choices", "ONNXRUNTIME", "OPENVINO", "TENSORRT", "TENSORRT_RTX", "names", "get", "status", "builders",
           "default_builder", "BuildOptions", "RunOptions", "RunOptionsArg", "as_run_options", "EngineRunOptions",
           "OrtRunOptions", "OpenVINORunOptions", "TensorRTBuildOptions", "RTXBuildOptions"]
