"""Range-safe FP16 for any FP32 ONNX graph: power-of-two rescaling, then the fewest FP32 islands.

The graph-level form of :mod:`deploy_kit.models.rangesafe` (the built-in models' hand-written
rewrites), for user models. A *site* is a tensor ``x`` and the nodes around it whose FP16 values
or FP16 partial sums would leave FP16's range (max 65 504); the pass feeds them ``z = x·2^-s``
instead. Only powers of two move, so the rewrite is exact in real arithmetic and in FP32 (outputs
bit-identical in every case of tests/unit/test_graphsafe.py, which allows 1 ulp). Each node's
*degree* says how its output scales (by ``2^-s·degree``); ``s`` comes from an FP32 ONNX Runtime
run of a copy with max-|value| probes on the sample inputs. Rewrites:

* **Normalisations** (decomposed channel or token LayerNorm and its BiasFree form, RMS norm,
  ``F.normalize`` as ReduceL2 -> Clip -> Div, sums of squares as ReduceSum or as MatMuls with
  ones): every node reached from ``x`` through homogeneous ops (Mul, Div, Sqrt, Pow, Reciprocal,
  reductions, MatMul, shape ops, Add/Sub/Max/Clip with a constant) up to the degree-0 output reads
  ``z``; the constants those ops add (eps) are scaled by ``2^-s·degree``; means stay means. ``s`` is
  the smallest (down to -12: small values are scaled *up*, as rangesafe does) for which every value
  of degree > 0 and every reduction's partial-sum bound (sum |x| or sum x² over its axes, measured)
  stays <= 2^14 (4x headroom). For a channel LayerNorm this is rangesafe's rule with its ``b ≈ 1/√C``
  folded into ``s`` (rangesafe.channel_normalize), without its eps cap: overflow comes first, and
  onnxconverter-common lifts an eps·2^-2s below 1e-7 to 1e-7 on either route.
* **ONNX LayerNormalization** (stash_type 1): statistics are FP32 by specification and the true-FP16
  check computes them so (randn·300 over C = 256: 87.9 dB without any rewrite). A TensorRT FP16
  normalization layer may accumulate in FP16 (https://github.com/NVIDIA/TensorRT/issues/4338, why
  models/pvt.py scales it), so ``x`` (and ``epsilon`` by ``2^-2s``) is still scaled where the row
  sums of |x| or x² pass 2^14, but only down: nothing in FP16 gains from scaling up.
* **Sums** (ReduceSum/ReduceMean/GlobalAveragePool whose FP16 partial sums overflow): ``x·2^-s``
  into the reduction; ``2^s`` folded into a following Mul/Div by a constant (``sum / N``), else a
  ``Mul(2^s)`` after it (a mean fits where its sum does not).
* **Scaled MatMul** (``MatMul(q, kᵀ) * c -> Softmax``): ``q·2^-s`` and ``c·2^s``: the product stays
  in range, the Softmax input is unchanged.

Not rewritable: an activation that itself passes 65 504, a sum whose *value* does, a chain through
an unsupported op. :func:`convert_fp16_safe` then keeps the fewest FP32 nodes that meet the PSNR
target (the islands search of :mod:`deploy_kit.precision.debug`).

Measured (``python benchmarks/bench_graphsafe.py``, 1-2 min on 2 CPU cores): true-FP16 PSNR (dB,
worst output, 2 sample inputs, against each graph's own FP32 ONNX; image: data range 1,
features/logits: the reference's range). *plain*: the export form with the hand-written rewrites
off (``set_range_safe(module, False)``), all FP16; *hand*: the normal ``--fp16`` graph; *graph*:
plain + :func:`convert_fp16_safe`. FP32 nodes kept: 0 in every hand and graph row.

===============================  ========  =====  =====  =====  =======================  =====
model (size, inputs)             PSNR      plain  hand   graph  graph-level sites        g - h
===============================  ========  =====  =====  =====  =======================  =====
NAFNet demo-w16 128, default     image     77.10  77.09  77.09  14 layernorm             +0.00
NAFNet 128, contrast x256        features  82.96  83.12  83.12  14 layernorm             +0.00
Restormer demo-d12 128, default  image     76.13  76.14  76.10  11 l2norm, 16 layernorm  -0.04
Restormer 128, contrast x256     features  82.07  82.07  82.07  10 l2norm, 12 layernorm  +0.01
Restormer 512, default           image     53.67  76.17  76.16  13 l2norm, 16 layernorm  -0.01
PVT v2-b0 (random) 224, default  logits    72.95  72.95  72.95  none                     -0.00
PVT v2-b0 224, contrast x256     logits    73.02  73.02  73.02  1 layernorm-op           -0.00
===============================  ========  =====  =====  =====  =======================  =====

The demo checkpoints do not overflow plain FP16 on their default inputs at 128x128, nor does
random-weight PVT. Contrast x256 costs plain NAFNet 0.16 dB (LayerNorm variance partial sums up to
1.3e5 measured); Restormer at 512x512 overflows for real: its q/k sums of squares run over 262 144
pixels (53.67 dB plain, 76.16 with the pass).
"""

