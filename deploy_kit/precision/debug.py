"""``deploy-kit debug-precision``: find a small set of nodes to keep FP32 in an FP16 graph.

Starts from the all-FP16 graph (the FP32 ONNX converted with no islands) and judges every
candidate with the true-FP16 check (:mod:`deploy_kit.precision.truefp16`: every FP16 tensor
rounded, reductions accumulated in FP16), against the FP32 ONNX on ONNX Runtime:

1. all FP16; all kept FP32 (the target must be reachable at all);
2. bisection over the topological order: the shortest prefix kept FP32 that meets the target,
   then the latest start of that segment that still meets it;
3. pruning: drop chunks of the kept segment (halves, then halves of halves, down to single
   nodes), keeping each drop for which the target still holds.

Every evaluation counts against ``max_evals``; when it runs out, the last set that met the
target is kept (the report says the search was cut short).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..compare import batch_members, stack_batches
from ..data.samples import sample_images
from ..errors import UsageError
from ..export import update_metadata
from ..fsutil import write_text
from ..manifest import _json_safe
from ..models.registry import get_spec, model_names
from ..onnxmeta import read_metadata
from .fp16 import convert_fp16
from .truefp16 import BACKEND, is_fp16_graph, psnr_of, reference_outputs, true_fp16_check


@dataclass
class Step:
    what: str
    kept: int
    psnr: float
    met: bool


@dataclass
class DebugResult:
    source: str
    output: str | None
    target_psnr: float
    met: bool
    psnr: float
    kept_fp32: list[str]
    modules: dict[str, list[str]]
    steps: list[Step] = field(default_factory=list)
    evals: int = 0
    max_evals: int = 0
    exhausted: bool = False
    candidates: int = 0
    reference: str = "the FP32 ONNX on ONNX Runtime (CPU)"
    check: str = ""
    inputs: str = ""

    def to_dict(self) -> dict:
        return _json_safe(asdict(self))

    def lines(self) -> list[str]:
        out = [f"reference: {self.reference}; check: {self.check}; inputs: {self.inputs}"]
        for s in self.steps:
            out.append(f"  {s.what:<44} kept {s.kept:>5}  PSNR {_fmt(s.psnr)} dB  {'ok' if s.met else 'below target'}")
        out.append(f"{self.evals} evaluations (max {self.max_evals}){'; budget exhausted, the set may not be minimal' if self.exhausted else ''}")
        if self.kept_fp32:
            out.append(f"kept FP32: {len(self.kept_fp32)} nodes in {len(self.modules)} modules")
            for mod, names in self.modules.items():
                out.append(f"  {mod}: {', '.join(n.rsplit('/', 1)[-1] for n in names)}")
        else:
            out.append("kept FP32: none (the all-FP16 graph meets the target)")
        verdict = "meets" if self.met else "does NOT meet"
        out.append(f"result: PSNR {_fmt(self.psnr)} dB {verdict} the target {self.target_psnr:g} dB")
        return out


def _fmt(v: float) -> str:
    return f"{v:.2f}" if math.isfinite(v) else ("inf" if v > 0 else "-inf (non-finite output)")


def module_of(node_name: str) -> str:
    """``/encoders.0/encoders.0.0/norm1/ReduceMean`` -> ``encoders.0.0.norm1`` (TorchScript scopes)."""
    parts = [p for p in node_name.split("/") if p][:-1]
    acc = ""
    for p in parts:
        acc = p if not acc or p.startswith(acc + ".") else f"{acc}.{p}"
    return acc or "(top level)"


def group_by_module(names: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for n in names:
        out.setdefault(module_of(n), []).append(n)
    return out


def candidate_nodes(model) -> list[str]:
    """Named nodes with a floating-point output, in topological (file) order; Constants excluded."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    return [n.name for n in model.graph.node
            if n.name and n.op_type != "Constant" and any(types.get(o) in floats for o in n.output)]


def exact_pattern(names: Sequence[str]) -> list[str]:
    """One regex matching exactly ``names`` (for :func:`deploy_kit.precision.fp16.convert_fp16`)."""
    return [f"^(?:{'|'.join(re.escape(n) for n in names)})$"] if names else []


