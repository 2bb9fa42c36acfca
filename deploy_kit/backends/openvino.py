"""OpenVINO: runs any deploy-kit graph on the CPU (x86-64 and ARM), at FP32, or BF16 / FP16 where the CPU
has them; the compiled model is cached so a second start skips the compile.

What it brings, the precisions, ``auto``'s rule and the measurements behind them: docs/cpu.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError
from ..runners.openvino import PRECISIONS, OpenVINORunner, cpu_facts, cpu_precisions, ov_available
from .base import Backend, RunOptions


@dataclass(frozen=True)
class OpenVINORunOptions(RunOptions):
    """How OpenVINO runs a graph (:class:`~deploy_kit.runners.openvino.OpenVINORunner`).

    Attributes:
        precision: ``auto`` (BF16 where the CPU has AMX/AVX-512-BF16, FP16 on an ARM CPU with FP16
            arithmetic, else FP32), ``fp32``, ``bf16`` or ``fp16``. A precision the CPU cannot run is
            refused in one line when the runner opens (OpenVINO itself would compile FP32 silently).
        threads: inference threads (0: OpenVINO's default, one per physical core).
        cache_dir: the compiled-model cache folder; None: ``openvino-cache/`` beside the graph (inside
            the bundle) when writable, else ``~/.cache/deploy-kit/openvino``; "": no cache.

    Raises:
        UsageError: an unknown precision or a negative thread count (one line).
    """

    precision: str = "auto"
    threads: int = 0
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise UsageError(f"unknown OpenVINO precision '{self.precision}'; choose one of: {', '.join(PRECISIONS)}")
        if int(self.threads) < 0:
            raise UsageError(f"threads must be 0 (OpenVINO's default) or more; got {self.threads}")


class OpenVINO(Backend):
    """OpenVINO's CPU plugin (:class:`deploy_kit.runners.openvino.OpenVINORunner`): the CPU runner
    ``auto`` prefers over ONNX Runtime's CPU provider (:meth:`preferred_on_cpu`)."""

    name = "openvino"
    module = "openvino"
    extra = "openvino"
    distributions = ("openvino",)
    run_options_type = OpenVINORunOptions

    def installed(self) -> bool:
        return ov_available()

    def precisions(self) -> tuple[str, ...]:
        """Inference precisions its CPU plugin runs natively here, fastest first (() when not installed)."""
        if not self.installed():
            return ()
        return cpu_precisions()

    def can_run(self) -> tuple[bool, str]:
        if not self.installed():
            return False, self.missing()
        arch, _, cpu = cpu_facts()
        offered = cpu_precisions()
        lacks = "" if "bf16" in offered or arch != "intel64" else " (no BF16: this CPU lacks AMX and AVX-512-BF16)"
        return True, f"CPU ({cpu}, {arch}): {', '.join(p.upper() for p in offered)}{lacks}"

    def preferred_on_cpu(self, precision: str = "fp32") -> tuple[bool, str]:
        """Whether ``auto`` runs a bundle's graph on OpenVINO rather than ONNX Runtime's CPU provider, and why.

        The rule: wherever OpenVINO is installed on an x86-64 CPU. Measured on an AVX2-only AMD EPYC
        (FP32 both; ``python benchmarks/bench_cpu.py``, table in docs/cpu.md), OpenVINO FP32 was 1.19-1.62x
        faster than ONNX Runtime FP32 on NAFNet-w32 (256x256, 720x1280) and Restormer (256x256), at the same
        FP32 accuracy, so FP32 alone justifies it; where the CPU has
        BF16 (AMX, AVX-512-BF16) the ``auto`` precision widens the gap. On ARM deploy-kit has measured
        neither, so ``auto`` keeps ONNX Runtime there (``--backend openvino`` runs it). ONNX Runtime with a
        CUDA provider comes first (a GPU), and built engines before both. An INT8 (Q/DQ) graph stays on ONNX
        Runtime: OpenVINO's INT8 run of the tiny NAFNet INT8 bundle failed its INT8 gate on this AVX2 CPU
        (23.6 dB < 35 dB, tests/integration/test_bundle.py's bundle) where ONNX Runtime passes it.

        Args:
            precision: the graph's precision (the bundle manifest's).

        Returns:
            (preferred, one line for ``auto``'s note).
        """
        if not self.installed():
            return False, self.missing()
        if precision == "int8":
            return False, ("auto keeps INT8 (Q/DQ) graphs on ONNX Runtime: OpenVINO's INT8 run failed the INT8 gate "
                           f"on an AVX2 CPU (docs/cpu.md); --backend {self.name} runs it")
        arch = cpu_facts()[0]
        if arch != "intel64":
            return False, (f"auto prefers OpenVINO on x86-64 CPUs only (measured faster there); on {arch} it is "
                           f"not measured by deploy-kit: --backend {self.name} runs it")
        return True, ("auto prefers it on x86-64 CPUs: its FP32 measured 1.2-1.6x faster than ONNX Runtime FP32 on "
                      "NAFNet and Restormer (docs/cpu.md)")

    def run_options(self, *, precision: str | None = None, threads: int | None = None, cache_dir: str | None = None,
                    **refused: object) -> OpenVINORunOptions:
        """:class:`OpenVINORunOptions` from flag or keyword values (None: the default).

        Raises:
            UsageError: a bad value, or a flag OpenVINO does not take (one line).
        """
        self.refuse(refused)
        return OpenVINORunOptions(precision=precision or "auto", threads=0 if threads is None else int(threads),
                                  cache_dir=cache_dir)

    def open_runner(self, path: str, options: OpenVINORunOptions | None = None, *, manifest=None) -> OpenVINORunner:
        """An :class:`~deploy_kit.runners.openvino.OpenVINORunner` on the graph at ``path``.

        Args:
            options: :class:`OpenVINORunOptions` (default: ``auto`` precision, OpenVINO's threads, the
                cache beside the graph).
            manifest: unused (a graph runner runs any graph it can run at all).

        Raises:
            UsageError: another backend's run options; a precision this CPU cannot run.
            MissingDependencyError: openvino is not installed (names the extra).
        """
        opts = self.check_run_options(options)
        return OpenVINORunner(path, precision=opts.precision, threads=opts.threads, cache_dir=opts.cache_dir,
                              name=self.name)