from __future__ import annotations

import heapq
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..errors import UsageError
from ..fsutil import atomic_target
from ..runners.ort import OrtRunner
from .debug import _fmt, candidate_nodes, exact_pattern, load_fp32_graph, search
from .fp16 import convert_fp16
from .truefp16 import psnr_of, reference_outputs, true_fp16_check

LIMIT_LOG2 = 14  # scaled values and partial sums <= 2^14: 4x headroom below 65504 (as models/rangesafe.py)
CONST_MAX_LOG2, CONST_MIN_LOG2 = 13, -23  # onnxconverter-common clamps constants to [1e-7, 1e4]
MAX_SCALE_UP = 12  # never scale a site up by more than 2^12 (as models/rangesafe.py)
MAX_REGION = 64  # nodes one normalisation site may span
_FLOAT = 1
_SAME = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Expand", "Slice", "Gather", "Tile",
         "Neg", "Abs", "Relu", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceL1", "ReduceL2",
         "GlobalAveragePool", "GlobalMaxPool", "AveragePool", "MaxPool", "Split", "DepthToSpace", "SpaceToDepth",
         "Sqrt", "Reciprocal", "ReduceSumSquare"}
_LINEAR = {"Add", "Sub", "Max", "Min", "Sum", "Concat"}
_SUMS = {"ReduceMean": "l1", "ReduceSum": "l1", "ReduceL1": "l1", "GlobalAveragePool": "l1",
         "ReduceL2": "sq", "ReduceSumSquare": "sq"}  # FP16-accumulated reductions: their partial-sum bound


@dataclass(frozen=True)
class Site:
    """One rewritten site.

    Attributes:
        node: the node that starts it (the first reduction, square or LayerNormalization).
        pattern: ``layernorm`` (decomposed), ``layernorm-op``, ``rmsnorm``, ``l2norm``, ``sum``
            or ``matmul-scale``.
        scale_log2: ``s`` in ``x·2^-s`` (negative: scaled up).
        measured_max: the largest FP32 value that set ``s`` (a tensor's max |value| or a partial-sum bound).
        limited_by: what that value is.
        nodes: the nodes fed the scaled tensor or a scaled constant.
    """

    node: str
    pattern: str
    scale_log2: int
    measured_max: float
    limited_by: str
    nodes: tuple[str, ...]