def load_inputs(path: str, shape: Sequence[int]) -> list[np.ndarray]:
    """Arrays of an ``.npz``, split along the batch axis into inputs of ``shape``.

    The samples are regrouped into batches of the graph's ``shape[0]``, the last one filled up by
    repeating samples from the first (:func:`deploy_kit.compare.batch_members`).
    """
    if not os.path.isfile(path):
        raise UsageError(f"inputs file not found: {path}")
    try:
        data = np.load(path)
        arrays = [np.asarray(data[k], dtype=np.float32) for k in data.files]
    except Exception as exc:  # noqa: BLE001 - an unreadable file is a user error
        raise UsageError(f"{path} is not a readable .npz ({type(exc).__name__})") from exc
    out = []
    for a in arrays:
        if a.ndim == len(shape) - 1:
            a = a[None]
        if tuple(a.shape[1:]) != tuple(shape[1:]):
            raise UsageError(f"{path}: array of shape {a.shape} does not fit the graph input {tuple(shape)}")
        out.extend(a[i : i + 1] for i in range(a.shape[0]))
    if not out:
        raise UsageError(f"{path} holds no arrays")
    if int(shape[0]) > 1:
        return stack_batches(out, batch_members(len(out), int(shape[0])))
    return out


class _Search:
    def __init__(self, evaluate: Callable[[frozenset], float], target: float, max_evals: int):
        self.evaluate_raw = evaluate
        self.target = target
        self.max_evals = max_evals
        self.cache: dict[frozenset, float] = {}
        self.steps: list[Step] = []
        self.exhausted = False

    def can(self) -> bool:
        return len(self.cache) < self.max_evals

    def psnr(self, kept: frozenset, what: str) -> float | None:
        if kept not in self.cache:
            if not self.can():
                self.exhausted = True
                return None
            self.cache[kept] = self.evaluate_raw(kept)
            p = self.cache[kept]
            self.steps.append(Step(what, len(kept), p, self.met(p)))
        return self.cache[kept]

    def met(self, p: float | None) -> bool:
        return p is not None and p >= self.target


def search(cands: Sequence[str], evaluate: Callable[[frozenset], float], target: float, max_evals: int) -> tuple[frozenset, _Search]:
    """The kept set (see the module docstring); evaluate(kept) -> worst PSNR of the check."""
    s = _Search(evaluate, target, max_evals)
    n = len(cands)
    none, everything = frozenset(), frozenset(cands)
    if s.met(s.psnr(none, "all FP16")):
        return none, s
    if not s.met(s.psnr(everything, "all candidates FP32")):
        return everything, s
    # shortest prefix [0, k) kept FP32 that meets the target
    lo, hi = 0, n  # lo fails, hi meets
    while hi - lo > 1 and s.can():
        mid = (lo + hi) // 2
        if s.met(s.psnr(frozenset(cands[:mid]), f"bisect: prefix of {mid} FP32")):
            hi = mid
        else:
            lo = mid
    k = hi
    # latest start j of [j, k) that still meets the target
    lo, hi = 0, k - 1  # [lo, k) meets; hi: the latest start that could
    while hi > lo and s.can():
        mid = (lo + hi + 1) // 2
        if s.met(s.psnr(frozenset(cands[mid:k]), f"bisect: segment [{mid}, {k}) FP32")):
            lo = mid
        else:
            hi = mid - 1
    kept = list(cands[lo:k])
    # pruning: drop chunks, halving those that cannot go
    chunks = [kept]
    while chunks and s.can():
        chunk = chunks.pop(0)
        trial = frozenset(x for x in kept if x not in set(chunk))
        what = f"prune: drop {len(chunk)} ({chunk[0].rsplit('/', 1)[-1]}{'...' if len(chunk) > 1 else ''})"
        if trial != frozenset(kept) and s.met(s.psnr(trial, what)):
            kept = [x for x in kept if x not in set(chunk)]
        elif len(chunk) > 1:
            half = len(chunk) // 2
            chunks[:0] = [chunk[:half], chunk[half:]]
    if chunks:
        s.exhausted = True
    return frozenset(kept), s


def load_fp32_graph(path: str, who: str):
    """An FP32 single-input ONNX model, loaded.

    Args:
        who: what needs it, for the message (``debug-precision``, the FP16 range-safe pass).

    Raises:
        UsageError: a missing or unreadable file, an FP16 or INT8 graph, or several inputs.
    """
    import onnx

    if not os.path.isfile(path):
        raise UsageError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(path)
    except Exception as exc:  # noqa: BLE001 - a corrupt file is a user error here
        raise UsageError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from exc
    if is_fp16_graph(model) or any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise UsageError(f"{path} is not an FP32 graph; give the FP32 ONNX (e.g. <stem>.fp32.onnx)")
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UsageError(f"{path} has {len(inputs)} inputs; {who} takes single-input graphs")
    return model


