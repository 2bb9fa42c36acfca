"""A user's ONNX file as the source of an export (``deploy-kit export model.onnx``), torch-free.

The graph is the reference: ONNX Runtime FP32 on the user's own graph, its dynamic dimensions fixed
to the request's batch, height and width (:func:`fix_dims`). Simplify, FP16/INT8, engine, parity
and bundle then follow as for a traced model.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import UsageError
from .export import check_graph, update_metadata
from .fsutil import atomic_target
from .runners.ort import OrtRunner


INPUT, OUTPUT = "input", "output"  # the graph I/O names of every deploy-kit export


def _rename(model, names: dict[str, str]) -> None:
    """Rename graph tensors everywhere they appear (I/O, node inputs and outputs)."""
    for v in list(model.graph.input) + list(model.graph.output):
        v.name = names.get(v.name, v.name)
    for node in model.graph.node:
        node.input[:] = [names.get(t, t) for t in node.input]
        node.output[:] = [names.get(t, t) for t in node.output]


def _load(path: str):
    import onnx

    if not os.path.isfile(path):
        raise UsageError(f"ONNX file not found: {path}")
    try:
        return onnx.load(path)
    except Exception as exc:  # noqa: BLE001 - a damaged file is a user error
        raise UsageError(f"{path} is not a readable ONNX file ({type(exc).__name__}); export it again") from exc


def _graph_input(model, path: str):
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1 or len(model.graph.output) != 1:
        raise UsageError(f"{path} has {len(inputs)} inputs and {len(model.graph.output)} outputs; deploy-kit exports "
                         "image models with one input and one output")
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 4:
        raise UsageError(f"{path}: the input has {len(dims)} dimensions, not (N, C, H, W)")
    return inputs[0]


def inspect(path: str) -> tuple[list[int | None], str, str]:
    """The input's (N, C, H, W) (None where dynamic) and the input and output names.

    Raises:
        UsageError: unreadable, not one 4-D input and one output, or quantized/FP16 already.
    """
    model = _load(path)
    inp = _graph_input(model, path)
    if inp.type.tensor_type.elem_type != 1:  # TensorProto.FLOAT
        raise UsageError(f"{path}: the input is not float32; give the FP32 graph (deploy-kit makes FP16/INT8 from it)")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise UsageError(f"{path} is already quantized; give the FP32 graph")
    dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in inp.type.tensor_type.shape.dim]
    return dims, inp.name, model.graph.output[0].name


def fix_dims(src: str, dst: str, batch: int, height: int, width: int, metadata: dict | None = None) -> None:
    """Write ``src`` with its input fixed to (batch, C, height, width), the output's dims left to
    inference, and its I/O named ``input`` and ``output`` as every deploy-kit export.

    Raises:
        UsageError: a fixed dimension that differs from the request, or a graph the rules reject.
    """
    import onnx

    model = _load(src)
    inp = _graph_input(model, src)
    for d, want, flag in zip(inp.type.tensor_type.shape.dim, (batch, None, height, width), ("--batch", None, "--height", "--width")):
        if want is None:
            continue
        if d.HasField("dim_value") and d.dim_value > 0 and d.dim_value != want:
            raise UsageError(f"{src} is fixed at {d.dim_value} where {flag} asks {want}; drop {flag} or export it "
                             "with a dynamic dimension")
        d.Clear()
        d.dim_value = want
    for out in model.graph.output:  # the simplifier infers them again at the fixed size
        for d in out.type.tensor_type.shape.dim:
            if not d.HasField("dim_value"):
                d.Clear()
    del model.graph.value_info[:]
    _rename(model, {inp.name: INPUT, model.graph.output[0].name: OUTPUT})
    check_graph(model)
    with atomic_target(dst) as tmp:
        onnx.save(model, tmp)
    if metadata:
        update_metadata(dst, metadata)


def probe(path: str, channels: int, height: int, width: int) -> tuple[int, int]:
    """(output channels, scale) of a graph with fixed dims, from one ONNX Runtime run.

    Raises:
        UsageError: the output is not an image scaled alike on both axes by an integer >= 1.
    """
    with OrtRunner(path, threads=1) as runner:
        try:
            y = runner.run(np.random.default_rng(0).random((1, channels, height, width), dtype=np.float32))[0]
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types for a graph that cannot run
            raise UsageError(f"{path} does not run at {height}x{width} in ONNX Runtime: {str(exc).splitlines()[0][:200]}") from exc
    if y.ndim != 4 or y.shape[-2] / height != y.shape[-1] / width or y.shape[-1] % width:
        raise UsageError(f"{path}: output {tuple(y.shape)} for a {height}x{width} input is not an image scaled by an "
                         "integer on both axes; deploy-kit exports image-to-image models")
    return int(y.shape[1]), int(y.shape[-1] // width)
