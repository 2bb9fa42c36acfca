"""True-FP16 check: every FP16 tensor rounded to FP16, reductions accumulated in FP16.

ONNX Runtime's CPU provider has no FP16 kernels for most ops. On an FP16 graph it inserts
Casts to FP32 around each such node and then removes the Cast pairs between neighbours, at
every optimisation level (``ORT_DISABLE_ALL`` included), so a chain such as a decomposed
LayerNorm runs entirely in FP32. Measured (tests/unit/test_truefp16.py), channel LayerNorm over C=256 of
randn*300 (|d|^2 up to 1.4e6, far past FP16's 65504):

====================================================  =======================================
candidate                                             result
====================================================  =======================================
ORT, FP16 graph, default optimisations                bit-identical to FP32 (misses it)
ORT, FP16 graph, ``ORT_DISABLE_ALL``                  bit-identical to FP32 (misses it)
PyTorch ``module.half()`` on CPU                      squares -> inf, output 0 (catches it)
  ... with |x| <= 175 (only the sum over C overflows)  finite: ``mean`` accumulates in FP32
this module (ORT on a rounding rewrite, no fusion)    catches both: inf/NaN / PSNR collapse
====================================================  =======================================

ONNX ``LayerNormalization`` (PVT) has ``stash_type=1``: its statistics are FP32 by
specification (TensorRT honours it), so every candidate, this one included, gives a finite,
accurate result for it.

How it works: the FP16 graph is rewritten into an FP32 graph that ONNX Runtime runs *as
written* (no fusion): every tensor that is FP16 in the graph is followed by an explicit
``Cast(FP16) -> Cast(FP32)`` pair (ONNX Runtime keeps explicit pairs; measured), so each node
computes from FP16-exact inputs and its output is rounded to FP16 (overflow -> inf), as an FP16
kernel would. FP32 islands and the graph's own Casts keep their meaning. Reductions over FP16
tensors (ReduceMean/Sum/SumSquare/L1/L2, GlobalAveragePool) are expanded into a pairwise tree of
FP16-rounded Adds (``reductions="fp16"``, the default), so a partial sum past 65504 becomes inf
even when the mean would fit — the conservative model of a kernel that accumulates in its I/O
type. ``reductions="fp32"`` rounds only their outputs. Conv/MatMul/Gemm accumulate in FP32
(tensor cores do), Softmax internally too; their outputs are rounded.
"""

from __future__ import annotations

import math
import os
import tempfile
from typing import Sequence

import numpy as np

from ..compare import Gate, evaluate
from ..runners.ort import OrtRunner
from ..specs import Tolerance
from .fp16 import convert_fp16