@dataclass(frozen=True)
class SafeFP16Result:
    """What :func:`convert_fp16_safe` wrote.

    Attributes:
        output: the FP16 ONNX written.
        sites: the range-safe rewrites applied.
        kept_fp32: nodes kept FP32 (names in the written graph), empty when the rewrites sufficed.
        psnr_before: true-FP16 PSNR (dB, worst output) of the rewritten graph, all FP16.
        psnr_after: the same with ``kept_fp32`` kept FP32 (equal to ``psnr_before`` when none).
        target_psnr: the target; met: whether ``psnr_after`` reaches it.
        evals: true-FP16 checks run by the islands search (0 when not needed).
    """

    output: str
    sites: tuple[Site, ...]
    kept_fp32: tuple[str, ...]
    psnr_before: float
    psnr_after: float
    target_psnr: float
    met: bool
    evals: int = 0

    def lines(self) -> list[str]:
        out = [f"range-safe sites: {len(self.sites)}"]
        out += [f"  {s.pattern:<13} {s.node} at 2^{-s.scale_log2} ({s.limited_by} {s.measured_max:.4g})" for s in self.sites]
        out.append(f"true-FP16 PSNR all FP16 {_fmt(self.psnr_before)} dB; kept FP32: {len(self.kept_fp32)} nodes"
                   f" -> {_fmt(self.psnr_after)} dB ({'meets' if self.met else 'does NOT meet'} {self.target_psnr:g} dB)")
        return out


@dataclass
class _Cand:
    kind: str  # norm | sum | matmul
    x: str
    trigger: int
    nodes: list[int]  # nodes in which x is replaced
    consts: list[tuple[int, int, int]] = field(default_factory=list)  # (node, input, exponent): c·2^(-s·exponent)
    attrs: list[tuple[int, str, int]] = field(default_factory=list)  # (node, attribute, exponent)
    unscale: int = 0  # degree of the trigger's output to restore after it (0: none)
    probes: list[tuple[tuple, int]] = field(default_factory=list)  # ((kind, tensor or node), degree)


