"""ONNX Runtime: runs any deploy-kit graph, on the CPU or through its CUDA execution provider."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..runners.ort import ORT_LEVELS, ORT_PROVIDERS, OrtRunner, ort_providers_available
from .base import Backend, RunOptions

DEVICES = ("auto", *ORT_PROVIDERS)  # auto: its CUDA EP when this onnxruntime has one, else the CPU


@dataclass(frozen=True)
class OrtRunOptions(RunOptions):
    """How ONNX Runtime runs a graph (:class:`~deploy_kit.runners.ort.OrtRunner`).

    Attributes:
        threads: intra-op threads (0: ONNX Runtime's default, one per physical core); inter-op is then 1.
        device: ``auto`` (its CUDA execution provider where this onnxruntime has it), ``cpu`` or ``cuda``.
        level: graph optimisation level: ``all`` (ONNX Runtime's default), ``extended``, ``basic``, ``disabled``.
        spinning: whether idle intra-op threads spin-wait (ONNX Runtime's own default) or sleep (deploy-kit's
            default, False), leaving the cores to the runtime's decode, blend and encode threads: in the
            pipeline on 2 cores, spinning off took 0.69-0.82x the time per image of spinning on.

    The defaults are chosen by measurement (docs/cpu.md, ``python benchmarks/bench_cpu.py --only ort``).

    Raises:
        UsageError: a negative thread count, an unknown device or level (one line).
    """

    threads: int = 0
    device: str = "auto"
    level: str = "all"
    spinning: bool = False

    def __post_init__(self) -> None:
        if int(self.threads) < 0:
            raise UsageError(f"threads must be 0 (ONNX Runtime's default) or more; got {self.threads}")
        if self.device not in DEVICES:
            raise UsageError(f"unknown ONNX Runtime device '{self.device}'; choose one of: {', '.join(DEVICES)}")
        if self.level not in ORT_LEVELS:
            raise UsageError(f"unknown ONNX Runtime optimisation level '{self.level}'; choose one of: {', '.join(ORT_LEVELS)}")


class OnnxRuntime(Backend):
    """ONNX Runtime (:class:`deploy_kit.runners.ort.OrtRunner`): the CPU parity reference and the
    runtime's fallback where no engine can run."""

    name = "onnxruntime"
    module = "onnxruntime"
    extra = "ort"
    distributions = ("onnxruntime", "onnxruntime-gpu")
    run_options_type = OrtRunOptions

    def providers(self) -> list[str]:
        """Execution providers of the installed onnxruntime ([] when it is not installed)."""
        return ort_providers_available()

    def has_cuda(self) -> bool:
        return "CUDAExecutionProvider" in self.providers()

    def device_for(self, options: "OrtRunOptions | None" = None) -> str:
        """``cpu`` or ``cuda``: where a runner opened with ``options`` runs (``auto``: its CUDA EP when present)."""
        device = self.check_run_options(options).device
        return ("cuda" if self.has_cuda() else "cpu") if device == "auto" else device

    def can_run(self) -> tuple[bool, str]:
        providers = self.providers()
        if not providers:
            return False, self.missing()
        return True, "CUDA EP available" if "CUDAExecutionProvider" in providers else "CPU"

    def run_options(self, *, threads: int | None = None, device: str | None = None, level: str | None = None,
                    spinning: bool | None = None, **refused: object) -> OrtRunOptions:
        """:class:`OrtRunOptions` from flag or keyword values (None: the default).

        Raises:
            UsageError: a bad value, or a flag ONNX Runtime does not take (one line).
        """
        self.refuse(refused)
        default = OrtRunOptions()
        return OrtRunOptions(threads=0 if threads is None else int(threads), device=device or "auto",
                             level=level or default.level, spinning=default.spinning if spinning is None else bool(spinning))

    def open_runner(self, path: str, options: OrtRunOptions | None = None, *, manifest=None) -> OrtRunner:
        """An :class:`~deploy_kit.runners.ort.OrtRunner` on the graph at ``path``.

        Args:
            options: :class:`OrtRunOptions` (default: ONNX Runtime's thread count, its CUDA EP when present).
            manifest: unused (a graph runner runs any graph it can run at all).

        Raises:
            UsageError: another backend's run options.
        """
        opts = self.check_run_options(options)
        return OrtRunner(path, name=self.name, device=opts.device, threads=opts.threads, level=opts.level,
                         spinning=opts.spinning)