BACKEND = "true-fp16 (onnxruntime, no fusion)"
REDUCE_OPS = ("ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "GlobalAveragePool")
_FLOAT, _HALF = 1, 10  # onnx.TensorProto.FLOAT / FLOAT16


def is_fp16_graph(model) -> bool:
    """Whether any initializer, Cast or graph I/O of ``model`` is FP16."""
    g = model.graph
    if any(i.data_type == _HALF for i in g.initializer):
        return True
    if any(v.type.tensor_type.elem_type == _HALF for v in list(g.input) + list(g.output)):
        return True
    return any(n.op_type == "Cast" and any(a.name == "to" and a.i == _HALF for a in n.attribute) for n in g.node)


class _Rewriter:
    """Builds the emulation graph node by node (see the module docstring)."""

    def __init__(self, model, reductions: str):
        import onnx

        self.onnx = onnx
        self.reductions = reductions
        inferred = onnx.shape_inference.infer_shapes(model)
        self.types: dict[str, int] = {}
        self.shapes: dict[str, list[int] | None] = {}
        g = inferred.graph
        for v in list(g.input) + list(g.output) + list(g.value_info):
            tt = v.type.tensor_type
            self.types[v.name] = tt.elem_type
            dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim] if tt.HasField("shape") else None
            self.shapes[v.name] = None if dims is None or None in dims else dims
        for i in g.initializer:
            self.types[i.name] = i.data_type
            self.shapes[i.name] = list(i.dims)
        self.consts: dict[str, np.ndarray] = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                arr = onnx.numpy_helper.to_array(n.attribute[0].t)
                self.consts[n.output[0]] = arr
                self.types[n.output[0]] = n.attribute[0].t.data_type
                self.shapes[n.output[0]] = list(arr.shape)
        self.nodes: list = []
        self.inits: list = []
        self.count = 0
        self.notes: list[str] = []
        self.expanded = 0

    # -- helpers ------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        self.count += 1
        return f"{base}__tf16_{self.count}"

    def const(self, base: str, value: np.ndarray) -> str:
        name = self.fresh(base)
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs):
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outputs, name=name, **attrs))

    def round(self, src: str, dst: str, name: str) -> None:
        """dst = src rounded to FP16 (overflow -> inf), kept as an FP32 tensor."""
        mid = self.fresh(f"{src}_h")  # unique per tensor: a node with several outputs rounds each
        self.node("Cast", [src], [mid], f"{mid}_to16", to=_HALF)
        self.node("Cast", [mid], [dst], f"{mid}_to32", to=_FLOAT)

    def is_half(self, tensor: str) -> bool:
        return self.types.get(tensor) == _HALF

    # -- the rewrite --------------------------------------------------------------------------
    def rewrite(self, model):
        onnx = self.onnx
        g = model.graph
        renames: dict[str, str] = {}
        new_inputs = [_as_float(v) for v in g.input]
        for v in g.input:
            if v.type.tensor_type.elem_type == _HALF:
                renames[v.name] = self.fresh(v.name)
                self.round(v.name, renames[v.name], f"input_{v.name}")
        for n in g.node:
            n2 = onnx.NodeProto()
            n2.CopyFrom(n)
            n2.input[:] = [renames.get(i, i) for i in n2.input]
            self.visit(n2)
        for init in g.initializer:
            if init.data_type == _HALF:
                arr = onnx.numpy_helper.to_array(init).astype(np.float32)
                self.inits.append(onnx.numpy_helper.from_array(arr, init.name))
            else:
                self.inits.append(init)
        outputs = [_as_float(v) for v in g.output]
        graph = onnx.helper.make_graph(self.nodes, g.name, new_inputs, outputs, initializer=self.inits)
        out = onnx.helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
        out.metadata_props.extend(model.metadata_props)
        return out

    def visit(self, n) -> None:
        onnx = self.onnx
        if n.op_type == "Cast":
            to = next(a.i for a in n.attribute if a.name == "to")
            if to == _HALF:
                self.round(n.input[0], n.output[0], n.name or n.output[0])
            elif to == _FLOAT and self.is_half(n.input[0]):
                self.node("Identity", [n.input[0]], [n.output[0]], n.name or self.fresh("cast"))
            else:
                self.nodes.append(n)
            return
        for a in n.attribute:  # Constant / ConstantOfShape values
            if a.type == onnx.AttributeProto.TENSOR and a.t.data_type == _HALF:
                arr = onnx.numpy_helper.to_array(a.t).astype(np.float32)
                a.t.CopyFrom(onnx.numpy_helper.from_array(arr, a.t.name))
        if n.op_type == "Constant":
            self.nodes.append(n)
            return
        if n.op_type in REDUCE_OPS and self.reductions == "fp16" and self.is_half(n.input[0]):
            if self.expand_reduce(n):
                return
        half_outs = [o for o in n.output if o and self.is_half(o)]
        if not half_outs:
            self.nodes.append(n)
            return
        raw = {o: self.fresh(f"{o}_raw") for o in half_outs}
        n.output[:] = [raw.get(o, o) for o in n.output]
        self.nodes.append(n)
        for o in half_outs:
            self.round(raw[o], o, n.name or o)

    def expand_reduce(self, n) -> bool:
        """Pairwise FP16 tree for a reduction; False (output rounding only) when shapes are unknown."""
        x, out = n.input[0], n.output[0]
        shape = self.shapes.get(x)
        if shape is None:
            self.notes.append(f"{n.name}: input shape unknown, reduction rounded at its output only")
            return False
        rank = len(shape)
        attrs = {a.name: a for a in n.attribute}
        if n.op_type == "GlobalAveragePool":
            axes, keep = list(range(2, rank)), 1
        else:
            keep = attrs["keepdims"].i if "keepdims" in attrs else 1
            if "axes" in attrs:
                axes = list(attrs["axes"].ints)
            elif len(n.input) > 1 and n.input[1]:
                if n.input[1] not in self.consts:
                    self.notes.append(f"{n.name}: axes are not constant, reduction rounded at its output only")
                    return False
                axes = [int(v) for v in np.asarray(self.consts[n.input[1]]).ravel()]
            else:
                axes = []
            if not axes:
                noop = attrs["noop_with_empty_axes"].i if "noop_with_empty_axes" in attrs else 0
                if noop:
                    return False
                axes = list(range(rank))
        axes = sorted({a % rank for a in axes})
        base = n.name or out
        t = x
        if n.op_type in ("ReduceSumSquare", "ReduceL2"):
            sq = self.fresh(f"{base}_sq")
            self.node("Mul", [t, t], [sq], self.fresh(f"{base}_sq"))
            t = self.fresh(f"{base}_sqr")
            self.round(sq, t, self.fresh(base))
        elif n.op_type == "ReduceL1":
            t2 = self.fresh(f"{base}_abs")
            self.node("Abs", [t], [t2], self.fresh(f"{base}_abs"))
            t = t2
        count = 1
        for ax in axes:
            size = shape[ax]
            count *= size
            while size > 1:
                half = size // 2
                a, b = self.fresh(f"{base}_a"), self.fresh(f"{base}_b")
                ax_c = self.const(f"{base}_ax", np.array([ax], np.int64))
                self.node("Slice", [t, self.const(base, np.array([0], np.int64)), self.const(base, np.array([half], np.int64)), ax_c], [a], self.fresh(base))
                self.node("Slice", [t, self.const(base, np.array([half], np.int64)), self.const(base, np.array([2 * half], np.int64)), ax_c], [b], self.fresh(base))
                s_raw, s = self.fresh(f"{base}_sum"), self.fresh(f"{base}_sumr")
                self.node("Add", [a, b], [s_raw], self.fresh(base))
                self.round(s_raw, s, self.fresh(base))
                if size % 2:
                    rest, cat = self.fresh(f"{base}_rest"), self.fresh(f"{base}_cat")
                    self.node("Slice", [t, self.const(base, np.array([2 * half], np.int64)), self.const(base, np.array([size], np.int64)), ax_c], [rest], self.fresh(base))
                    self.node("Concat", [s, rest], [cat], self.fresh(base), axis=ax)
                    s = cat
                t, size = s, half + size % 2
        if n.op_type in ("ReduceMean", "GlobalAveragePool"):
            inv = np.float32(np.float16(1.0 / count))  # the 1/count an FP16 kernel would scale by
            m = self.fresh(f"{base}_mean")
            self.node("Mul", [t, self.const(f"{base}_inv", np.array(inv, np.float32))], [m], self.fresh(base))
            t2 = self.fresh(f"{base}_meanr")
            self.round(m, t2, self.fresh(base))
            t = t2
        elif n.op_type == "ReduceL2":
            r = self.fresh(f"{base}_sqrt")
            self.node("Sqrt", [t], [r], self.fresh(base))
            t2 = self.fresh(f"{base}_sqrtr")
            self.round(r, t2, self.fresh(base))
            t = t2
        if not keep:
            self.node("Squeeze", [t, self.const(f"{base}_axes", np.array(axes, np.int64))], [out], base)
        else:
            self.node("Identity", [t], [out], base)
        self.expanded += 1
        return True


