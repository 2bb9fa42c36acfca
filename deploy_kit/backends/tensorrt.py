"""TensorRT 10.x / 11.x: builds on the target GPU (desktop, JetPack; DLA on Jetson)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from ..errors import EngineBuildError, UsageError
from ..fsutil import write_bytes
from ..runners import cuda
from ..runners.session import trt_logger
from ._trt import BuildResult, EngineBackend
from .base import BuildOptions


@dataclass(frozen=True)
class TensorRTBuildOptions(BuildOptions):
    """What a TensorRT build takes beyond its graph.

    Attributes:
        timing_cache: a timing cache file: read if present, written after a successful build.
        dla_core: the Jetson DLA core to build for (layers the DLA cannot run fall back to the GPU);
            None builds for the GPU.

    Raises:
        UsageError: a negative DLA core (one line).
    """

    timing_cache: str | None = None
    dla_core: int | None = None

    def __post_init__(self) -> None:
        if self.dla_core is not None and int(self.dla_core) < 0:
            raise UsageError(f"--dla-core must be 0 or 1; got {self.dla_core}")


class TensorRT(EngineBackend):
    """TensorRT 10.x (JetPack 6/7) and 11.x (desktop, JetPack 7.2.2+): builds on the target GPU."""

    name = "tensorrt"
    module = "tensorrt"
    extra = "tensorrt"
    distributions = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12")
    build_options_type = TensorRTBuildOptions
    refused_hints = {"compute_capability": "a TensorRT plan is built for the GPU it is built on"}

    def missing(self) -> str:
        return f"{self.module} is not installed (pip install 'deploy-kit[{self.extra}]', or JetPack's TensorRT on a Jetson)"

    def major(self) -> str:
        return "trt" + self.version().split(".")[0]

    def build_options(self, *, timing_cache: str | None = None, dla_core: int | None = None,
                      **refused: object) -> TensorRTBuildOptions:
        """:class:`TensorRTBuildOptions` from flag values (None: not given).

        Raises:
            UsageError: a bad value, or a flag TensorRT does not take (one line).
        """
        self.refuse(refused)
        return TensorRTBuildOptions(timing_cache=timing_cache or None,
                                    dla_core=None if dla_core is None else int(dla_core))

    def configure(self, trt: ModuleType, builder, config, options: TensorRTBuildOptions) -> dict[str, Any]:
        out: dict[str, Any] = {}
        # a TensorRT plan runs on the GPU kind it was built on: recorded, so run/verify can tell
        gpu = cuda.sm(cuda.device_info())
        if gpu:
            out["compute_capabilities"] = [gpu]
        if options.timing_cache:
            path = options.timing_cache
            blob = open(path, "rb").read() if os.path.exists(path) else b""
            # the config keeps the cache alive (keep_alive on set_timing_cache in TensorRT's Python
            # bindings, python/src/infer/pyCore.cpp of https://github.com/NVIDIA/TensorRT); after_build
            # gets it back from the config, so nothing is kept in the options
            config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False)
            out["timing_cache"] = path
        dla = options.dla_core
        if dla is not None:
            if builder.num_DLA_cores == 0:
                raise UsageError("--dla-core was given but this device has no DLA (Jetson Orin/Xavier only)")
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = int(dla)
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
            # layer names and devices in the engine inspector (which layers fell back to the GPU)
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
            out["dla_core"] = int(dla)
        return out

    def after_build(self, config, options: TensorRTBuildOptions) -> None:
        """Write the timing cache the build used and extended (IBuilderConfig.get_timing_cache: the one
        set in :meth:`configure`), for the next build."""
        if options.timing_cache:
            write_bytes(options.timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))

    def build(self, onnx_path: str, plan_path: str, options: TensorRTBuildOptions | None = None, *,
              workspace_gib: float = 4.0) -> BuildResult:
        ok, why = self.can_run()
        if not ok:
            raise EngineBuildError(
                f"the tensorrt backend builds on the target GPU and none is usable here ({why}); "
                "use --backend tensorrt-rtx for an ahead-of-time build, or build on the device"
            )
        options = self.check_build_options(options)
        result = super().build(onnx_path, plan_path, options, workspace_gib=workspace_gib)
        if options.dla_core is not None:
            result.details["dla_layers"] = dla_report(self.trt(), plan_path, options.dla_core)
        return result


def dla_report(trt: ModuleType, plan_path: str, dla_core: int | None = None) -> dict[str, list[str]]:
    """Which layers of a DLA engine run on the DLA and which fell back to the GPU.

    Reads the engine inspector's JSON (built with ProfilingVerbosity.DETAILED): TensorRT packs
    everything the DLA runs into "ForeignNode" layers (reported with the ONNX layers they hold);
    every other layer runs on the GPU. Runs on the device only (deserializing needs the GPU).

    Args:
        dla_core: the DLA core the plan was built for (the runtime's DLA_core is set to it first).
    """
    import json

    runtime = trt.Runtime(trt_logger(trt))  # the process's one logger (a second one would get nothing)
    if dla_core is not None:
        runtime.DLA_core = int(dla_core)  # before deserializing: the engine is placed on that core
    with open(plan_path, "rb") as fh:
        engine = runtime.deserialize_cuda_engine(fh.read())
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    dla, gpu = [], []
    for layer in info.get("Layers", []):
        name = layer.get("Name", str(layer)) if isinstance(layer, dict) else str(layer)
        kind = (layer.get("LayerType", "") if isinstance(layer, dict) else "") + name
        (dla if "ForeignNode" in kind or "DLA" in kind else gpu).append(name)
    return {"dla": dla, "gpu": gpu}
