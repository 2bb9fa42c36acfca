"""TensorRT for RTX: builds engines ahead of time, also on a machine without a GPU (CPU-only AOT)."""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any, Iterable

from ..errors import UsageError
from ._trt import EngineBackend
from .base import BuildOptions

# The GPUs TensorRT-RTX runs on: the compute capabilities its support matrix lists, 7.5, 8.6, 8.9
# and 12.0 (1.0 to 1.7), and 12.1 (GB10) from 1.5
# (https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/getting-started/support-matrix.html).
# Data-centre GPUs (A100 sm80, H100/H200 sm90) are not among them; 1.7's ComputeCapability enum has
# an SM80 member all the same, which no support matrix lists, so deploy-kit neither builds for it nor
# runs there. A target is offered only where the installed enum has it (TensorRTRTX.targets).
RTX_TARGETS = {"sm75": "SM75", "sm86": "SM86", "sm89": "SM89", "sm120": "SM120", "sm121": "SM121"}
# what a build that names no target covers: "portable across devices with compute capabilities 8.6,
# 8.9, and 12.0"; Turing (7.5) only when asked for (the same support matrix's notes)
DEFAULT_TARGETS = ("sm86", "sm89", "sm120")


@dataclass(frozen=True)
class RTXBuildOptions(BuildOptions):
    """What a TensorRT-RTX build takes beyond its graph.

    Attributes:
        compute_capabilities: the GPUs to build for (``sm86``, ``sm120``, ...; any case, duplicates
            dropped); empty: :data:`DEFAULT_TARGETS`. Checked against the installed version's
            targets when the build starts.
    """

    compute_capabilities: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # any iterable of names in, a tuple out: the dataclass stays hashable and immutable
        object.__setattr__(self, "compute_capabilities", tuple(str(t) for t in self.compute_capabilities))


class TensorRTRTX(EngineBackend):
    """TensorRT for RTX: builds ahead of time on a machine without a GPU (CPU-only AOT).

    INT8 is documented only as weight-only GEMM on RTX, so Q/DQ convolutions do not become
    INT8 kernels there; INT8 speed is a TensorRT (desktop, Jetson) feature.
    """

    name = "tensorrt-rtx"
    module = "tensorrt_rtx"
    extra = "rtx"
    distributions = ("tensorrt-rtx-cu13", "tensorrt-rtx-cu12", "tensorrt-rtx")
    builds_without_gpu = True
    label = "TensorRT-RTX"
    wheel = "tensorrt-rtx"
    needs_nvrtc = True  # kernels are compiled on the device when a model runs (JIT)
    build_options_type = RTXBuildOptions
    refused_hints = {"timing_cache": "TensorRT-RTX keeps the kernels it compiles in a runtime cache instead",
                     "dla_core": "DLA exists on Jetson TensorRT only: --backend tensorrt"}

    def major(self) -> str:
        return "rtx" + self.version().split(".")[0]

    def targets(self) -> tuple[str, ...]:
        """The GPU targets (``sm86``, ...) of :data:`RTX_TARGETS` that the installed ComputeCapability enum has."""
        enum = self.trt().ComputeCapability
        return tuple(t for t, member in RTX_TARGETS.items() if hasattr(enum, member))

    def runnable_targets(self) -> tuple[str, ...]:
        return self.targets()

    def target_hint(self) -> str:
        return "build with --backend tensorrt"

    def rebuild_hint(self, gpu: str) -> str:
        return f"rebuild it with deploy-kit build BUNDLE --backend {self.name} --compute-capability {gpu}"

    def build_options(self, *, compute_capability: Iterable[str] | None = None, **refused: object) -> RTXBuildOptions:
        """:class:`RTXBuildOptions` from flag values (``compute_capability``: the repeatable
        ``--compute-capability``; None or (): not given).

        Raises:
            UsageError: a flag TensorRT-RTX does not take (one line).
        """
        self.refuse(refused)
        return RTXBuildOptions(compute_capabilities=tuple(compute_capability or ()))

    def configure(self, trt: ModuleType, builder, config, options: RTXBuildOptions) -> dict[str, Any]:
        # ITimingCache has no effect on RTX and forces a GPU query (blocks CPU-only AOT); the
        # JIT kernels are cached at run time by the runtime cache instead (runners/session.py).
        asked = [t.lower() for t in options.compute_capabilities]
        allowed = self.targets()
        for t in asked:
            if t not in allowed:
                raise UsageError(f"unknown compute capability '{t}' for {self.label} {self.version()}; choose from "
                                 f"{', '.join(allowed)} (data-centre GPUs such as sm80 and sm90: --backend tensorrt)")
        chosen = list(dict.fromkeys(asked))
        if chosen:
            config.num_compute_capabilities = len(chosen)
            for i, t in enumerate(chosen):
                config.set_compute_capability(getattr(trt.ComputeCapability, RTX_TARGETS[t]), i)
        # the manifest records what the plan runs on, so run/verify can tell before opening it
        return {"compute_capabilities": chosen or list(DEFAULT_TARGETS), "default_targets": not chosen,
                "build": "ahead-of-time (CPU)"}
