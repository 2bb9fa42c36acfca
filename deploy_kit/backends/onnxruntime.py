"""ONNX Runtime: runs any deploy-kit graph, on the CPU or through its CUDA execution provider."""

from __future__ import annotations

from typing import Any

from ..runners.ort import OrtRunner, ort_providers_available
from .base import Backend


class OnnxRuntime(Backend):
    """ONNX Runtime (:class:`deploy_kit.runners.ort.OrtRunner`): the CPU parity reference and the
    runtime's fallback where no engine can run."""

    name = "onnxruntime"
    module = "onnxruntime"
    extra = "ort"
    distributions = ("onnxruntime", "onnxruntime-gpu")

    def providers(self) -> list[str]:
        """Execution providers of the installed onnxruntime ([] when it is not installed)."""
        return ort_providers_available()

    def has_cuda(self) -> bool:
        return "CUDAExecutionProvider" in self.providers()

    def can_run(self) -> tuple[bool, str]:
        providers = self.providers()
        if not providers:
            return False, self.missing()
        return True, "CUDA EP available" if "CUDAExecutionProvider" in providers else "CPU"

    def open_runner(self, path: str, **options: Any):
        """An :class:`~deploy_kit.runners.ort.OrtRunner` (``device`` defaults to ``auto``: its CUDA EP when present)."""
        options.setdefault("device", "auto")
        return OrtRunner(path, name=self.name, **options)
