"""A precision stage never hands on a graph ONNX Runtime cannot load."""

from __future__ import annotations

import re

from ..errors import InvalidGraphError, MissingDependencyError
from ..runners.ort import ort_session


def check_loads(model, stage: str) -> None:
    """Load ``model`` (a ModelProto) in ONNX Runtime with graph optimisations off.

    Type and shape errors surface at session creation (e.g. onnxconverter-common's
    "Type parameter (T) of Optype (Gemm) bound to different types", PVT with its official init), which
    ``onnx.checker`` does not run.

    Raises:
        InvalidGraphError: one line naming the stage and the node; ``--debug`` keeps the traceback.
    """
    try:
        ort_session(model.SerializeToString(), optimize=False)
    except MissingDependencyError:
        raise
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own pybind classes
        text = " ".join(str(exc).split())
        found = re.search(r"node \(([^)]*)\)", text) or re.search(r"[Nn]ode:? ?'?([\w/.:-]+)", text)
        node = found.group(1) if found else "?"
        op = next((n.op_type for n in model.graph.node if n.name == node), "?")
        reason = text.split(" failed:", 1)[-1][:200]
        raise InvalidGraphError(
            f"deploy-kit bug: the {stage} stage produced a graph ONNX Runtime cannot load, at node {node} ({op}): "
            f"{reason}; nothing was written — re-run with --debug and report it"
        ) from exc