class _Graph:
    """Structure of one FP32 model (readers, constants, types, ranks) and its candidate sites."""

    def __init__(self, model):
        import onnx
        from onnx import numpy_helper

        self.onnx, self.model = onnx, model
        g = model.graph
        self.nodes = list(g.node)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
        self.outputs = {o.name for o in g.output}
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for t in dict.fromkeys(n.input):
                self.consumers.setdefault(t, []).append(i)
        inferred = onnx.shape_inference.infer_shapes(model)
        self.types, self.ranks = {}, {}
        for v in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
            self.types[v.name] = v.type.tensor_type.elem_type
            if v.type.tensor_type.HasField("shape"):
                self.ranks[v.name] = len(v.type.tensor_type.shape.dim)

    def attr(self, n, name, default=None):
        a = next((a for a in n.attribute if a.name == name), None)
        return default if a is None else self.onnx.helper.get_attribute_value(a)

    def axes(self, n):
        """A reduction's axes: a list, None (all), or False (not constant)."""
        if n.op_type == "LayerNormalization":
            rank = self.ranks.get(n.input[0])
            return False if rank is None else list(range(self.attr(n, "axis", -1) % rank, rank))
        if self.attr(n, "axes") is not None:
            return list(self.attr(n, "axes"))
        if len(n.input) > 1 and n.input[1]:
            c = self.consts.get(n.input[1])
            return False if c is None else [int(v) for v in c.ravel()]
        return False if self.attr(n, "noop_with_empty_axes", 0) else None

    def rule(self, n, deg_of):
        """(output degree, constants to scale [(input, exponent)], attributes [(name, exponent)]) or None."""
        op, ins = n.op_type, list(n.input)
        cls = [deg_of(t) if t else None for t in ins]  # int degree, "c" constant, "e" external
        d0 = cls[0] if cls else None
        if op in _SAME:
            if not isinstance(d0, int) or any(isinstance(c, int) for c in cls[1:]):
                return None
            if op in _SUMS and self.axes(n) is False:
                return None
            if op == "Sqrt":
                return (d0 // 2, [], []) if d0 % 2 == 0 else None
            return {"Reciprocal": -d0, "ReduceSumSquare": 2 * d0}.get(op, d0), [], []
        if op in ("Mul", "MatMul", "Div") and len(ins) == 2 and any(isinstance(c, int) for c in cls):
            a, b = (c if isinstance(c, int) else 0 for c in cls)
            return (a - b if op == "Div" else a + b), [], []
        if op == "Pow" and isinstance(d0, int) and len(ins) == 2 and ins[1] in self.consts and self.consts[ins[1]].size == 1:
            e = float(self.consts[ins[1]].ravel()[0]) * d0
            return (int(e), [], []) if e == int(e) else None
        if op in _LINEAR:
            region = {c for c in cls if isinstance(c, int)}
            if len(region) != 1 or "e" in cls or (op == "Concat" and "c" in cls):
                return None
            d = region.pop()
            return d, [(k, d) for k, c in enumerate(cls) if c == "c" and d], []
        if op == "Clip" and isinstance(d0, int) and not any(c in ("e",) or isinstance(c, int) for c in cls[1:]):
            return d0, [(k, d0) for k, c in enumerate(cls) if k and c == "c" and d0], []
        if op == "LayerNormalization" and isinstance(d0, int) and not any(isinstance(c, int) for c in cls[1:]):
            if any(o and self.consumers.get(o) for o in n.output[1:]) or self.axes(n) is False:
                return None
            return 0, [], [("epsilon", 2 * d0)]
        return None

    def _deg(self, x, deg):
        return lambda t: 1 if t == x else deg[t] if t in deg else "c" if t in self.consts else "e"

    def region(self, x):
        """The normalisation site around ``x``: (node indices, degrees, rules); nodes empty when none."""
        cand, seen, heap, deg = set(), set(), list(self.consumers.get(x, [])), {x: 1}
        heapq.heapify(heap)
        while heap and len(cand) < MAX_REGION:  # node order is topological: producers first
            i = heapq.heappop(heap)
            if i in seen:
                continue
            seen.add(i)
            r = self.rule(self.nodes[i], self._deg(x, deg))
            if r is None:
                continue
            cand.add(i)
            if r[0]:  # degree 0 is an exit: its readers see the original values
                for o in self.nodes[i].output:
                    deg[o] = r[0]
                    for c in self.consumers.get(o, []):
                        heapq.heappush(heap, c)
        while True:  # drop nodes whose scaled outputs would reach a node outside, until none does
            deg, ok, rules = {x: 1}, [], {}
            for i in sorted(cand):
                r = self.rule(self.nodes[i], self._deg(x, deg))
                if r is not None:
                    ok.append(i)
                    rules[i] = r
                    deg.update({o: r[0] for o in self.nodes[i].output if o})
            keep = set(ok)
            leaks = {i for i in ok for o in self.nodes[i].output
                     if deg.get(o) and (o in self.outputs or any(c not in keep for c in self.consumers.get(o, [])))}
            if not leaks:
                return ok, deg, rules
            cand = keep - leaks

    def is_float(self, t):
        return t and t not in self.consts and self.types.get(t) == _FLOAT

    def candidates(self) -> list[_Cand]:
        """Every site, in node order: a trigger's normalisation region when it has one (its nodes are
        then claimed), else a sum or a scaled MatMul on its own."""
        out, claimed, regions = [], set(), {}
        for i, n in enumerate(self.nodes):
            op, x = n.op_type, (n.input[0] if n.input else "")
            square = (op == "Mul" and len(n.input) == 2 and n.input[1] == x) or (
                op == "Pow" and np.array_equal(self.consts.get(n.input[-1], np.nan), 2.0))
            if i in claimed or not self.is_float(x) or not (op in _SUMS or op in ("LayerNormalization", "MatMul") or square):
                continue
            if op != "MatMul":
                if x not in regions:
                    regions[x] = self.region(x)
                ok, deg, rules = regions[x]
                if i in ok and not claimed & set(ok):
                    c = _Cand("norm", x, i, ok, attrs=[(j, a, e) for j in ok for a, e in rules[j][2]],
                              consts=[(j, k, e) for j in ok for k, e in rules[j][1]])
                    c.probes = [(("abs", t), d) for t, d in deg.items() if d] + self._sum_probes(ok, deg)
                    c.probes += [(("const", j, k), e) for j, k, e in c.consts]
                    out.append(c)
                    claimed.update(ok)
                    continue
                if op not in _SUMS or self.axes(n) is False:
                    continue
            elif not self.is_float(n.input[1]) or n.input[1] == x:
                continue
            d = 2 if op == "ReduceSumSquare" else 1
            o = n.output[0]
            readers = self.consumers.get(o, [])
            c = _Cand("sum" if op != "MatMul" else "matmul", x, i, [i], unscale=d)
            if len(readers) == 1 and o not in self.outputs and readers[0] not in claimed:
                r = self.nodes[readers[0]]
                k = next((k for k, t in enumerate(r.input) if t != o and t in self.consts), None)
                if r.op_type in ("Mul", "Div") and k is not None and (r.op_type == "Mul" or k == 1):
                    c.consts, c.unscale = [(readers[0], k, -d if r.op_type == "Mul" else d)], 0
                    c.nodes.append(readers[0])
            if op == "MatMul" and c.unscale:
                continue  # no constant to fold into: the product leaves FP16 either way
            c.probes = [(("abs", x), 1), (("abs", o), d)] + self._sum_probes([i], {x: 1})
            c.probes += [(("const", j, k), e) for j, k, e in c.consts] + ([(("one",), -d)] if c.unscale else [])
            out.append(c)
            claimed.update(c.nodes)
        return out

    def _sum_probes(self, idx, deg):
        probes = []
        for i in idx:
            n = self.nodes[i]
            d = deg.get(n.input[0], 1)
            if n.op_type in _SUMS:
                probes.append((("sum", i, _SUMS[n.op_type]), d * (2 if _SUMS[n.op_type] == "sq" else 1)))
            elif n.op_type == "LayerNormalization":
                probes += [(("sum", i, "l1"), d), (("sum", i, "sq"), 2 * d)]
        return probes

    def measure(self, probes: list[tuple], inputs: Sequence[np.ndarray]) -> dict[tuple, float]:
        """Max over ``inputs`` of each probe (max |tensor|, max partial-sum bound) in FP32 ONNX Runtime."""
        from onnx import TensorProto, helper, numpy_helper

        m = self.onnx.ModelProto()
        m.CopyFrom(self.model)
        del m.graph.output[:]
        keys = [p for p in dict.fromkeys(probes) if p[0] in ("abs", "sum")]
        for j, key in enumerate(keys):
            src, out = f"__gs_probe{j}", f"__gs_stat{j}"
            if key[0] == "abs":
                m.graph.node.append(helper.make_node("Abs", [key[1]], [src]))
            else:
                n = self.nodes[key[1]]
                op, axes = ("ReduceL1" if key[2] == "l1" else "ReduceSumSquare"), self.axes(n)
                if n.op_type == "GlobalAveragePool":
                    m.graph.node.append(helper.make_node("GlobalLpPool", [n.input[0]], [src], p=1 if key[2] == "l1" else 2))
                    if key[2] == "sq":
                        m.graph.node.append(helper.make_node("Mul", [src, src], [src + "sq"]))
                        src += "sq"
                elif axes is None:
                    m.graph.node.append(helper.make_node(op, [n.input[0]], [src], keepdims=0))
                elif self.opset >= 18:
                    m.graph.initializer.append(numpy_helper.from_array(np.array(axes, np.int64), src + "_axes"))
                    m.graph.node.append(helper.make_node(op, [n.input[0], src + "_axes"], [src], keepdims=0))
                else:
                    m.graph.node.append(helper.make_node(op, [n.input[0]], [src], axes=axes, keepdims=0))
            m.graph.node.append(helper.make_node("ReduceMax", [src], [out], keepdims=0))
            m.graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, None))
        if not keys:
            return {}
        with tempfile.TemporaryDirectory(prefix="dk-graphsafe-") as tmp:
            path = os.path.join(tmp, "probes.onnx")
            self.onnx.save(m, path)
            with OrtRunner(path, optimize=False, arena=False) as runner:
                runs = runner.run_many(inputs)
        return {k: max(float(r[j]) for r in runs) for j, k in enumerate(keys)}

    def const_bound(self, key, e) -> list[tuple[float, int, int, str]]:
        """Terms (value, degree, limit log2, label) keeping a scaled constant inside the converter's range."""
        if key[0] == "one":
            return [(1.0, e, CONST_MAX_LOG2, "unscale factor")]
        c = np.abs(self.consts[self.nodes[key[1]].input[key[2]]].astype(np.float64))
        nz = c[c > 0]
        terms = [(float(c.max()), e, CONST_MAX_LOG2, "constant")] if nz.size else []
        if nz.size and self.nodes[key[1]].op_type in ("Mul", "Div"):  # folded factors must not go subnormal
            terms.append((1.0 / float(nz.min()), -e, -CONST_MIN_LOG2, "1/constant"))
        return terms


