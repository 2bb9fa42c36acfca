"""The engine interface and the build routine shared by every TensorRT flavour.

Every build is strongly typed: precision comes from the ONNX graph (Casts for FP16, Q/DQ for
INT8), which is the only path TensorRT 11 and TensorRT-RTX accept and also works on TensorRT 10.
Flavour differences (compute capabilities and runtime cache on RTX; timing cache, DLA on
TensorRT) are the two subclasses' ``configure`` hooks in ``flavours.py`` and nothing else.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..errors import EngineBuildError, UsageError
from ..fsutil import atomic_target

BACKENDS = ("tensorrt-rtx", "tensorrt")


@dataclass
class BuildResult:
    plan: str
    seconds: float
    size: int
    backend: str
    version: str
    details: dict[str, Any] = field(default_factory=dict)


class EngineBackend:
    """One TensorRT flavour. Subclasses set ``name``, ``module``, ``suffix`` and override hooks."""

    name = ""
    module = ""  # python module imported on demand (deploy_kit._deps.require)

    def trt(self) -> ModuleType:
        from .._deps import require

        return require(self.module)

    def version(self) -> str:
        return self.trt().__version__

    def major(self) -> str:
        """Major version used in plan names: ``rtx1``, ``trt10``, ``trt11``."""
        raise NotImplementedError

    def configure(self, trt: ModuleType, builder, config, options: dict[str, Any]) -> dict[str, Any]:
        """Flavour-specific builder-config settings; returns what it set (for the manifest)."""
        return {}

    def can_run(self) -> tuple[bool, str]:
        """Whether an engine can be executed here, and why not."""
        from ..runtime.cuda import gpu_available

        ok, why = gpu_available()
        if not ok:
            return False, why
        try:
            self.trt()
        except Exception as exc:  # noqa: BLE001
            return False, str(exc)
        return True, ""

    def build(self, onnx_path: str, plan_path: str, *, workspace_gib: float = 4.0, **options: Any) -> BuildResult:
        """Parse ``onnx_path`` into a strongly typed network and serialize the engine.

        The plan is written atomically and never has bytes prepended (trtexec/Triton load it
        as is); a JSON sidecar is the pipeline's job.

        Raises:
            MissingDependencyError: the backend's package is not installed.
            EngineBuildError: the parser or builder rejected the network (messages included).
        """
        trt = self.trt()
        logger = _RecordingLogger(trt)
        builder = trt.Builder(logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        start = time.perf_counter()
        # parse_from_file resolves external data next to the model
        if not parser.parse_from_file(os.path.abspath(onnx_path)):
            errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
            raise EngineBuildError(f"{self.name} could not parse {onnx_path}: {' | '.join(errors)[:400]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
        details = self.configure(trt, builder, config, options)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            msg = " | ".join(logger.errors[-3:]) or "no message"
            raise EngineBuildError(f"{self.name} failed to build {onnx_path}: {msg[:400]}")
        with atomic_target(plan_path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(memoryview(serialized))
        details["warnings"] = logger.warnings[-5:]
        return BuildResult(plan_path, time.perf_counter() - start, os.path.getsize(plan_path), self.name, self.version(), details)


def _RecordingLogger(trt: ModuleType):
    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.warnings: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.ERROR, trt.ILogger.Severity.INTERNAL_ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.Severity.WARNING:
                self.warnings.append(msg)

    return Logger()


def get_backend(name: str) -> EngineBackend:
    """Backend by CLI name (``tensorrt-rtx`` or ``tensorrt``).

    Raises:
        UsageError: unknown name.
    """
    from .flavours import TensorRT, TensorRTRTX

    table = {"tensorrt-rtx": TensorRTRTX, "tensorrt": TensorRT}
    if name not in table:
        raise UsageError(f"unknown backend '{name}'; choose one of: {', '.join(BACKENDS)}, none")
    return table[name]()


def build_engine(target: str, backend: str, *, out_path: str | None = None, progress=None, **options: Any) -> BuildResult:
    """``deploy-kit build``: an engine from a bundle (on the device) or a deploy-kit ONNX, plus its manifest.

    The same :meth:`EngineBackend.build` the export pipeline uses; torch-free (a bundle's manifest
    carries the metadata; an ONNX's is read with the onnx package when it is installed).

    Args:
        target: a bundle folder (or its manifest.json) or an ``.onnx``.
        backend: ``tensorrt`` or ``tensorrt-rtx``.
        out_path: plan path (default: inside the bundle, or next to the ONNX).
        options: dla_core, compute_capabilities, timing_cache.

    Raises:
        ManifestError: a tampered bundle; UsageError/EngineBuildError as the build raises them.
    """
    from ..bundle import is_bundle, open_bundle
    from ..manifest import ManifestError, plan_manifest, write_manifest

    eng = get_backend(backend)
    if is_bundle(target):
        b = open_bundle(target)
        onnx_path, meta = b.onnx, b.manifest
        base = os.path.join(b.path, b.manifest["onnx"][: -len(".onnx")])
    else:
        if not target.endswith(".onnx") or not os.path.isfile(target):
            raise UsageError(f"{target}: build takes a bundle folder or an .onnx file")
        onnx_path, base = target, target[: -len(".onnx")]
        meta = _onnx_metadata(target)
    plan = out_path or f"{base}.{eng.major()}.plan"
    if progress:
        progress(f"building {plan} with {eng.name} {eng.version()} ...")
    res = eng.build(onnx_path, plan, **{k: v for k, v in options.items() if v not in (None, ())})
    try:
        write_manifest(plan + ".json", plan_manifest(meta, meta.get("precision", "fp32"), onnx_path, plan, eng, res))
    except ManifestError as exc:
        if progress:
            progress(f"note: no manifest written ({exc}); 'verify'/'run' need one, so build from a deploy-kit export")
    return res


def _onnx_metadata(path: str) -> dict[str, Any]:
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        return {}  # the device core install has no onnx package: build without a manifest
    from ..export import read_metadata

    return read_metadata(path)  # a damaged file is its one-line UsageError
