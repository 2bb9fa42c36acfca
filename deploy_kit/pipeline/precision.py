"""The precision stages: the FP16 graph (a family's FP32 islands, or the graph-level range-safe pass
for a user's graph) or the INT8 Q/DQ graph with its calibration and held-out quality table, and
their checks (ONNX Runtime, true-FP16 rounding).
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import replace
from typing import TYPE_CHECKING

from .. import compare
from ..compare import _clean
from ..export import update_metadata
from ..fsutil import write_text
from ..precision.calibration import batched, eval_pairs, load_calibration_set
from ..precision.fp16 import convert_fp16
from ..precision.graphsafe import convert_fp16_safe
from ..precision.int8 import quantize_int8
from ..precision.quality import format_quality_table, quality_table
from ..precision.truefp16 import BACKEND, true_fp16_outputs
from ..runners.base import in_child_process
from .graph import parity_onnx
from .records import Graph, Job, Reference, check_line

if TYPE_CHECKING:  # pragma: no cover
    from ..compare import Check
    from ..precision.calibration import CalibrationSet


def stage_precision(job: Job, reference: Reference, fp32: Graph) -> Graph | None:
    """Write the FP16 or INT8 graph and check it.

    FP16 gets an ONNX Runtime row and a true-FP16 row. INT8 image models first get the held-out
    quality table (:func:`stage_quality`), whose restoration drop is one of the INT8 row's gates.

    Args:
        job: the run.
        reference: the PyTorch FP32 outputs.
        fp32: the FP32 graph.

    Returns:
        The FP16/INT8 graph with its parity rows; None for an FP32 export.
    """
    precision = job.req.precision
    if precision == "fp32":
        return None
    path = f"{job.stem}.{precision}.onnx"

    def go() -> tuple[None, str]:
        detail = _convert_fp16(job, reference, fp32.path, path) if precision == "fp16" else _quantize(job, fp32.path, path)
        update_metadata(path, {"precision": precision})  # verify gates by this
        job.res.artifacts.append((f"{precision.upper()} ONNX", path))
        return None, detail

    job.timed(f"precision {precision}", go)
    if precision == "fp16":
        graph = parity_onnx(job, reference, precision, path)
        return replace(graph, checks=graph.checks + (stage_true_fp16(job, reference, path),))
    drop = stage_quality(job, fp32.path, path) if job.kind == "image" else None
    return parity_onnx(job, reference, precision, path, restoration_drop=drop)


def _convert_fp16(job: Job, reference: Reference, src: str, dst: str) -> str:
    """The FP16 graph of ``src``; returns the progress detail.

    A built-in family's graph is range-safe already (its model file's export form) and keeps the
    family's FP32 islands; a user's graph gets the graph-level range-safe pass and, where the
    true-FP16 check still misses the gate, the smallest set of FP32 nodes that meets it
    (precision/graphsafe.py), named in the notes.
    """
    if job.req.source is not None:
        target = job.spec.tolerance.fp16_min_psnr or 50.0
        res = convert_fp16_safe(src, list(reference.inputs), dst, target_psnr=target,
                                kind="image" if job.kind == "image" else "features",
                                log=lambda line: job.progress("detail", line))
        sites = ", ".join(sorted({site.pattern for site in res.sites})) or "none needed"
        kept = ", ".join(res.kept_fp32) if res.kept_fp32 else "none"
        job.res.notes.append(f"FP16 (graph-level range-safe pass): {len(res.sites)} sites rescaled ({sites}); "
                             f"kept FP32: {len(res.kept_fp32)} nodes ({kept}); true-FP16 PSNR "
                             f"{res.psnr_before:.2f} dB before islands, {res.psnr_after:.2f} dB after"
                             + ("" if res.met else f" - below the {target:g} dB target"))
        return f"{len(res.sites)} range-safe sites, {len(res.kept_fp32)} nodes kept FP32"
    rep = convert_fp16(src, dst, job.adapter.fp32_islands(job.req))
    job.res.notes.append(f"FP16: kept FP32: {len(rep.kept_fp32)} nodes matching {', '.join(rep.patterns) or 'nothing'}")
    return rep.line()


def _quantize(job: Job, src: str, dst: str) -> str:
    """The INT8 Q/DQ graph of ``src`` and the legacy calibration cache; returns the progress detail."""
    req, s = job.req, job.int8
    cal = _calibration_set(job)
    opts = replace(s, fp32_patterns=s.fp32_patterns + tuple(job.adapter.int8_excluded(req)),
                   remainder_fp32_patterns=s.remainder_fp32_patterns + tuple(job.adapter.fp32_islands(req)))
    rep = quantize_int8(src, dst, cal, opts, cache_key_extra=req.stem())
    job.res.notes.append(f"calibration: {cal.description}")
    job.res.artifacts.append(("TRT<=10 calibration cache", rep.legacy_cache))
    job.res.next_steps.append(f"JetPack TensorRT 10 implicit INT8 (not executed here): {rep.trtexec}")
    return (f"{rep.quantized_nodes} nodes quantized ({s.method}), {len(rep.excluded)} excluded, "
            f"statistics cache {'hit' if rep.cache_hit else 'miss'}")


def _calibration_set(job: Job) -> CalibrationSet:
    """The calibration crops of ``job.int8`` at the export size, degraded as the model's inputs are."""
    req, adapter = job.req, job.adapter
    cal = load_calibration_set(
        job.int8.calib,
        channels=adapter.input_channels(req),
        height=req.height,
        width=req.width,
        count=job.int8.calib_count,
        seed=req.seed,
        degradation=adapter.input_degradation(req),
    )
    if req.batch > 1:
        cal = batched(cal, req.batch)  # the graph takes N crops per pass
    if cal.skipped:
        job.res.notes.append(f"calibration: skipped {len(cal.skipped)} files (first: {cal.skipped[0][0]}: {cal.skipped[0][1]})")
    return cal


