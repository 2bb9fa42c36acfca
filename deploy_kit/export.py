"""PyTorch -> ONNX at one fixed shape, with the graph rules every backend relies on checked.

The TorchScript exporter (``dynamo=False``) is used on purpose: the dynamo exporter writes
PixelUnshuffle as SpaceToDepth with the wrong channel order (microsoft/onnxscript#2891,
pytorch/pytorch#186080), which is silently wrong output. Parity tests decide in the end.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .errors import ExportError
from .fsutil import atomic_target
from .memory import map_large_allocations

# ops that must never reach TensorRT from our exports (static graphs only; see ARCHITECTURE.md)
FORBIDDEN_OPS = {
    "CumSum": "lowered to a loop by TensorRT and overflows in FP16",
    "Loop": "a Python loop leaked into the graph; exports must be static",
    "If": "a Python branch leaked into the graph; exports must be static",
    "ScatterND": "index writes (TLC merges must be static pads and sums)",
}
# TensorRT's addPooling requires window h*w < 100 000 (torch2trt#122, NVIDIA/TensorRT#2094)
MAX_POOL_WINDOW = 100_000
OPSET = 17


@dataclass
class ExportInfo:
    path: str
    nodes: int
    op_counts: dict[str, int]
    max_pool_window: int
    warnings: list[str] = field(default_factory=list)


def check_graph(model) -> tuple[dict[str, int], int]:
    """Count ops and enforce the static-graph rules.

    Returns:
        (op histogram, largest pooling window area).

    Raises:
        ExportError: a forbidden op or a pooling window at/over TensorRT's limit.
    """
    counts: dict[str, int] = {}
    biggest = 0
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
        if node.op_type in ("AveragePool", "MaxPool"):
            for attr in node.attribute:
                if attr.name == "kernel_shape":
                    area = 1
                    for k in attr.ints:
                        area *= k
                    biggest = max(biggest, area)
    bad = [f"{op} ({why})" for op, why in FORBIDDEN_OPS.items() if op in counts]
    if bad:
        raise ExportError(f"exported graph contains {', '.join(bad)}; this is a deploy-kit bug, please report it")
    if biggest >= MAX_POOL_WINDOW:
        raise ExportError(f"a pooling window of {biggest} elements exceeds TensorRT's limit of {MAX_POOL_WINDOW}")
    return counts, biggest


def export_onnx(
    module,
    example,
    path: str,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    metadata: Mapping[str, Any],
    opset: int = OPSET,
) -> ExportInfo:
    """Trace ``module`` on ``example`` and write a checked ONNX file at ``path`` (atomically).

    Args:
        module: a torch module in eval mode (the static export form).
        example: the example input tensor (fixes every shape in the graph), or a tuple of them
            for a module with several inputs.
        path: destination ``.onnx``.
        input_names, output_names: graph I/O names.
        metadata: written to ``metadata_props`` (values JSON-encoded when not strings).
        opset: ONNX opset (>= 17 for LayerNormalization).

    Returns:
        ExportInfo with node counts.

    Raises:
        ExportError: tracing failed, or the graph breaks a static-graph rule.
    """
    import json

    import onnx
    import torch

    map_large_allocations()  # the trace is one full-size forward pass; see memory.py
    caught: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dk-export-") as tmp:
        raw = os.path.join(tmp, "raw.onnx")
        with warnings.catch_warnings(record=True) as ws, torch.no_grad():
            warnings.simplefilter("always")
            try:
                torch.onnx.export(
                    module,
                    example if isinstance(example, tuple) else (example,),
                    raw,
                    dynamo=False,
                    opset_version=opset,
                    input_names=list(input_names),
                    output_names=list(output_names),
                    do_constant_folding=True,
                )
            except Exception as exc:  # noqa: BLE001 - surface the exporter's own message
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
                raise ExportError(f"torch.onnx.export failed: {msg[:300]}") from exc
        caught = sorted({str(w.message).splitlines()[0][:200] for w in ws if "Tracer" not in type(w.message).__name__})
        model = onnx.load(raw)
    counts, biggest = check_graph(model)
    for k, v in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = str(k), v if isinstance(v, str) else json.dumps(v)
    onnx.checker.check_model(model)
    with atomic_target(path) as tmp_path:
        onnx.save(model, tmp_path)
    return ExportInfo(path, len(model.graph.node), counts, biggest, caught)


def update_metadata(path: str, updates: Mapping[str, Any]) -> None:
    """Set ``metadata_props`` entries of an existing ONNX file (rewritten atomically)."""
    import json

    import onnx

    model = onnx.load(path)
    keep = [p for p in model.metadata_props if p.key not in updates]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in updates.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = str(k), v if isinstance(v, str) else json.dumps(v)
    with atomic_target(path) as tmp_path:
        onnx.save(model, tmp_path)
