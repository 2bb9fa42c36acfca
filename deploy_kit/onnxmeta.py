"""What a deploy-kit ONNX file says about itself, read without its weights: the ``metadata_props``
deploy-kit wrote (:func:`read_metadata`) and its inputs and outputs (:func:`graph_io`).

Light, for both halves: importing it imports nothing heavy; the onnx package is imported inside each
reader, so only a caller that reads an ONNX file needs it. On the device that is ``deploy-kit build
MODEL.onnx`` (the build command checks that onnx is installed first) and Triton's repository of a
bundle written before manifests recorded ``graph_io``; a bundle itself is read from its manifest.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from .errors import UsageError


def read_metadata(path: str) -> dict[str, Any]:
    """``metadata_props`` of an ONNX file, JSON values decoded (without loading weights).

    Args:
        path: the ONNX file.

    Returns:
        key -> value (JSON decoded; the text where a value is not JSON).

    Raises:
        UsageError: a missing, unreadable or damaged file (not a protobuf ModelProto).
    """
    import onnx
    from google.protobuf.message import DecodeError

    try:
        # binary protobuf whatever the extension (onnx picks JSON/text parsers by extension otherwise)
        model = onnx.load(path, format="protobuf", load_external_data=False)
    except FileNotFoundError:
        raise UsageError(f"ONNX file not found: {path}") from None
    except (DecodeError, OSError, RecursionError) as exc:  # RecursionError: python protobuf on deep nesting
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise UsageError(f"{path} is not a readable ONNX file ({reason}); pass the .onnx deploy-kit wrote, "
                         "copied whole") from exc
    out: dict[str, Any] = {}
    for p in model.metadata_props:
        try:
            out[p.key] = json.loads(p.value)
        except (ValueError, RecursionError):  # not JSON (or nested past the recursion limit): keep the text
            out[p.key] = p.value
    return out


def graph_io(onnx_path: str) -> dict[str, list[dict[str, Any]]]:
    """The manifest's ``graph_io`` section for an ONNX file: its inputs and outputs, as the device reads them.

    Needs the onnx package. Initializers listed among the
    graph inputs (older opsets) are left out.

    Args:
        onnx_path: the graph.

    Returns:
        ``{"inputs": [...], "outputs": [...]}``, each entry ``{"name", "dtype", "dims"}``: dtype a
        numpy name (``float32``, ``float16``, ...; ``onnx-type-N`` for a type numpy has no name
        for), dims ints or, for a dynamic dimension, its symbolic name (``"?"`` when it has none).

    Raises:
        UsageError: a missing or unreadable ONNX file (one line).
    """
    import onnx
    from google.protobuf.message import DecodeError
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        graph = onnx.load(onnx_path, format="protobuf", load_external_data=False).graph
    except FileNotFoundError:
        raise UsageError(f"ONNX file not found: {onnx_path}") from None
    except (DecodeError, OSError, RecursionError) as exc:
        raise UsageError(f"{onnx_path} is not a readable ONNX file ({type(exc).__name__}); copy it again") from None

    def dtype(elem: int) -> str:
        try:
            return np.dtype(tensor_dtype_to_np_dtype(elem)).name
        except (KeyError, TypeError, ValueError):  # UNDEFINED, STRING and types numpy cannot hold
            return f"onnx-type-{elem}"

    def entry(v) -> dict[str, Any]:
        t = v.type.tensor_type
        return {"name": v.name, "dtype": dtype(t.elem_type),
                "dims": [d.dim_value if d.HasField("dim_value") else d.dim_param or "?" for d in t.shape.dim]}

    weights = {i.name for i in graph.initializer}
    return {"inputs": [entry(v) for v in graph.input if v.name not in weights],
            "outputs": [entry(v) for v in graph.output]}