def _as_float(value_info):
    """A copy of a graph input/output declaration, FP16 turned FP32 (the emulation's I/O is FP32)."""
    import onnx

    out = onnx.ValueInfoProto()
    out.CopyFrom(value_info)
    if out.type.tensor_type.elem_type == _HALF:
        out.type.tensor_type.elem_type = _FLOAT
    return out


def emulation_model(fp16_model, reductions: str = "fp16"):
    """The FP32 graph that reproduces true FP16 arithmetic of ``fp16_model`` on ONNX Runtime.

    Args:
        fp16_model: an FP16 ModelProto (islands and casts as the FP16 pass wrote them).
        reductions: ``fp16`` (pairwise FP16 partial sums) or ``fp32`` (outputs rounded only).

    Returns:
        (ModelProto, notes): notes list reductions that could not be expanded.
    """
    if reductions not in ("fp16", "fp32"):
        raise ValueError(f"reductions must be 'fp16' or 'fp32', got {reductions!r}")
    rw = _Rewriter(fp16_model, reductions)
    return rw.rewrite(fp16_model), rw.notes


def true_fp16_outputs(onnx_path: str, inputs: Sequence[np.ndarray], *, reductions: str = "fp16",
                      threads: int = 0, fp16_path: str | None = None) -> list[list[np.ndarray]]:
    """Outputs per input of ``onnx_path`` computed with true FP16 rounding (see module docstring).

    Args:
        onnx_path: an FP32 ONNX (converted here to an all-FP16 copy, no islands, in a temp dir)
            or an FP16 graph (used as is, islands included).
        fp16_path: an FP16 graph to run instead of converting ``onnx_path``.
        reductions, threads: see :func:`emulation_model`, :func:`deploy_kit.runners.ort.ort_session`.
    """
    import onnx

    with tempfile.TemporaryDirectory(prefix="dk-truefp16-") as tmp:
        src = fp16_path or onnx_path
        model = onnx.load(src)
        if not is_fp16_graph(model):
            conv = os.path.join(tmp, "all-fp16.onnx")
            convert_fp16(src, conv, [])
            model = onnx.load(conv)
        emu, _ = emulation_model(model, reductions)
        path = os.path.join(tmp, "emulated.onnx")
        onnx.save(emu, path)
        with OrtRunner(path, optimize=False, threads=threads, arena=False) as runner:
            return runner.run_many(inputs)


