"""Parity runs on the build machine: ONNX Runtime outputs of a graph (in a child process next to
PyTorch) and the difference heatmap. The comparison itself (metrics, gates, reports, batches) is
:mod:`deploy_kit.compare`, which the device's ``verify`` uses without this module.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .compare import batch_members, run_samples, stack_batches, unstack_outputs
from .fsutil import atomic_target
from .runners.ort import OrtRunner, run_isolated


def graph_batch(path: str) -> int:
    """The static batch of an ONNX graph.

    Args:
        path: an ONNX file (read without its external data).

    Returns:
        The first dimension of the graph's (first non-initializer) input; 1 when it is not a
        fixed number.
    """
    import onnx

    model = onnx.load(path, load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    graph_input = next(i for i in model.graph.input if i.name not in inits)
    dim = graph_input.type.tensor_type.shape.dim[0]
    return int(dim.dim_value) if dim.HasField("dim_value") and dim.dim_value > 0 else 1


def run_onnxruntime(path: str, inputs: Sequence[np.ndarray], input_name: str = "input", threads: int = 0,
                    isolated: bool = False, batch: int | None = None) -> list[list[np.ndarray]]:
    """ONNX Runtime (CPU) outputs of ``path`` per input, through the runner interface.

    Args:
        inputs: arrays of the graph's input shape (N, C, H, W); or single samples (1, C, H, W) for
            a graph of batch N > 1, which are packed N at a time and answered per sample
            (:func:`deploy_kit.compare.run_samples`): ``verify`` of a batched ONNX rebuilds single sample images.
        isolated: compute in a fresh process (:func:`deploy_kit.runners.ort.run_isolated`),
            so ONNX Runtime's peak memory does not stack on what PyTorch holds in this one.
        batch: the graph's batch N when the caller knows it; None reads it from the graph when
            the inputs are single samples.

    Returns:
        Per input given, the list of outputs (per sample when single samples were given).
    """
    if isolated:
        single = bool(inputs) and int(inputs[0].shape[0]) == 1
        n = (batch if batch is not None else graph_batch(path)) if single else 1
        if n == 1:
            return run_isolated(path, inputs, threads)
        members = batch_members(len(inputs), n)
        return unstack_outputs(run_isolated(path, stack_batches(inputs, members), threads), members, len(inputs))
    with OrtRunner(path, threads=threads, arena=False, input_name=input_name) as runner:
        return run_samples(runner, inputs)


def write_heatmap(path: str, ref: np.ndarray, cand: np.ndarray) -> str:
    """PNG of |candidate - reference| (max over channels) of the first batch item, scaled to its max."""
    from PIL import Image

    diff = np.abs(np.asarray(cand, np.float64) - np.asarray(ref, np.float64))[0]
    diff = diff.max(axis=0) if diff.ndim == 3 else diff
    diff = np.nan_to_num(diff, nan=0.0, posinf=0.0)
    peak = float(diff.max()) or 1.0
    v = diff / peak
    # black -> red -> yellow -> white ramp
    rgb = np.stack([np.clip(3 * v, 0, 1), np.clip(3 * v - 1, 0, 1), np.clip(3 * v - 2, 0, 1)], axis=-1)
    with atomic_target(path) as tmp:
        Image.fromarray((rgb * 255).astype(np.uint8)).save(tmp, format="PNG")
    return path
