"""Graph simplification: onnxsim first, onnxslim when onnxsim fails. Never touches its input."""

from __future__ import annotations

from dataclasses import dataclass

from .export import check_graph
from .fsutil import atomic_target


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
    note = ""
    try:
        import onnxsim

        out, ok = onnxsim.simplify(model)
        if not ok:
            raise RuntimeError("onnxsim check failed")
        tool = f"onnxsim {getattr(onnxsim, '__version__', '')}".strip()
    except Exception as exc:  # noqa: BLE001 - any onnxsim failure falls back to onnxslim
        note = f"onnxsim failed: {str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__}"
        try:
            import onnxslim

            out = onnxslim.slim(onnx.load(src))
            tool = f"onnxslim {getattr(onnxslim, '__version__', '')}".strip()
        except Exception as exc2:  # noqa: BLE001
            out = onnx.load(src)
            tool = "none"
            note += f"; onnxslim failed: {str(exc2).splitlines()[0][:120] if str(exc2) else type(exc2).__name__}"
    # simplifiers may drop metadata_props; keep ours
    if not out.metadata_props:
        out.metadata_props.extend(model.metadata_props)
    check_graph(out)
    onnx.checker.check_model(out)
    with atomic_target(dst) as tmp:
        onnx.save(out, tmp)
    return SimplifyReport(tool, before, len(out.graph.node), note)