def reference_outputs(onnx_fp32_path: str, inputs: Sequence[np.ndarray], threads: int = 0) -> list[list[np.ndarray]]:
    """The FP32 reference: the FP32 ONNX on ONNX Runtime (CPU, default optimisations)."""
    with OrtRunner(onnx_fp32_path, threads=threads, arena=False) as runner:
        return runner.run_many(inputs)


def output_names(path: str) -> list[str]:
    import onnx

    return [o.name for o in onnx.load(path, load_external_data=False).graph.output]


def true_fp16_check(onnx_fp32_path: str, inputs: Sequence[np.ndarray], *, fp16_path: str | None = None,
                    refs: Sequence[Sequence[np.ndarray]] | None = None, kind: str = "image", tol=None,
                    reductions: str = "fp16", threads: int = 0, min_psnr: float | None = None):
    """True-FP16 parity of ``fp16_path`` (default: an all-FP16 copy of ``onnx_fp32_path``).

    Args:
        refs: reference outputs per input (default: the FP32 ONNX on ONNX Runtime).
        kind: ``image`` | ``features`` | ``logits`` (as :func:`deploy_kit.compare.evaluate`).
        tol: a :class:`deploy_kit.specs.Tolerance` (default: the default FP16 gates).
        min_psnr: also gate feature/logit outputs on PSNR (data range = the reference's range);
            the spec's FP16 gates for them are cosine only.

    Returns:
        A :class:`deploy_kit.compare.Check` (backend :data:`BACKEND`, precision ``fp16``) with
        PSNR and non-finite counts per output.
    """
    if refs is None:
        refs = reference_outputs(onnx_fp32_path, inputs, threads)
    cands = true_fp16_outputs(onnx_fp32_path, inputs, reductions=reductions, threads=threads, fp16_path=fp16_path)
    names = output_names(onnx_fp32_path)
    check = evaluate(BACKEND, "fp16", fp16_path or f"{onnx_fp32_path} (all FP16)", names, refs, cands, kind, tol or Tolerance())
    if min_psnr is not None and kind != "image":
        check.gates.extend(Gate.at_least(f"{m.name} PSNR dB (reference range)", m.psnr_norm, min_psnr) for m in check.outputs)
        check.status = "pass" if all(g.ok for g in check.gates) else "fail"
    return check


def psnr_of(check) -> float:
    """The worst PSNR over a check's outputs (-inf with any non-finite value)."""
    worst = math.inf
    for m in check.outputs:
        p = m.psnr if m.psnr is not None else m.psnr_norm
        worst = min(worst, -math.inf if m.nonfinite else (p if p is not None else math.inf))
    return worst
