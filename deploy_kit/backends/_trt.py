"""What the TensorRT flavours (:mod:`.tensorrt`, :mod:`.tensorrt_rtx`) share: the strongly typed build
routine and the decision whether a plan can run on this machine.

Every build is strongly typed: precision comes from the ONNX graph (Casts for FP16, Q/DQ for
INT8), which is the only path TensorRT 11 and TensorRT-RTX accept and also works on TensorRT 10.
Flavour differences (compute capabilities on RTX; timing cache and DLA on TensorRT) are the
subclasses' typed build options, their ``configure`` and ``after_build`` hooks and class attributes;
dispatch is by the real installed version. Every flavour opens its plans with
:class:`EngineRunOptions`.

Whether a plan runs here (:meth:`EngineBackend.can_run_artifact`) is decided before it is opened,
so ``auto`` can fall back to ONNX Runtime and say why: the package imports, a GPU is present, the
NVIDIA driver supports the CUDA major the flavour was built for, the GPU is one the flavour runs on
(TensorRT-RTX: its support matrix), NVRTC is there (TensorRT-RTX compiles kernels at run time), and
for a given plan: it was built by this very version, for this GPU's compute capability, and for a
DLA core the device has.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from ..errors import EngineBuildError, UsageError
from ..fsutil import atomic_target
from ..manifest import Manifest, read_typed
from ..runners import cuda
from ..runners.session import EngineRunner, trt_logger
from .base import Backend, BuildOptions, RunOptions


@dataclass(frozen=True)
class EngineRunOptions(RunOptions):
    """How a plan of any TensorRT flavour is opened (:class:`~deploy_kit.runners.session.EngineRunner`).

    Attributes:
        slots: passes that may be in flight at once (2 lets the copies and the host's work overlap the kernels).
        runtime_cache: TensorRT-RTX: True keeps the kernels compiled at run time in ``<plan>.rtcache``,
            a path keeps them there, False in memory only (:class:`~deploy_kit.runners.session.EngineSession`).

    Raises:
        UsageError: fewer than one slot (one line).
    """

    slots: int = 2
    runtime_cache: bool | str = True

    def __post_init__(self) -> None:
        if int(self.slots) < 1:
            raise UsageError(f"slots must be at least 1; got {self.slots}")


@dataclass
class BuildResult:
    plan: str
    seconds: float
    size: int
    backend: str
    version: str
    details: dict[str, Any] = field(default_factory=dict)


class EngineBackend(Backend):
    """One TensorRT flavour. Subclasses set ``name``, ``module``, ``extra`` and override the hooks.

    Attributes:
        label: how messages name the flavour (``TensorRT``, ``TensorRT-RTX``).
        wheel: the pip name its CUDA-specific wheels start with (``tensorrt`` -> ``tensorrt-cu13``).
        needs_nvrtc: the runtime compiles kernels with NVRTC on the device (TensorRT-RTX).
    """

    engine = True
    label = "TensorRT"
    wheel = "tensorrt"
    needs_nvrtc = False

    def trt(self) -> ModuleType:
        return self.load()

    def version(self) -> str:
        return self.trt().__version__

    def major(self) -> str:
        """Major version used in plan names: ``rtx1``, ``trt10``, ``trt11``."""
        raise NotImplementedError

    build_options_type = BuildOptions  # a flavour with options of its own declares their class
    run_options_type = EngineRunOptions

    def configure(self, trt: ModuleType, builder, config, options: BuildOptions) -> dict[str, Any]:
        """Flavour-specific builder-config settings; returns what it set (for the manifest)."""
        return {}

    def after_build(self, config, options: BuildOptions) -> None:
        """What a flavour keeps of a successful build beyond the plan (TensorRT: its timing cache),
        read from the builder config the plan was built with; called once the plan is written."""
        return None

    def run_options(self, *, slots: int | None = None, runtime_cache: bool | str | None = None,
                    **refused: object) -> EngineRunOptions:
        """:class:`EngineRunOptions` from flag or keyword values (None: the default).

        Raises:
            UsageError: a bad value, or a flag an engine does not take (one line).
        """
        self.refuse(refused)
        return EngineRunOptions(slots=2 if slots is None else int(slots),
                                runtime_cache=True if runtime_cache is None else runtime_cache)

    def runnable_targets(self) -> tuple[str, ...] | None:
        """The GPUs (``sm86``, ...) this flavour's runtime runs on; None: any GPU (TensorRT builds on the
        GPU that runs the plan, so the plan's own record decides)."""
        return None

    def target_hint(self) -> str:
        """What to do on a GPU outside :meth:`runnable_targets`."""
        return ""

    def cuda_major(self) -> int | None:
        """The CUDA major version the installed flavour was built for; None when unknown.

        Read from its pip distribution's name (``tensorrt-cu13``, ``tensorrt-rtx-cu12``) or, for a
        metapackage (``tensorrt``), from the distribution it requires. JetPack's TensorRT (a Debian
        package, no pip metadata) is None: it matches the JetPack's own CUDA.
        """
        import importlib.metadata as md

        for dist in sorted(self.distributions, key=lambda d: re.search(r"cu\d+$", d) is None):
            try:
                md.version(dist)
            except md.PackageNotFoundError:
                continue
            found = re.search(r"cu(\d+)$", dist)
            if found:
                return int(found.group(1))
            for req in md.requires(dist) or []:
                found = re.match(rf"{re.escape(self.wheel)}[-_]cu(\d+)\b", req.replace("_", "-"))
                if found:
                    return int(found.group(1))
        return None

    def can_run(self) -> tuple[bool, str]:
        """Whether an engine of this flavour can be executed here (any plan), and why not.

        Checks, in order: installed; a usable GPU (:func:`deploy_kit.runners.cuda.gpu_available`); the
        driver supports the CUDA major the flavour was built for; the GPU is one the flavour runs on;
        NVRTC present where the runtime compiles kernels (TensorRT-RTX).
        """
        if not self.installed():
            return False, self.missing()
        ok, why = cuda.gpu_available()
        if not ok:
            return False, why
        major, driver = self.cuda_major(), cuda.driver_version()
        if major and driver and driver // 1000 < major:
            need = " (CUDA 13.0 needs driver 580 or newer)" if major == 13 else ""
            return False, (f"{self.name} {self.version()} is built for CUDA {major} but the NVIDIA driver supports CUDA "
                           f"{cuda.dotted(driver)} only: update the driver{need}, or pip install "
                           f"{self.wheel}-cu{driver // 1000}")
        targets = self.runnable_targets()
        gpu = cuda.sm(cuda.device_info())
        if targets is not None and gpu is not None and gpu not in targets:
            return False, f"GPU {gpu} is not a {self.label} target: {', '.join(targets)} - {self.target_hint()}"
        if self.needs_nvrtc:
            majors = [major] if major else [13, 12]
            if not any(cuda.nvrtc(m) for m in majors):
                wheel = "nvidia-cuda-nvrtc" if majors[0] >= 13 else f"nvidia-cuda-nvrtc-cu{majors[0]}"
                return False, (f"libnvrtc.so.{majors[0]} not found: {self.label} compiles its kernels with NVRTC when a "
                               f"model runs; pip install {wheel}, or put the CUDA toolkit's lib64 on LD_LIBRARY_PATH")
        return True, ""

    def can_run_artifact(self, manifest: Manifest | None = None) -> tuple[bool, str]:
        """Whether this machine runs the plan whose sidecar is ``manifest`` (None: any plan of this
        flavour, i.e. :meth:`can_run`), and why not: one line with what to do.

        Beyond :meth:`can_run`: the plan was built by this flavour, by this very version (a plan loads
        only under the version that built it), for this GPU's compute capability (where its manifest
        records them) and for a DLA core this device has.
        """
        ok, why = self.can_run()
        if not ok or manifest is None:
            return ok, why
        problem = self.artifact_problem(manifest)
        return (False, problem) if problem else (True, why)

    def stale(self, manifest: Manifest) -> str | None:
        """Why a plan built by another version of this flavour cannot load here; None when the versions
        match or the manifest records none. ``BUNDLE`` stands for the bundle to rebuild it from."""
        built, here = manifest.backend_version, self.version()
        if built and built != here:
            return (f"it was built by {self.name} {built} and this machine has {self.name} {here} (a plan loads only under "
                    f"the version that built it): rebuild it with deploy-kit build BUNDLE --backend {self.name}")
        return None

    def artifact_problem(self, manifest: Manifest) -> str | None:
        """Why this machine cannot run the plan of ``manifest`` although it can run plans of this flavour;
        None when it can. (:meth:`can_run` is assumed true.)"""
        if manifest.backend is not None and manifest.backend != self.name:
            return f"it is a {manifest.backend} plan, not a {self.name} one"
        stale = self.stale(manifest)
        if stale:
            return stale
        gpu = cuda.sm(cuda.device_info())
        built_for = manifest.compute_capabilities
        if gpu is not None and built_for and gpu not in built_for:
            return f"it was built for {', '.join(built_for)}, not this GPU ({gpu}): {self.rebuild_hint(gpu)}"
        if manifest.dla_core is not None:
            cores = self.dla_cores()
            if manifest.dla_core >= cores:
                return (f"it was built for DLA core {manifest.dla_core} and this device has {cores or 'no'} DLA "
                        f"core{'s' if cores != 1 else ''}: rebuild it with deploy-kit build BUNDLE --backend {self.name}")
        return None

    def rebuild_hint(self, gpu: str) -> str:
        """What to do with a plan built for other GPUs than ``gpu``."""
        return f"rebuild it on this GPU with deploy-kit build BUNDLE --backend {self.name}"

    def dla_cores(self) -> int:
        """DLA cores of this device (Jetson Orin/Xavier: 1 or 2; 0 elsewhere)."""
        trt = self.trt()
        return int(trt.Runtime(trt_logger(trt)).num_DLA_cores)

    def can_build(self) -> tuple[bool, str]:
        if not self.installed():
            return False, self.missing()
        return (True, "") if self.builds_without_gpu else self.can_run()

    def open_runner(self, path: str, options: EngineRunOptions | None = None, *, manifest: Manifest | None = None):
        """An :class:`~deploy_kit.runners.session.EngineRunner` on the plan at ``path`` (needs a GPU).

        Args:
            options: :class:`EngineRunOptions` (default: two slots, the runtime cache beside the plan).
            manifest: the plan's sidecar (default: ``<path>.json`` when it exists): the plan is checked
                against this machine (:meth:`can_run_artifact`) and a DLA plan opened on its core.

        Raises:
            UsageError: this machine cannot run the plan (the reason and what to do are in the message),
                or another backend's run options.
            ManifestError: a damaged sidecar.
        """
        opts = self.check_run_options(options)
        if manifest is None and os.path.isfile(path + ".json"):
            manifest = read_typed(path + ".json")
        ok, why = self.can_run_artifact(manifest)
        if not ok:
            raise UsageError(f"cannot run a {self.name} engine here: {why}")
        dla = manifest.dla_core if manifest is not None else None
        return EngineRunner(path, self.trt(), name=self.name, dla_core=dla, slots=opts.slots,
                            runtime_cache=opts.runtime_cache)

    def build(self, onnx_path: str, plan_path: str, options: BuildOptions | None = None, *,
              workspace_gib: float = 4.0) -> BuildResult:
        """Parse ``onnx_path`` into a strongly typed network and serialize the engine.

        The plan is written atomically and never has bytes prepended (trtexec/Triton load it
        as is); a JSON sidecar is the pipeline's job. Messages go through the process's one logger
        of this TensorRT module (:func:`~deploy_kit.runners.session.trt_logger`), recorded for this
        build only.

        Args:
            options: this flavour's build options (:attr:`build_options_type`; None: its defaults).
            workspace_gib: the builder's workspace memory pool.

        Raises:
            MissingDependencyError: the backend's package is not installed.
            UsageError: another backend's build options, or a setting this machine or version refuses.
            EngineBuildError: the parser or builder rejected the network (messages included).
        """
        options = self.check_build_options(options)
        trt = self.trt()
        logger = trt_logger(trt)
        with logger.capture() as log:
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
                msg = " | ".join(log.errors[-3:]) or "no message"
                raise EngineBuildError(f"{self.name} failed to build {onnx_path}: {msg[:400]}")
        with atomic_target(plan_path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(memoryview(serialized))
        seconds = time.perf_counter() - start
        self.after_build(config, options)
        details["warnings"] = log.warnings[-5:]
        return BuildResult(plan_path, seconds, os.path.getsize(plan_path), self.name, self.version(), details)
