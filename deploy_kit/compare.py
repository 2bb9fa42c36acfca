"""Parity arithmetic: candidate outputs against reference outputs, numpy only (both halves use it).

Every gate is evaluated and every failure collected before anything raises; tolerances come
from the model spec (:class:`deploy_kit.specs.Tolerance`), never from this module. Backends that
could not run are reported as skipped with the reason, never as a pass. ``verify`` of a bundle
on the device compares here (the reference outputs travel in the bundle); the build machine's
parity runs (ONNX Runtime in a child process, heatmaps) are :mod:`deploy_kit.parity`, which
compares here too. Batches: a graph of static batch N takes N samples per pass.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from .manifest import _json_safe
from .metrics import psnr_from_mse
from .specs import Tolerance


@dataclass
class OutputMetrics:
    name: str
    max_abs: float
    mean_abs: float
    ref_max_abs: float
    psnr: float | None = None  # image outputs: data range 1
    cosine: float | None = None
    psnr_norm: float | None = None  # feature outputs: data range = reference's range
    top1_agreement: float | None = None  # logits
    nonfinite: int = 0


@dataclass
class ElementMetrics:
    """One batch element of one stored input against its own reference output.

    Attributes:
        input: index of the stored input (a batch of N samples).
        element: position in that batch (0 .. N-1).
        sample: which sample image fills this element (index into ``ParityReport.samples``), or
            None where the caller did not say (e.g. a bundle's stored inputs).
        outputs: the metrics of every output of this element alone.
    """

    input: int
    element: int
    sample: int | None
    outputs: list[OutputMetrics] = field(default_factory=list)


@dataclass
class Gate:
    what: str
    value: float
    limit: float
    ok: bool
    op: str = ">="  # how value must compare with limit

    @classmethod
    def at_least(cls, what: str, value: float, limit: float) -> "Gate":
        return cls(what, value, limit, value >= limit, ">=")

    @classmethod
    def at_most(cls, what: str, value: float, limit: float) -> "Gate":
        return cls(what, value, limit, value <= limit, "<=")

    def text(self) -> str:
        digits = 7 if "cosine" in self.what else 3  # 0.99995 must not print as 1
        return f"{self.what} {_fmt(self.value, digits)} {self.op} {_fmt(self.limit, digits)}: {'ok' if self.ok else 'FAIL'}"


@dataclass
class Check:
    """One candidate (backend x precision) against the reference."""

    backend: str
    precision: str
    artifact: str
    status: str  # pass | fail | skipped
    reason: str = ""
    outputs: list[OutputMetrics] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    heatmap: str | None = None
    # the same metrics per batch element (the gates apply to ``outputs``, over every element)
    elements: list[ElementMetrics] = field(default_factory=list)


@dataclass
class ParityReport:
    model: str
    variant: str
    input_shape: list[int]
    tlc: dict | None
    reference: str
    inputs: list[str]  # one label per stored input (a batch of input_shape[0] samples)
    checks: list[Check] = field(default_factory=list)
    samples: list[str] = field(default_factory=list)  # sample labels, indexed by ElementMetrics.sample

    def failures(self) -> list[str]:
        out = []
        for c in self.checks:
            if c.status == "fail":
                bad = [g.text() for g in c.gates if not g.ok] or [c.reason]
                out.append(f"{c.backend} {c.precision}: {'; '.join(bad)}")
        return out

    def passed(self) -> bool:
        return not self.failures()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["passed"] = self.passed()
        return _clean(d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """Aligned text table, one row per output of each check."""
        head = ("backend", "prec", "output", "max abs", "mean abs", "PSNR dB", "cosine", "status")
        rows = []
        for c in self.checks:
            if c.status == "skipped":
                rows.append((c.backend, c.precision, "-", "-", "-", "-", "-", f"skipped: {c.reason}"))
                continue
            for m in c.outputs:
                psnr = m.psnr if m.psnr is not None else m.psnr_norm
                top1 = f" top1 {m.top1_agreement:.0%}" if m.top1_agreement is not None else ""
                rows.append((c.backend, c.precision, m.name, _fmt(m.max_abs), _fmt(m.mean_abs), _fmt(psnr, 2), _fmt(m.cosine, 7), c.status + top1))
        widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head) - 1)]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(r[:-1], widths)) + "  " + str(r[-1]) for r in [head] + rows]
        return "\n".join(lines)

    def to_markdown(self) -> str:
        lines = [
            f"# Parity: {self.model} {self.variant} {self.input_shape}",
            "",
            f"Reference: {self.reference}. TLC: {json.dumps(self.tlc) if self.tlc else 'off'}. Inputs: {', '.join(self.inputs)}.",
            "",
            "| backend | precision | output | max abs | mean abs | PSNR dB | cosine | status |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in self.checks:
            if c.status == "skipped":
                lines.append(f"| {c.backend} | {c.precision} | - | - | - | - | - | skipped: {c.reason} |")
            for m in c.outputs:
                psnr = m.psnr if m.psnr is not None else m.psnr_norm
                lines.append(f"| {c.backend} | {c.precision} | {m.name} | {_fmt(m.max_abs)} | {_fmt(m.mean_abs)} | {_fmt(psnr, 2)} | {_fmt(m.cosine, 6)} | {c.status} |")
        lines.append("")
        for c in self.checks:
            for g in c.gates:
                lines.append(f"- {c.backend} {c.precision}: {g.text()}")
        if any(len(c.elements) > 1 for c in self.checks):
            lines += ["", "Per batch element (input/element: the sample image in it):", "",
                      "| backend | precision | input/element | sample | output | max abs | mean abs | PSNR dB | cosine |",
                      "|---|---|---|---|---|---|---|---|---|"]
            for c in self.checks:
                for e in c.elements:
                    label = self.samples[e.sample] if e.sample is not None and e.sample < len(self.samples) else "-"
                    for m in e.outputs:
                        psnr = m.psnr if m.psnr is not None else m.psnr_norm
                        lines.append(f"| {c.backend} | {c.precision} | {e.input}/{e.element} | {label} | {m.name} | "
                                     f"{_fmt(m.max_abs)} | {_fmt(m.mean_abs)} | {_fmt(psnr, 2)} | {_fmt(m.cosine, 6)} |")
        return "\n".join(lines) + "\n"


def metrics(name: str, ref: np.ndarray, cand: np.ndarray, kind: str) -> OutputMetrics:
    """Error metrics of ``cand`` against ``ref`` (both float arrays of the same shape)."""
    ref = np.asarray(ref, dtype=np.float64)
    cand = np.asarray(cand, dtype=np.float64)
    if ref.shape != cand.shape:
        raise ValueError(f"output {name}: shape {cand.shape} differs from the reference {ref.shape}")
    nonfinite = int((~np.isfinite(cand)).sum())
    diff = np.abs(np.where(np.isfinite(cand), cand, np.inf) - ref)
    mse = float(np.mean((cand - ref) ** 2)) if nonfinite == 0 else math.inf
    m = OutputMetrics(
        name=name,
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        ref_max_abs=float(np.abs(ref).max()),
        nonfinite=nonfinite,
    )
    a, b = ref.ravel(), cand.ravel()
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    m.cosine = float(a @ b / denom) if denom > 0 and nonfinite == 0 else (1.0 if denom == 0 and not a.any() and not b.any() else 0.0)
    if kind == "image":
        m.psnr = psnr_from_mse(mse, 1.0)
    else:
        rng = float(ref.max() - ref.min())
        m.psnr_norm = psnr_from_mse(mse, rng if rng > 0 else 1.0)
    if kind == "logits":
        r1 = ref.reshape(ref.shape[0], -1).argmax(-1)
        c1 = cand.reshape(cand.shape[0], -1).argmax(-1)
        m.top1_agreement = float((r1 == c1).mean())
    return m


def evaluate(
    backend: str,
    precision: str,
    artifact: str,
    names: Sequence[str],
    refs: Sequence[Sequence[np.ndarray]],
    cands: Sequence[Sequence[np.ndarray]],
    kind: str,
    tol: Tolerance,
    members: Sequence[Sequence[int]] | None = None,
    restoration_drop: float | None = None,
) -> Check:
    """Compare every output of every input and apply the spec's gates for ``precision``.

    Args:
        precision: ``fp32`` (max-abs gate), ``fp16``, ``bf16`` (PSNR / cosine gates) or ``int8``; a row
            run at a reduced arithmetic precision passes :func:`run_precision`.
        refs, cands: per input, the list of outputs (same order as ``names``); each output's
            first axis is the batch, and every element is compared with its own reference.
        kind: ``image`` | ``features`` | ``logits``.
        members: per input, the sample index of each batch element (:func:`batch_members`),
            recorded in the per-element metrics; None when unknown.
        restoration_drop: the INT8 quality outcome to gate (dB of restoration PSNR lost against
            FP32 on held-out pairs, deploy_kit/precision/quality.py), gated by
            ``tol.int8_max_restoration_drop``; None where it is not gated (e.g. random weights,
            which restore nothing).

    Returns:
        A Check whose status is ``pass`` or ``fail``; all gates are listed either way. Its
        ``outputs`` hold the metrics over every element of every input (what the gates judge),
        ``elements`` the same metrics per batch element.
    """
    outs: list[OutputMetrics] = []
    for j, name in enumerate(names):
        ref = np.concatenate([r[j] for r in refs], axis=0)
        cand = np.concatenate([c[j] for c in cands], axis=0)
        outs.append(metrics(name, ref, cand, kind))
    elements: list[ElementMetrics] = []
    for i, (r, c) in enumerate(zip(refs, cands)):
        for b in range(int(np.shape(r[0])[0])):
            sample = int(members[i][b]) if members is not None else None
            elements.append(ElementMetrics(i, b, sample, [metrics(name, r[j][b : b + 1], c[j][b : b + 1], kind)
                                                          for j, name in enumerate(names)]))
    gates: list[Gate] = []
    for m in outs:
        if m.nonfinite:
            gates.append(Gate.at_most(f"{m.name} non-finite values", m.nonfinite, 0))
        if precision == "fp32":
            value = m.max_abs / m.ref_max_abs if tol.fp32_relative and m.ref_max_abs > 0 else m.max_abs
            label = "max abs / max |ref|" if tol.fp32_relative else "max abs"
            gates.append(Gate.at_most(f"{m.name} {label}", value, tol.fp32_max_abs))
            continue
        if precision == "bf16":  # no measured BF16 cosine gate in the spec: FP16's, the stricter one
            min_psnr = tol.bf16_min_psnr
            min_cos = tol.bf16_min_cosine if tol.bf16_min_cosine is not None else tol.fp16_min_cosine
        else:
            min_psnr = tol.fp16_min_psnr if precision == "fp16" else tol.int8_min_psnr
            min_cos = tol.fp16_min_cosine if precision == "fp16" else tol.int8_min_cosine
        if kind == "image" and min_psnr is not None:
            gates.append(Gate.at_least(f"{m.name} PSNR dB", m.psnr, min_psnr))
        if min_cos is not None:
            gates.append(Gate.at_least(f"{m.name} cosine", m.cosine, min_cos))
        if m.top1_agreement is not None:
            gates.append(Gate.at_least(f"{m.name} top-1 agreement", m.top1_agreement, 1.0))
    if restoration_drop is not None and tol.int8_max_restoration_drop is not None:
        gates.append(Gate.at_most("restoration PSNR drop dB", restoration_drop, tol.int8_max_restoration_drop))
    status = "pass" if all(g.ok for g in gates) else "fail"
    return Check(backend, precision, artifact, status, outputs=outs, gates=gates, elements=elements)


# precisions from least to most loss of accuracy: BF16 keeps 8 significant bits to FP16's 11
_LOSS_ORDER = ("fp32", "fp16", "bf16", "int8")


def run_precision(graph: str, compute: str | None) -> str:
    """The precision a parity row is gated at: the lossier of the graph's own (its weights and types)
    and the arithmetic a runner computes it in (OpenVINO's inference precision; None: the graph's).

    An FP32 bundle run by OpenVINO at BF16 is a ``bf16`` row; an FP16 bundle run at FP32 stays ``fp16``
    (its weights are FP16); an INT8 bundle stays ``int8`` (its gate is the loosest).

    Raises:
        ValueError: a precision that is none of fp32, fp16, bf16, int8.
    """
    for p in (graph, compute or graph):
        if p not in _LOSS_ORDER:
            raise ValueError(f"unknown precision '{p}'; expected one of {', '.join(_LOSS_ORDER)}")
    return max(graph, compute or graph, key=_LOSS_ORDER.index)


def skipped(backend: str, precision: str, artifact: str, reason: str) -> Check:
    """A Check for a candidate that could not run here (never a pass).

    Args:
        backend, precision, artifact: what would have run.
        reason: why it could not, with what to do (one line).

    Returns:
        A Check of status ``skipped``.
    """
    return Check(backend, precision, artifact, "skipped", reason=reason)


# ---------------------------------------------------------------------------------------
# batches: a graph of static batch N takes N samples per pass
# ---------------------------------------------------------------------------------------
def batch_members(count: int, batch: int) -> list[list[int]]:
    """Which of ``count`` samples fill each batch of ``batch``: in order, N per batch, the last
    batch (the only one, when count < N) filled up by cycling from sample 0.

    Args:
        count: number of samples (>= 1).
        batch: the graph's batch N (>= 1).

    Returns:
        One list of N sample indices per batch, ceil(count / N) batches; e.g. 3 samples at N = 2:
        ``[[0, 1], [2, 0]]``, 2 samples at N = 4: ``[[0, 1, 0, 1]]``.

    Raises:
        ValueError: count or batch below 1.
    """
    if count < 1 or batch < 1:
        raise ValueError(f"batch_members needs count and batch >= 1; got {count}, {batch}")
    return [[(i * batch + b) % count for b in range(batch)] for i in range(-(-count // batch))]


def stack_batches(samples: Sequence[np.ndarray], members: Sequence[Sequence[int]]) -> list[np.ndarray]:
    """Stack single samples into the batches ``members`` names.

    Args:
        samples: arrays with a batch axis of 1, e.g. (1, C, H, W).
        members: per batch, the sample indices (:func:`batch_members`).

    Returns:
        One (N, ...) array per batch.
    """
    return [np.concatenate([samples[i] for i in m], axis=0) for m in members]


def stack_outputs(outputs: Sequence[Sequence[np.ndarray]], members: Sequence[Sequence[int]]) -> list[list[np.ndarray]]:
    """Per-sample outputs stacked as :func:`stack_batches` stacks the inputs: each batch element
    keeps its own sample's output.

    Args:
        outputs: per sample, its outputs (each with a batch axis of 1).
        members: per batch, the sample indices (:func:`batch_members`).

    Returns:
        Per batch, its outputs, each (N, ...).
    """
    return [[np.concatenate([outputs[i][j] for i in m], axis=0) for j in range(len(outputs[m[0]]))] for m in members]


def unstack_outputs(outputs: Sequence[Sequence[np.ndarray]], members: Sequence[Sequence[int]],
                    count: int) -> list[list[np.ndarray]]:
    """The inverse of :func:`stack_outputs`: per-sample outputs from batched ones.

    Args:
        outputs: per batch, its outputs (each (N, ...)).
        members: per batch, the sample indices (:func:`batch_members`).
        count: the number of samples.

    Returns:
        Per sample, its outputs (batch axis 1), taken from the first element that holds it (the
        fill-up repeats are dropped).
    """
    found: dict[int, list[np.ndarray]] = {}
    for outs, m in zip(outputs, members):
        for b, i in enumerate(m):
            found.setdefault(i, [o[b : b + 1] for o in outs])
    return [found[i] for i in range(count)]


def run_samples(runner, samples: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
    """Outputs per sample of a runner whose input may take a batch of N > 1.

    Args:
        runner: a :class:`deploy_kit.runners.base.Runner` (``input_shape`` says its batch).
        samples: inputs of the runner's full shape, or single samples (1, C, H, W) for a batched
            runner: these are packed N at a time (:func:`batch_members`) and the outputs split
            back, so callers that hold single images (the INT8 quality pairs) need not know N.

    Returns:
        Per input given, the list of outputs (per sample when single samples were given).
    """
    shape = getattr(runner, "input_shape", None)
    batch = int(shape[0]) if shape and int(shape[0]) > 1 else 1
    if batch == 1 or not samples or int(samples[0].shape[0]) == batch:
        return runner.run_many(samples)
    members = batch_members(len(samples), batch)
    return unstack_outputs(runner.run_many(stack_batches(samples, members)), members, len(samples))


def _fmt(v, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if digits != 3:
            return f"{v:.{digits}f}"
        return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(v)


def _clean(obj):
    """JSON-safe: inf/nan become strings (the manifest's rule, one implementation)."""
    return _json_safe(obj)