def debug_precision(onnx_path: str, *, target_psnr: float = 50.0, samples: int = 2, max_evals: int = 40,
                    out_path: str | None = None, inputs_npz: str | None = None,
                    log: Callable[[str], None] | None = None) -> DebugResult:
    """Search FP32 islands for ``onnx_path`` (an FP32 ONNX) and write the FP16 graph + a JSON report.

    Returns:
        DebugResult (``met`` says whether the written graph meets ``target_psnr``).

    Raises:
        UsageError: missing/unreadable file, an FP16 or INT8 graph, bad options.
    """
    if samples < 1:
        raise UsageError(f"--samples must be >= 1; got {samples}")
    if max_evals < 2:
        raise UsageError(f"--max-evals must be >= 2; got {max_evals}")
    model = load_fp32_graph(onnx_path, "debug-precision")
    inits = {i.name for i in model.graph.initializer}
    graph_inputs = [i for i in model.graph.input if i.name not in inits]
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in graph_inputs[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or 0 in dims:
        raise UsageError(f"{onnx_path} input shape {dims} is not a fixed NCHW shape")
    meta = read_metadata(onnx_path)
    if inputs_npz:
        inputs = load_inputs(inputs_npz, dims)
        inputs_text = f"{len(inputs)} arrays from {inputs_npz}"
    else:
        if dims[1] not in (1, 3, 6):
            raise UsageError(f"the graph takes {dims[1]} channels; give --inputs file.npz")

        degradation = meta.get("degradation")
        degradation = None if degradation in (None, "none") else degradation
        inputs = [np.repeat(x, dims[0], axis=0) for x in sample_images(samples, dims[1], dims[2], dims[3], degradation=degradation)]
        inputs_text = f"{samples} sample photos {dims[2]}x{dims[3]}" + (f" ({degradation})" if degradation else "")
    out_shape = [d.dim_value for d in model.graph.output[0].type.tensor_type.shape.dim]
    family = get_spec(meta["model"]) if meta.get("model") in model_names() else None  # its spec says; else the shapes
    kind = "features" if (family is not None and not family.image_outputs) or out_shape != dims else "image"
    cands = candidate_nodes(model)
    refs = reference_outputs(onnx_path, inputs)
    say = log or (lambda _m: None)

    with tempfile.TemporaryDirectory(prefix="dk-debugprec-") as tmp:
        trial = os.path.join(tmp, "trial.onnx")

        def evaluate(kept: frozenset) -> float:
            names = [c for c in cands if c in kept]
            convert_fp16(onnx_path, trial, exact_pattern(names))
            chk = true_fp16_check(onnx_path, inputs, fp16_path=trial, refs=refs, kind=kind)
            p = psnr_of(chk)
            say(f"  eval: {len(names)} kept FP32 -> PSNR {_fmt(p)} dB")
            return p

        kept, s = search(cands, evaluate, target_psnr, max_evals)
    names = [c for c in cands if c in kept]
    psnr = s.cache.get(kept, -math.inf)
    if not s.met(psnr):  # write the best set seen
        best = max(s.cache.items(), key=lambda kv: (kv[1], -len(kv[0])))
        kept, psnr = best
        names = [c for c in cands if c in kept]
    stem = onnx_path[:-5] if onnx_path.endswith(".onnx") else onnx_path
    stem = stem[:-5] if stem.endswith(".fp32") else stem
    out_path = out_path or f"{stem}.fp16-debug.onnx"
    convert_fp16(onnx_path, out_path, exact_pattern(names))  # written atomically (fsutil.atomic_target)

    update_metadata(out_path, {"precision": "fp16", "fp16_debug": {"kept_fp32": names, "target_psnr": target_psnr, "psnr": psnr if math.isfinite(psnr) else str(psnr)}})
    res = DebugResult(
        source=onnx_path, output=out_path, target_psnr=target_psnr, met=s.met(psnr), psnr=psnr,
        kept_fp32=names, modules=group_by_module(names), steps=s.steps, evals=len(s.cache),
        max_evals=max_evals, exhausted=s.exhausted, candidates=len(cands), check=BACKEND, inputs=inputs_text,
    )
    report = (out_path[:-5] if out_path.endswith(".onnx") else out_path) + ".json"
    write_text(report, json.dumps(res.to_dict(), indent=2) + "\n")
    return res
