"""FP16 graph for strongly typed engines (TensorRT 10/11, TensorRT-RTX), FP32 graph I/O.

Uses onnxconverter-common's maintained converter with an optional node block list (FP32 islands:
the model adapter's ``fp32_islands``, empty since the export forms are range-safe, see
models/rangesafe.py; ``debug-precision`` keep-lists). onnxruntime's own
copy of the converter produced duplicate node names with a block list on this graph family
(seen on this project's models), so it is not used; the output is validated either way.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field

from ..fsutil import atomic_target
from .check import check_loads


@dataclass
class FP16Report:
    kept_fp32: list[str] = field(default_factory=list)
    patterns: list[str] = field(default_factory=list)
    fp16_nodes: int = 0
    casts: int = 0

    def line(self) -> str:
        return (
            f"{self.fp16_nodes} nodes FP16, {len(self.kept_fp32)} kept FP32 "
            f"(patterns {', '.join(self.patterns) or 'none'}), {self.casts} casts"
        )

    def as_dict(self) -> dict:
        return {
            "kept_fp32": self.kept_fp32,
            "patterns": self.patterns,
            "fp16_nodes": self.fp16_nodes,
            "casts": self.casts,
        }


def select_nodes(model, patterns: list[str]) -> list[str]:
    """Names of the nodes whose name matches any regex in ``patterns``."""
    regs = [re.compile(p) for p in patterns]
    return [n.name for n in model.graph.node if any(r.search(n.name) for r in regs)]


def isolate_consumed_outputs(model) -> int:
    """Give every graph output that another node also reads its own Identity producer.

    onnxconverter-common 1.16 with ``keep_io_types=True`` emits an invalid graph ("bound to
    different types") when a graph output also feeds another node (seen on PVT feature maps):
    the FP32 output cast and the FP16 consumer then share one tensor. Returns how many were fixed.
    """
    from onnx import helper

    consumed = {i for n in model.graph.node for i in n.input}
    fixed = 0
    for out in model.graph.output:
        if out.name not in consumed:
            continue
        inner = f"{out.name}__dk_inner"
        for n in model.graph.node:
            n.output[:] = [inner if o == out.name else o for o in n.output]
            n.input[:] = [inner if i == out.name else i for i in n.input]
        model.graph.node.append(helper.make_node("Identity", [inner], [out.name], name=f"{out.name}__dk_output"))
        fixed += 1
    return fixed


def unshare_constants(model, blocked: set[str], blocked_ops: set[str]) -> int:
    """Give FP32 islands their own copy of every constant they share with FP16 nodes.

    onnxsim/onnxslim merge identical constants into one tensor. Official initialisation leaves
    many exactly equal tensors (every zero bias of a width, every unit LayerNorm scale), so a
    LayerNorm bias kept FP32 and a Gemm bias meant to become FP16 end up as *one* initializer.
    onnxconverter-common 1.16 keeps a constant read by a blocked node in FP32 and casts nothing
    for its other readers, which gives "Type parameter (T) of Optype (Gemm) bound to different
    types" (PVT small with its official init, tests/integration/test_official_init.py; random weights never
    share a tensor).

    Args:
        model: the ModelProto (edited in place).
        blocked: names of nodes that stay FP32; blocked_ops: op types that always stay FP32.

    Returns:
        How many constants were duplicated.
    """
    import copy

    def is_blocked(n) -> bool:
        return n.name in blocked or n.op_type in blocked_ops

    readers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    constants = {i.name: ("init", i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            constants[n.output[0]] = ("node", n)
    split = 0
    for name, (kind, proto) in list(constants.items()):
        users = readers.get(name, [])
        fp32_users = [n for n in users if is_blocked(n)]
        if not fp32_users or len(fp32_users) == len(users):
            continue
        twin = f"{name}__dk_fp32"
        if kind == "init":
            copy_ = copy.deepcopy(proto)
            copy_.name = twin
            model.graph.initializer.append(copy_)
        else:
            copy_ = copy.deepcopy(proto)
            copy_.name = f"{proto.name or name}__dk_fp32"
            copy_.output[:] = [twin]
            model.graph.node.insert(list(model.graph.node).index(proto) + 1, copy_)
        for n in fp32_users:
            n.input[:] = [twin if i == name else i for i in n.input]
        split += 1
    return split


def restore_fp32_constants(before, after) -> int:
    """Feed FP32 islands their original FP32 constants instead of an FP16 round trip.

    onnxconverter-common converts *every* constant to FP16 — clamping anything above
    ``max_finite_val`` (1e4) — and casts it back for blocked nodes. NAFNet's global SCA mean
    divides by h*w = 65 536 at 256 x 256, which became 1e4 (FP16 parity 12.6 dB). A Cast to FP32
    of a converted constant is therefore replaced by a Constant holding the exact original.

    Returns:
        How many constants were restored.
    """
    import copy

    from onnx import TensorProto, helper

    original = {i.name: i for i in before.graph.initializer if i.data_type == TensorProto.FLOAT}
    for n in before.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value" and n.attribute[0].t.data_type == TensorProto.FLOAT:
            original[n.output[0]] = n.attribute[0].t
    restored = 0
    for idx, n in enumerate(after.graph.node):
        to = next((a.i for a in n.attribute if a.name == "to"), None)
        if n.op_type == "Cast" and to == TensorProto.FLOAT and n.input[0] in original:
            value = copy.deepcopy(original[n.input[0]])
            value.name = ""
            after.graph.node[idx].CopyFrom(helper.make_node("Constant", [], list(n.output), name=f"{n.name}__fp32", value=value))
            restored += 1
    _drop_dead(after)
    return restored


def _drop_dead(model) -> None:
    """Remove Constant nodes and initializers nothing reads any more."""
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [n for n in model.graph.node if not (n.op_type == "Constant" and n.output[0] not in used)]
    del model.graph.node[:]
    model.graph.node.extend(keep)
    inits = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)


def convert_fp16(src: str, dst: str, fp32_patterns: list[str], stage: str = "fp16") -> FP16Report:
    """Write an FP16 copy of ``src`` with FP32 graph I/O and FP32 islands.

    Args:
        src: FP32 ONNX path (only read).
        dst: destination path (written atomically).
        fp32_patterns: regexes on node names kept in FP32 (the model's overflow sites).
        stage: named in the error when the result does not load (``fp16``, ``int8 remainder``).

    Returns:
        FP16Report listing the nodes kept FP32.

    Raises:
        RuntimeError: the converter produced duplicate node names (a bug; keeps its traceback).
        InvalidGraphError: the result does not load in ONNX Runtime (nothing is written).
    """

    import onnx
    from onnxconverter_common import float16

    model = onnx.load(src)
    isolate_consumed_outputs(model)
    block = select_nodes(model, fp32_patterns)
    unshare_constants(model, set(block), set(float16.DEFAULT_OP_BLOCK_LIST))
    before = onnx.ModelProto()
    before.CopyFrom(model)  # the converter edits its input in place
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns for every clamped initializer value
        out = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            node_block_list=block,
            # keep only what the converter's default block list needs beyond ours
            op_block_list=list(float16.DEFAULT_OP_BLOCK_LIST),
        )
    restore_fp32_constants(before, out)
    names = [n.name for n in out.graph.node if n.name]
    if len(names) != len(set(names)):
        raise RuntimeError("FP16 conversion produced duplicate node names")
    onnx.checker.check_model(out)
    check_loads(out, stage)
    with atomic_target(dst) as tmp:
        onnx.save(out, tmp)
    casts = sum(1 for n in out.graph.node if n.op_type == "Cast")
    return FP16Report(
        kept_fp32=block,
        patterns=list(fp32_patterns),
        fp16_nodes=len(out.graph.node) - casts - len(block),
        casts=casts,
    )