def _choose(g: _Graph, c: _Cand, stats: dict) -> tuple[int, float, str] | None:
    """(s, measured value, what set it) for a candidate, or None when it needs or allows no rewrite."""
    terms = []
    for key, d in c.probes:
        if key[0] in ("const", "one"):
            terms += g.const_bound(key, d)
        elif key in stats:
            label = f"max |{key[1]}|" if key[0] == "abs" else f"{key[2]} partial sums of {g.nodes[key[1]].name or key[1]}"
            terms.append((stats[key], d, LIMIT_LOG2, label))
    if any(not math.isfinite(v) for v, *_ in terms):
        return None  # the FP32 graph itself overflows there
    lo, hi, why = -math.inf, math.inf, (0.0, "")
    for v, d, lim, label in terms:
        if v <= 0:
            continue
        b = (math.log2(v) - lim) / d
        if d > 0 and math.ceil(b - 1e-9) > lo:
            lo, why = math.ceil(b - 1e-9), (v, label)
        elif d < 0:
            hi = min(hi, math.floor(b + 1e-9))
    if lo == -math.inf:
        return None
    ops = {g.nodes[i].op_type for i in c.nodes}
    fp32_stats = ops == {"LayerNormalization"} and all(g.attr(g.nodes[i], "stash_type", 1) == 1 for i in c.nodes)
    down_only = c.kind != "norm" or fp32_stats  # scaling up helps only FP16 statistics
    s = max(lo, -MAX_SCALE_UP)
    if (down_only and s <= 0) or s == 0 or s > -CONST_MIN_LOG2 or (c.kind != "norm" and s > hi):
        return None
    return s, why[0], why[1]