def stage_quality(job: Job, fp32_path: str, int8_path: str) -> float | None:
    """FP32, FP16 and INT8 on held-out degraded/clean pairs: ``<stem>.int8.quality.json`` and a note.

    Args:
        job: the run.
        fp32_path, int8_path: the FP32 and INT8 graphs (an FP16 one is made for the table only).

    Returns:
        The INT8 restoration drop (dB) for the INT8 parity row to gate; None with random
        weights, which restore nothing (the run notes that the gate is not applied).
    """
    return job.timed("quality (held-out images)", lambda: _quality(job, fp32_path, int8_path))


def _quality(job: Job, fp32_path: str, int8_path: str) -> tuple[float | None, str]:
    req, adapter, res = job.req, job.adapter, job.res
    degradation = adapter.input_degradation(req)
    pairs = eval_pairs(channels=adapter.input_channels(req), height=req.height,
                       width=req.width, count=job.int8.eval_pairs, degradation=degradation,
                       scale=req.source.scale if req.source else 1)
    with tempfile.TemporaryDirectory(prefix=".dk-quality-", dir=os.path.dirname(int8_path) or ".") as tmp:
        # an FP16 row too, so the user sees what each precision costs (not kept as an artifact)
        fp16_path = os.path.join(tmp, "fp16.onnx")
        convert_fp16(fp32_path, fp16_path, adapter.fp32_islands(req))
        table = quality_table({"fp32": fp32_path, "fp16": fp16_path, "int8": int8_path}, pairs,
                              input_name=adapter.input_names(req)[0])
    res.quality = table
    write_text(f"{job.stem}.int8.quality.json", json.dumps(_clean({"degradation": degradation, "table": table}), indent=2))
    res.artifacts.append(("quality table", f"{job.stem}.int8.quality.json"))
    drop = table["int8"]["restoration_drop"]
    if not req.weights and job.spec.tolerance.int8_max_restoration_drop is not None:
        res.notes.append("quality: random weights restore nothing, so the restoration-drop gate is not applied (pass --weights)")
    res.notes.append("quality (" + (degradation or "no degradation") + f", {len(pairs)} held-out images):\n" + format_quality_table(table))
    detail = f"restoration drop {drop:.3f} dB, INT8 vs FP32 {table['int8']['psnr_vs_fp32']:.1f} dB"
    return (drop if req.weights else None), detail


TRUE_FP16_MAX_PIXELS = 512 * 512  # the emulation graph holds every tensor twice (FP16-rounded copy)


def stage_true_fp16(job: Job, reference: Reference, path: str) -> Check:
    """A parity row that rounds every intermediate tensor to FP16 (precision/truefp16.py).

    ONNX Runtime's CPU kernels compute FP16 graphs in FP32 between casts, so the ONNX Runtime row
    cannot show an FP16 overflow; this one does (inf/NaN or lost PSNR), as TensorRT FP16 would.

    Args:
        job: the run.
        reference: the PyTorch FP32 outputs.
        path: the FP16 ONNX.

    Returns:
        The row; skipped, with the reason, above :data:`TRUE_FP16_MAX_PIXELS` per pass.
    """
    req = job.req
    # a pass holds every batch element's tensors, so the memory bound counts the whole batch
    if req.batch * req.height * req.width > TRUE_FP16_MAX_PIXELS:
        per_pass = f"{req.batch} x {req.height}x{req.width}" if req.batch > 1 else "this size"
        return compare.skipped(
            "true-fp16", "fp16", path,
            f"runs up to {TRUE_FP16_MAX_PIXELS} pixels per pass (memory; {per_pass} is more); the same graph rules "
            "apply at every size and batch: export at 512x512, batch 1, to run it")

    def go() -> tuple[Check, str]:
        outs = in_child_process(_true_fp16_child, path, list(reference.inputs))
        check = compare.evaluate(BACKEND, "fp16", path, job.output_names, reference.refs, outs, job.kind,
                                job.spec.tolerance, reference.members)
        return check, check_line(check)

    return job.timed("parity fp16 (true FP16 rounding)", go)


def _true_fp16_child(path: str, inputs: list) -> list:
    return true_fp16_outputs(path, inputs, fp16_path=path)
