"""The strongly typed build routine shared by the TensorRT flavours (:mod:`.tensorrt`, :mod:`.tensorrt_rtx`).

Every build is strongly typed: precision comes from the ONNX graph (Casts for FP16, Q/DQ for
INT8), which is the only path TensorRT 11 and TensorRT-RTX accept and also works on TensorRT 10.
Flavour differences (compute capabilities on RTX; timing cache and DLA on TensorRT) are the
subclasses' ``configure`` hooks and nothing else; dispatch is by the real installed version.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..errors import EngineBuildError, UsageError
from ..fsutil import atomic_target
from ..runtime.cuda import gpu_available
from ..runtime.session import EngineRunner
from .base import Backend


@dataclass
class BuildResult:
    plan: str
    seconds: float
    size: int
    backend: str
    version: str
    details: dict[str, Any] = field(default_factory=dict)


class EngineBackend(Backend):
    """One TensorRT flavour. Subclasses set ``name``, ``module``, ``extra`` and override the hooks."""

    engine = True

    def trt(self) -> ModuleType:
        return self.load()

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
        if not self.installed():
            return False, self.missing()
        ok, why = gpu_available()
        return (True, "") if ok else (False, why)

    def can_build(self) -> tuple[bool, str]:
        if not self.installed():
            return False, self.missing()
        return (True, "") if self.builds_without_gpu else self.can_run()

    def open_runner(self, path: str, **options: Any):
        """An :class:`~deploy_kit.runtime.session.EngineRunner` on the plan at ``path`` (needs a GPU).

        Raises:
            UsageError: this runtime cannot execute an engine here (the reason is in the message).
        """
        ok, why = self.can_run()
        if not ok:
            raise UsageError(f"cannot run a {self.name} engine here: {why}")
        return EngineRunner(path, self.trt(), name=self.name, **options)

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