def _pattern(g: _Graph, c: _Cand) -> str:
    ops = {g.nodes[i].op_type for i in c.nodes}
    if c.kind != "norm":
        return "matmul-scale" if c.kind == "matmul" else "sum"
    if ops == {"LayerNormalization"}:
        return "layernorm-op"
    if "Sub" in ops and ops & {"ReduceMean", "ReduceSum"}:
        return "layernorm"
    return "rmsnorm" if "ReduceMean" in ops else "l2norm"


def range_safe_model(model, inputs: Sequence[np.ndarray]) -> tuple[object, tuple[Site, ...]]:
    """Rewrite an FP32 ModelProto so that its FP16 copy stays in range (see the module docstring).

    Args:
        model: an FP32 ModelProto (not modified).
        inputs: sample inputs (float32 arrays of the graph's single input shape) whose FP32 ranges
            choose each site's scale.

    Returns:
        (the rewritten ModelProto, the sites rewritten). Unnamed nodes get names, so the islands
        search (:func:`deploy_kit.precision.debug.search`) can name every node.
    """
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    names = {n.name for n in out.graph.node if n.name}
    for i, n in enumerate(out.graph.node):
        if not n.name:
            n.name = next(f"{n.op_type}_{i}{sfx}" for sfx in ("", "_gs", "_gs2") if f"{n.op_type}_{i}{sfx}" not in names)
            names.add(n.name)
    g = _Graph(out)
    cands = g.candidates()
    stats = g.measure([key for c in cands for key, _ in c.probes], inputs) if cands else {}
    nodes, before, after, sites, replaced = g.nodes, {}, {}, [], set()

    def const(name, value):
        out.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    for j, c in enumerate(cands):
        chosen = _choose(g, c, stats)
        if chosen is None:
            continue
        s, value, label = chosen
        tag, z = f"graphsafe{j}", f"{c.x}__graphsafe{j}"
        first = min(i for i in c.nodes if c.x in nodes[i].input)
        before.setdefault(first, []).append(helper.make_node(
            "Mul", [c.x, const(f"{tag}_scale", np.float32(2.0**-s))], [z], name=f"{nodes[c.trigger].name}/GraphSafeScale"))
        for i in c.nodes:
            if c.kind == "matmul":
                nodes[i].input[0] = z if i == c.trigger else nodes[i].input[0]
            else:
                nodes[i].input[:] = [z if t == c.x else t for t in nodes[i].input]
        for m, (i, k, e) in enumerate(c.consts):
            replaced.add(nodes[i].input[k])
            v = g.consts[nodes[i].input[k]]
            nodes[i].input[k] = const(f"{tag}_c{m}", (v * np.float64(2.0 ** (-s * e))).astype(v.dtype))
        for i, name, e in c.attrs:
            eps = float(np.float32(g.attr(nodes[i], name, 1e-5)) * np.float32(2.0 ** (-s * e)))
            kept = [a for a in nodes[i].attribute if a.name != name]
            del nodes[i].attribute[:]
            nodes[i].attribute.extend(kept + [helper.make_attribute(name, eps)])
        if c.unscale:
            o = nodes[c.trigger].output[0]
            nodes[c.trigger].output[0] = f"{o}__graphsafe{j}"
            after.setdefault(c.trigger, []).append(helper.make_node(
                "Mul", [f"{o}__graphsafe{j}", const(f"{tag}_unscale", np.float32(2.0 ** (s * c.unscale)))], [o],
                name=f"{nodes[c.trigger].name}/GraphSafeUnscale"))
        sites.append(Site(nodes[c.trigger].name, _pattern(g, c), s, value, label, tuple(nodes[i].name for i in c.nodes)))
    final = [m for i, n in enumerate(nodes) for m in before.get(i, []) + [n] + after.get(i, [])]
    used = {t for n in final for t in n.input} | {v.name for v in list(out.graph.output) + list(out.graph.input)}
    dead = replaced - used  # constants whose every reader now has a scaled copy
    for fld, items in ((out.graph.node, [n for n in final if not (n.op_type == "Constant" and n.output[0] in dead)]),
                       (out.graph.initializer, [i for i in out.graph.initializer if i.name not in dead])):
        del fld[:]
        fld.extend(items)
    return out, tuple(sites)


