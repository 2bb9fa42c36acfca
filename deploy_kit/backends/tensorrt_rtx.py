"""TensorRT for RTX: builds engines ahead of time, also on a machine without a GPU (CPU-only AOT)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from ..errors import UsageError
from ._trt import EngineBackend

# TensorRT-RTX ahead-of-time targets (CPU-only build when no CURRENT is requested).
RTX_TARGETS = {"sm75": "SM75", "sm80": "SM80", "sm86": "SM86", "sm89": "SM89", "sm120": "SM120"}


class TensorRTRTX(EngineBackend):
    """TensorRT for RTX: builds ahead of time on a machine without a GPU (CPU-only AOT).

    INT8 is documented only as weight-only GEMM on RTX, so Q/DQ convolutions do not become
    INT8 kernels there; INT8 speed is a TensorRT (desktop, Jetson) feature.
    """

    name = "tensorrt-rtx"
    module = "tensorrt_rtx"
    extra = "rtx"
    distributions = ("tensorrt-rtx-cu13", "tensorrt-rtx")
    builds_without_gpu = True

    def major(self) -> str:
        return "rtx" + self.version().split(".")[0]

    def configure(self, trt: ModuleType, builder, config, options: dict[str, Any]) -> dict[str, Any]:
        # ITimingCache has no effect on RTX and forces a GPU query (blocks CPU-only AOT); the
        # JIT kernels are cached at run time by the runtime cache instead (runtime/session.py).
        targets = options.get("compute_capabilities") or ()
        chosen = []
        if targets:
            config.num_compute_capabilities = len(targets)
            for i, t in enumerate(targets):
                key = RTX_TARGETS.get(t.lower())
                if key is None:
                    raise UsageError(f"unknown compute capability '{t}'; choose from {', '.join(RTX_TARGETS)}")
                config.set_compute_capability(getattr(trt.ComputeCapability, key), i)
                chosen.append(t.lower())
        return {"compute_capabilities": chosen or ["default (sm86, sm89, sm120 portable)"], "build": "ahead-of-time (CPU)"}
