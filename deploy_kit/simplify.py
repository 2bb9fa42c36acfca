"""Graph simplification: onnxsim first, onnxslim when onnxsim fails. Never touches its input."""

from __future__ import annotations

from dataclasses import dataclass

from .export import check_graph
from .fsutil import atomic_target
from .runners.ort import ort_session


@dataclass
class SimplifyReport:
    tool: str
    nodes_before: int
    nodes_after: int
    note: str = ""

    def line(self) -> str:
        extra = f" ({self.note})" if self.note else ""
        return f"{self.tool}: {self.nodes_before} -> {self.nodes_after} nodes{extra}"


def simplify(src: str, dst: str) -> SimplifyReport:
    """Simplify ``src`` into ``dst`` (written atomically; ``src`` is only read).

    Falls back to onnxslim when onnxsim raises or reports a failed check, and to a plain copy
    (reported as such) when both fail. The result is re-checked against the static-graph rules.

    Returns:
        SimplifyReport with node counts before/after and the tool used.
    """
    import onnx

    model = onnx.load(src)
    before = len(model.graph.node)
    notes = []
    out, tool = None, "none"
    for name, run in (("onnxsim", _onnxsim), ("onnxslim", _onnxslim)):
        try:
            candidate, version = run(src)
            _loads_in_onnxruntime(candidate)
        except Exception as exc:  # noqa: BLE001 - any simplifier failure falls back to the next
            first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            notes.append(f"{name} failed: {first}")
            continue
        out, tool = candidate, f"{name} {version}".strip()
        break
    if out is None:
        out = onnx.load(src)
        notes.append("kept the unsimplified graph")
    note = "; ".join(notes)
    # simplifiers may drop metadata_props; keep ours
    if not out.metadata_props:
        out.metadata_props.extend(model.metadata_props)
    check_graph(out)
    onnx.checker.check_model(out)
    with atomic_target(dst) as tmp:
        onnx.save(out, tmp)
    return SimplifyReport(tool, before, len(out.graph.node), note)


def _onnxsim(src: str):
    import onnx
    import onnxsim

    out, ok = onnxsim.simplify(onnx.load(src))
    if not ok:
        raise RuntimeError("onnxsim's own check failed")
    return out, getattr(onnxsim, "__version__", "")


def _onnxslim(src: str):
    import onnx
    import onnxslim

    return onnxslim.slim(onnx.load(src)), getattr(onnxslim, "__version__", "")


def _loads_in_onnxruntime(model) -> None:
    """Reject a simplified graph that ONNX Runtime cannot even load.

    onnx.checker does not run strict shape inference: onnxsim 0.8.1 once produced a Div with
    incompatible shapes on Restormer that passed the checker and failed at session creation.
    """
    ort_session(model.SerializeToString(), optimize=False)