def _load_fp32(path: str):
    return load_fp32_graph(path, "the FP16 range-safe pass")


def range_safe(src: str, inputs: Sequence[np.ndarray], dst: str) -> tuple[Site, ...]:
    """Write the range-safe FP32 copy of ``src`` to ``dst`` (atomically); returns the sites rewritten.

    Raises:
        UsageError: a missing or unreadable file, an FP16/INT8 graph, more than one input, no inputs.
    """
    import onnx

    model = _load_fp32(src)
    if not inputs:
        raise UsageError("the FP16 range-safe pass needs at least one sample input")
    safe, sites = range_safe_model(model, inputs)
    with atomic_target(dst) as tmp:
        onnx.save(safe, tmp)
    return sites


def convert_fp16_safe(src: str, inputs: Sequence[np.ndarray], dst: str, *, target_psnr: float = 50.0,
                      kind: str = "image", max_evals: int = 40,
                      log: Callable[[str], None] | None = None) -> SafeFP16Result:
    """FP16 graph of any FP32 ONNX: range-safe rewrites, then the fewest FP32 islands that meet a target.

    Steps: :func:`range_safe_model` (scales from ``inputs``) -> :func:`convert_fp16` (all FP16)
    -> true-FP16 check (:func:`deploy_kit.precision.truefp16.true_fp16_check`) against ``src`` on
    ONNX Runtime; below ``target_psnr``, the islands search (:func:`deploy_kit.precision.debug.search`)
    over the rewritten graph's nodes keeps the smallest FP32 set found that meets it (the best set
    seen when none does). The rewritten FP32 graph computes the same outputs as ``src`` (power-of-two
    scales only), so it stays the FP32 reference.

    Args:
        src: the FP32 ONNX (single input; only read).
        inputs: sample inputs, float32 arrays of the input's shape (scales and the check use them).
        dst: the FP16 ONNX to write (atomically), FP32 graph I/O.
        target_psnr: worst-output true-FP16 PSNR to reach (dB; data range 1 for ``image``, the
            reference's range otherwise).
        kind: ``image`` | ``features`` | ``logits`` (as :func:`deploy_kit.compare.evaluate`).
        max_evals: true-FP16 checks the islands search may run.
        log: progress lines (e.g. ``print``); None for silence.

    Returns:
        A :class:`SafeFP16Result`.

    Raises:
        UsageError: a missing/unreadable file, an FP16 or INT8 graph, several inputs, no inputs,
            a bad ``kind`` or ``max_evals``.
    """
    import onnx

    model = _load_fp32(src)
    if not inputs:
        raise UsageError("convert_fp16_safe needs at least one sample input")
    if kind not in ("image", "features", "logits"):
        raise UsageError(f"kind must be image, features or logits; got {kind!r}")
    if max_evals < 2:
        raise UsageError(f"max_evals must be >= 2; got {max_evals}")
    say = log or (lambda _m: None)
    refs = reference_outputs(src, inputs)
    safe, sites = range_safe_model(model, inputs)
    say(f"range-safe pass: {len(sites)} sites rewritten")
    with tempfile.TemporaryDirectory(prefix="dk-graphsafe-") as tmp:
        safe_path, trial = os.path.join(tmp, "safe.fp32.onnx"), os.path.join(tmp, "trial.fp16.onnx")
        onnx.save(safe, safe_path)

        def evaluate(kept: frozenset) -> float:
            names = [c for c in cands if c in kept]
            convert_fp16(safe_path, trial, exact_pattern(names))
            p = psnr_of(true_fp16_check(safe_path, inputs, fp16_path=trial, refs=refs, kind=kind))
            say(f"  true-FP16 check: {len(names)} kept FP32 -> PSNR {_fmt(p)} dB")
            return p

        cands: list[str] = []
        before = evaluate(frozenset())
        kept, after, evals = (), before, 0
        if not before >= target_psnr:
            cands = candidate_nodes(safe)
            found, s = search(cands, lambda k: before if not k else evaluate(k), target_psnr, max_evals)
            best = found if s.met(s.cache.get(found)) else max(s.cache, key=lambda k: (s.cache[k], -len(k)))
            kept, after, evals = tuple(c for c in cands if c in best), s.cache[best], len(s.cache) - 1
        convert_fp16(safe_path, dst, exact_pattern(list(kept)))  # written atomically
    res = SafeFP16Result(dst, sites, kept, before, after, target_psnr, after >= target_psnr, evals)
    for line in res.lines():
        say(line)
    return res
