"""The PyTorch FP32 reference as a :class:`~deploy_kit.runners.base.Runner` (build machine).

Eager form (TLC as upstream computes it, PVT embeddings resized at forward time), so it is an
independent implementation from the static graph that was exported.
"""

from __future__ import annotations

import numpy as np

from .runners.base import Runner


class TorchRunner(Runner):
    """Runs the eager PyTorch module of an adapter (``adapter.wrap(model, req, static=False)``).

    Args:
        module: a torch module mapping an (N, C, H, W) input to one output or a tuple of them
            (the pipeline feeds it one sample at a time: each batch element's reference is the
            model on that image alone).
        output_names: names for the outputs, in order.
        dtype: ``float32`` (the reference) or ``float64`` (the conditioning diagnosis).
    """

    name = "pytorch"

    def __init__(self, module, output_names, dtype: str = "float32"):
        import torch

        self.module = module.double() if dtype == "float64" else module
        self.output_names = list(output_names)
        self._dtype = getattr(torch, dtype)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        import torch

        with torch.no_grad():
            out = self.module(torch.from_numpy(np.ascontiguousarray(x)).to(self._dtype))
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
        return [o.numpy() for o in outs]


def reference_runner(adapter, model, req, dtype: str = "float32") -> TorchRunner:
    """The eager reference for ``req`` (TLC as upstream computes it)."""
    return TorchRunner(adapter.wrap(model, req, static=False), adapter.output_names(req), dtype)


def reference_outputs(adapter, model, req, inputs) -> list[list]:
    """Outputs of the eager PyTorch FP32 reference (TLC as upstream computes it) per input."""
    return reference_runner(adapter, model, req).run_many(inputs)


def input_labels(count: int, degradation: str | None, seed: int) -> list[str]:
    """How each parity input was made (printed in reports)."""
    how = f" + {degradation} (seed {seed})" if degradation else " (clean)"
    return [f"sample image {i}{how}" for i in range(count)]


def batch_labels(members, labels: list[str]) -> list[str]:
    """One label per stored input of a batched graph (see :func:`deploy_kit.compare.batch_members`).

    Args:
        members: per stored input, the sample index of each batch element.
        labels: per sample, how it was made (:func:`input_labels`).

    Returns:
        The sample labels themselves at batch 1 (one sample per input, as before batches
        existed); else ``batch i: <label>, <label>, …`` in element order.
    """
    if all(len(m) == 1 for m in members):
        return [labels[m[0]] for m in members]
    return [f"batch {i}: " + ", ".join(labels[k] for k in m) for i, m in enumerate(members)]
