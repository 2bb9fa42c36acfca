"""Chains the stages: model -> ONNX -> simplified -> precision -> engine -> parity. No hidden state.

Each stage is a plain function from files to files in its own module; this module only decides
file names, passes paths along, and collects what happened into an :class:`ExportResult`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from . import __version__
from .errors import UsageError
from .specs import PRECISIONS, ExportRequest

STAGES = ("onnx", "simplified", "precision", "engine")


@dataclass
class Int8Settings:
    """What ``--int8`` needs beyond the request (see deploy_kit/precision/int8.py)."""

    calib: str | None = None
    count: int = 32
    method: str = "minmax"
    remainder: str = "fp32"
    eval_pairs: int = 4  # held-out (degraded, clean) pairs for the quality table


@dataclass
class ExportResult:
    request: ExportRequest
    artifacts: list[tuple[str, str]] = field(default_factory=list)  # (label, path)
    timings: list[tuple[str, float]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    report: Any = None  # ParityReport
    quality: dict | None = None  # INT8 quality table (precision -> PSNRs), image models only
    next_steps: list[str] = field(default_factory=list)


Progress = Callable[[str, str], None]  # (event, text): event "start" | "done" | "note"


def _quiet(event: str, text: str) -> None:
    return None


def validate_request(req: ExportRequest) -> None:
    """Reject impossible requests with one line before any work is done."""
    if req.height <= 0 or req.width <= 0:
        raise UsageError(f"height and width must be positive integers; got {req.height}x{req.width}")
    if req.height * req.width > 8192 * 8192:
        raise UsageError(f"{req.height}x{req.width} is larger than deploy-kit supports (8192x8192); tile the image instead")
    if req.precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{req.precision}'; choose one of {', '.join(PRECISIONS)}")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def run_export(
    req: ExportRequest,
    *,
    out_dir: str,
    backend: str | None = "tensorrt-rtx",
    stop_after: str | None = None,
    samples: int = 2,
    int8: Int8Settings | None = None,
    build_options: dict[str, Any] | None = None,
    progress: Progress = _quiet,
) -> ExportResult:
    """Run the whole chain for one request.

    Args:
        req: validated export request.
        out_dir: directory for every artifact (created).
        backend: ``tensorrt-rtx``, ``tensorrt`` or None (stop before the engine).
        stop_after: one of STAGES, or None for the whole chain.
        samples: number of sample images for parity.
        int8: calibration settings when ``req.precision == "int8"``.
        build_options: passed to the engine backend (compute capabilities, timing cache, DLA).
        progress: callback for the progress display.

    Returns:
        ExportResult (artifacts, timings, parity report, next steps).

    Raises:
        DeployKitError subclasses for user errors; ParityError is *not* raised here — the caller
        decides (the CLI exits non-zero when ``result.report.passed()`` is False).
    """
    import torch

    from . import parity
    from .engine import get_backend
    from .export import export_onnx, update_metadata
    from .memory import map_large_allocations, release_memory
    from .models import get_adapter, get_spec
    from .models.checkpoint import load_model
    from .simplify import simplify

    validate_request(req)
    map_large_allocations()  # freed full-resolution activations go back to the OS (memory.py)
    if stop_after is not None and stop_after not in STAGES:
        raise UsageError(f"--stop-after must be one of {', '.join(STAGES)}")
    engine_backend = get_backend(backend) if backend else None
    if engine_backend is not None:
        engine_backend.trt()  # fail early, before minutes of work, when the backend is missing
    spec = get_spec(req.model)
    adapter = get_adapter(req.model)
    adapter.validate(req)
    res = ExportResult(req)
    os.makedirs(out_dir, exist_ok=True)

    def stage(label: str):
        progress("start", label)
        return time.perf_counter()

    def finish(label: str, t0: float, detail: str = "") -> None:
        dt = time.perf_counter() - t0
        res.timings.append((label, dt))
        progress("done", f"{label}: {detail}" if detail else label)

    t0 = stage("load model")
    loaded = load_model(adapter, None if req.variant == "custom" else req.variant, req.weights, req.seed)
    if req.variant != loaded.variant.name or loaded.variant.name == "custom":
        req = replace(req, variant=loaded.variant.name, hparams=loaded.variant.hparams if loaded.variant.name == "custom" else ())
        res.request = req
    res.notes.append(loaded.note)
    finish("load model", t0, f"{spec.name} {loaded.variant.name}, {loaded.note}")

    stem = os.path.join(out_dir, req.stem())
    input_names, output_names = adapter.input_names(req), adapter.output_names(req)
    kind = adapter.output_kind(req)
    tol = spec.tolerance

    t0 = stage("reference")
    inputs = adapter.sample_inputs(req, count=samples)
    refs = reference_outputs(adapter, loaded.model, req, inputs)
    exportable = adapter.wrap(loaded.model, req, static=True)
    ref_desc = f"PyTorch {torch.__version__} FP32 eager{adapter.reference_label(req)}"
    degradation = adapter.input_degradation(req)
    finish("reference", t0, f"{len(inputs)} sample images{f' + {degradation}' if degradation else ''}, {ref_desc}")

    metadata = {
        "deploy_kit_version": __version__,
        "model": req.model,
        "variant": req.variant,
        "hparams": loaded.variant.kwargs(),
        "input_shape": list(inputs[0].shape),
        "tlc": req.tlc.as_dict() if req.tlc else None,
        "options": dict(req.options),
        "weights": os.path.abspath(req.weights) if req.weights else None,
        "weights_sha256": file_sha256(req.weights) if req.weights else None,
        "seed": req.seed,
        "degradation": degradation or "none",
    }
    report = parity.ParityReport(
        model=req.model,
        variant=req.variant,
        input_shape=list(inputs[0].shape),
        tlc=metadata["tlc"],
        reference=ref_desc,
        inputs=input_labels(len(inputs), degradation, req.seed),
    )
    res.report = report
    work = tempfile.mkdtemp(prefix=".dk-work-", dir=out_dir)
    try:
        t0 = stage("export ONNX")
        raw = os.path.join(work, "raw.onnx")
        info = export_onnx(
            exportable,
            torch.from_numpy(inputs[0]),
            raw,
            input_names=input_names,
            output_names=output_names,
            metadata={**metadata, "precision": "fp32"},
        )
        finish("export ONNX", t0, f"{info.nodes} nodes, opset 17, largest pool window {info.max_pool_window}")
        del exportable, loaded
        release_memory()  # ONNX Runtime runs next, in its own process, and needs the room

        t0 = stage("simplify")
        fp32_path = f"{stem}.fp32.onnx"
        srep = simplify(raw, fp32_path)
        res.artifacts.append(("FP32 ONNX", fp32_path))
        finish("simplify", t0, srep.line())
        if stop_after == "onnx" or stop_after == "simplified":
            res.notes.append(f"stopped after '{stop_after}' as asked")
        t0 = stage("parity fp32 (onnxruntime)")
        outs = parity.run_onnxruntime(fp32_path, inputs, input_names[0], isolated=True)
        check = parity.evaluate("onnxruntime", "fp32", fp32_path, output_names, refs, outs, kind, tol)
        report.checks.append(check)
        finish("parity fp32 (onnxruntime)", t0, _check_line(check))
        if check.status == "fail":
            res.notes.append(_fp32_failure_diagnosis(adapter, req, inputs, refs, outs))
        if stop_after in ("onnx", "simplified"):
            return _close(res, stem, report, kind, refs, outs, "fp32")

        cand_path, cand_outs = fp32_path, outs
        if req.precision != "fp32":
            t0 = stage(f"precision {req.precision}")
            cand_path = f"{stem}.{req.precision}.onnx"
            detail = _make_precision(req, adapter, fp32_path, cand_path, int8, res)
            update_metadata(cand_path, {"precision": req.precision})  # verify gates by this
            res.artifacts.append((f"{req.precision.upper()} ONNX", cand_path))
            finish(f"precision {req.precision}", t0, detail)
            t0 = stage(f"parity {req.precision} (onnxruntime)")
            cand_outs = parity.run_onnxruntime(cand_path, inputs, input_names[0], isolated=True)
            check = parity.evaluate("onnxruntime", req.precision, cand_path, output_names, refs, cand_outs, kind, tol)
            report.checks.append(check)
            finish(f"parity {req.precision} (onnxruntime)", t0, _check_line(check))
            if req.precision == "int8" and kind == "image":
                t0 = stage("quality (held-out images)")
                detail = _quality(req, adapter, fp32_path, cand_path, int8 or Int8Settings(), check, res, stem)
                finish("quality (held-out images)", t0, detail)
        if stop_after == "precision" or engine_backend is None:
            if engine_backend is None:
                report.checks.append(parity.skipped("engine", req.precision, "-", "--backend none: no engine was built"))
            return _close(res, stem, report, kind, refs, cand_outs, req.precision)

        t0 = stage(f"engine ({engine_backend.name})")
        plan = f"{stem}.{req.precision}.{engine_backend.major()}.plan"
        built = engine_backend.build(cand_path, plan, **(build_options or {}))
        res.artifacts.append((f"{engine_backend.name} engine", plan))
        finish(f"engine ({engine_backend.name})", t0, f"{built.seconds:.1f} s, {built.size / 2**20:.1f} MB")
        if req.precision == "int8" and engine_backend.name == "tensorrt-rtx":
            res.notes.append(
                "TensorRT-RTX documents INT8 only as weight-only GEMM: Q/DQ convolutions do not run as INT8 kernels "
                "there, so expect FP16/FP32 speed (and a plan larger than FP32: 20 MB vs 6.5 MB measured on the NAFNet "
                "demo); INT8 speed needs the tensorrt backend (desktop, Jetson)"
            )

        ok, why = engine_backend.can_run()
        if ok:
            t0 = stage(f"parity {req.precision} ({engine_backend.name})")
            eng_outs = run_engine(plan, engine_backend.name, inputs, input_names[0], output_names)
            check = parity.evaluate(engine_backend.name, req.precision, plan, output_names, refs, eng_outs, kind, tol)
            report.checks.append(check)
            finish(f"parity {req.precision} ({engine_backend.name})", t0, _check_line(check))
        else:
            report.checks.append(parity.skipped(engine_backend.name, req.precision, plan, why))
        _write_manifest(plan, req, metadata, engine_backend, built, report, cand_path)
        res.artifacts.append(("engine manifest", plan + ".json"))
        return _close(res, stem, report, kind, refs, cand_outs, req.precision, plan=plan)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def input_labels(count: int, degradation: str | None, seed: int) -> list[str]:
    """How each parity input was made (printed in reports)."""
    how = f" + {degradation} (seed {seed})" if degradation else " (clean)"
    return [f"sample image {i}{how}" for i in range(count)]


def reference_outputs(adapter, model, req: ExportRequest, inputs) -> list[list]:
    """Outputs of the eager PyTorch FP32 reference (TLC as upstream computes it) per input."""
    import torch

    reference = adapter.wrap(model, req, static=False)
    with torch.no_grad():
        return [[o.numpy() for o in _as_list(reference(torch.from_numpy(x)))] for x in inputs]


CONDITIONING_MAX_PIXELS = 512 * 512  # a float64 forward pass needs about twice the FP32 memory


def _fp32_failure_diagnosis(adapter, req: ExportRequest, inputs, refs, outs) -> str:
    """Tell an export error from an input the model itself cannot compute stably in FP32.

    Re-runs the worst sample through the PyTorch model in float64: if the FP32 reference is
    itself as far from that as ONNX Runtime is, FP32 rounding (amplified by the model at this
    input) explains the failure. Seen on BiasFree Restormer: no bias anywhere, so an exactly
    black region stays tiny and the LayerNorm's 1/sqrt(eps) blows its rounding up block by block.
    """
    import numpy as np
    import torch

    from .models.checkpoint import load_model

    errors = [max(float(np.max(np.abs(np.asarray(o, np.float64) - r))) for o, r in zip(out, ref)) for out, ref in zip(outs, refs)]
    i = int(np.argmax(errors))
    if req.height * req.width > CONDITIONING_MAX_PIXELS:
        return (f"fp32 failure not diagnosed: the float64 re-run that tells export errors from ill-conditioned "
                f"inputs is limited to {CONDITIONING_MAX_PIXELS} pixels; re-export at 512x512 or smaller to run it")
    loaded = load_model(adapter, None if req.variant == "custom" else req.variant, req.weights, req.seed)
    model64 = adapter.wrap(loaded.model, req, static=False).double()
    del loaded
    with torch.no_grad():
        ref64 = [o.numpy() for o in _as_list(model64(torch.from_numpy(inputs[i]).double()))]
    del model64
    ref_err = max(float(np.max(np.abs(r - t))) for r, t in zip(refs[i], ref64))
    ort_err = max(float(np.max(np.abs(np.asarray(o, np.float64) - t))) for o, t in zip(outs[i], ref64))
    head = (f"fp32 diagnosis, sample {i}: PyTorch FP32 is {ref_err:.2e} from a float64 run of the same model, "
            f"ONNX Runtime {ort_err:.2e}")
    if ref_err >= 0.5 * errors[i]:
        return (head + ": the input is ill-conditioned for this model (FP32 rounding decides the output, not the "
                "export); check with the inputs it sees in deployment (--degradation) or trained --weights")
    return head + ": the reference is stable, so the export computes something else; report it with --debug output"


def run_engine(plan: str, backend: str, inputs, input_name: str, output_names) -> list[list]:
    """Outputs of a built engine per input (needs a GPU runtime; callers check can_run first)."""
    from .runtime import EngineSession

    sess = EngineSession(plan, backend)
    try:
        return [[sess.run({input_name: x})[n] for n in output_names] for x in inputs]
    finally:
        sess.close()


def _make_precision(req, adapter, fp32_path: str, dst: str, int8: Int8Settings | None, res: ExportResult) -> str:
    if req.precision == "fp16":
        from .precision.fp16 import convert_fp16

        rep = convert_fp16(fp32_path, dst, adapter.fp32_islands(req))
        res.notes.append(f"FP16: kept FP32: {len(rep.kept_fp32)} nodes matching {', '.join(rep.patterns) or 'nothing'}")
        return rep.line()
    from .precision.calibration import load_calibration_set
    from .precision.int8 import Int8Options, quantize_int8

    s = int8 or Int8Settings()
    variant = adapter.resolve_variant(req)
    degradation = adapter.input_degradation(req)
    cal = load_calibration_set(
        s.calib,
        channels=adapter.in_channels(variant),
        height=req.height,
        width=req.width,
        count=s.count,
        seed=req.seed,
        degradation=degradation,
    )
    if cal.skipped:
        res.notes.append(f"calibration: skipped {len(cal.skipped)} files (first: {cal.skipped[0][0]}: {cal.skipped[0][1]})")
    opts = Int8Options(method=s.method, remainder=s.remainder, fp32_patterns=tuple(adapter.fp32_islands(req)))
    rep = quantize_int8(fp32_path, dst, cal, opts, cache_key_extra=req.stem())
    res.notes.append(f"calibration: {cal.description}")
    if rep.get("legacy_cache"):
        res.artifacts.append(("TRT<=10 calibration cache", rep["legacy_cache"]))
        res.next_steps.append(f"JetPack TensorRT 10 implicit INT8 (not executed here): {rep['trtexec']}")
    excluded = rep.get("excluded", [])
    return f"{rep.get('quantized_nodes', '?')} nodes quantized ({s.method}), {len(excluded)} excluded, statistics cache {rep.get('cache', '?')}"


def _quality(req, adapter, fp32_path: str, int8_path: str, s: Int8Settings, check, res: ExportResult, stem: str) -> str:
    """FP32 vs INT8 on held-out degraded/clean pairs; gates the restoration drop for trained weights."""
    from .fsutil import write_text
    from .parity import Gate, _clean
    from .precision.calibration import eval_pairs
    from .precision.quality import format_quality_table, quality_table

    degradation = adapter.input_degradation(req)
    pairs = eval_pairs(channels=adapter.in_channels(adapter.resolve_variant(req)), height=req.height,
                       width=req.width, count=s.eval_pairs, degradation=degradation)
    from .precision.fp16 import convert_fp16

    with tempfile.TemporaryDirectory(prefix=".dk-quality-", dir=os.path.dirname(int8_path) or ".") as tmp:
        # an FP16 row too, so the user sees what each precision costs (not kept as an artifact)
        fp16_path = os.path.join(tmp, "fp16.onnx")
        convert_fp16(fp32_path, fp16_path, adapter.fp32_islands(req))
        table = quality_table({"fp32": fp32_path, "fp16": fp16_path, "int8": int8_path}, pairs,
                              input_name=adapter.input_names(req)[0])
    res.quality = table
    write_text(f"{stem}.int8.quality.json", json.dumps(_clean({"degradation": degradation, "table": table}), indent=2))
    res.artifacts.append(("quality table", f"{stem}.int8.quality.json"))
    drop = table["int8"]["restoration_drop"]
    limit = adapter.spec.tolerance.int8_max_restoration_drop
    if limit is not None and req.weights:
        check.gates.append(Gate.at_most("restoration PSNR drop dB", drop, limit))
        check.status = "pass" if all(g.ok for g in check.gates) else "fail"
    elif limit is not None:
        res.notes.append("quality: random weights restore nothing, so the restoration-drop gate is not applied (pass --weights)")
    res.notes.append("quality (" + (degradation or "no degradation") + f", {len(pairs)} held-out images):\n" + format_quality_table(table))
    return f"restoration drop {drop:.3f} dB, INT8 vs FP32 {table['int8']['psnr_vs_fp32']:.1f} dB"


def _write_manifest(plan, req, metadata, backend, built, report, onnx_path) -> None:
    from .fsutil import write_text

    manifest = {
        **metadata,
        "precision": req.precision,
        "onnx": os.path.basename(onnx_path),
        "plan": os.path.basename(plan),
        "backend": {"name": backend.name, "version": built.version, **built.details},
        "input_names": ["input"],
        "build_seconds": round(built.seconds, 2),
        "parity": {
            "passed": report.passed(),
            "checks": [
                {
                    "backend": c.backend,
                    "precision": c.precision,
                    "status": c.status,
                    "reason": c.reason,
                    "min_psnr": min((m.psnr for m in c.outputs if m.psnr is not None), default=None),
                    "max_abs": max((m.max_abs for m in c.outputs), default=None),
                }
                for c in report.checks
            ],
        },
    }
    from .parity import _clean

    write_text(plan + ".json", json.dumps(_clean(manifest), indent=2))


def _close(res: ExportResult, stem: str, report, kind: str, refs, outs, precision: str, plan: str | None = None) -> ExportResult:
    from .fsutil import write_text
    from .parity import write_heatmap

    if kind in ("image", "features") and outs:
        path = write_heatmap(f"{stem}.{precision}.heatmap.png", refs[0][0], outs[0][0])
        report.checks[-1 if report.checks[-1].status != "skipped" else -2].heatmap = path
        res.artifacts.append(("parity heatmap", path))
    write_text(f"{stem}.{precision}.parity.json", report.to_json())
    write_text(f"{stem}.{precision}.parity.md", report.to_markdown())
    res.artifacts.append(("parity report", f"{stem}.{precision}.parity.json"))
    onnx_final = [p for label, p in res.artifacts if label.endswith("ONNX")][-1]
    res.next_steps.insert(0, f"deploy-kit verify {onnx_final}")
    if plan:
        res.next_steps.append(f"on the target GPU: trtexec --loadEngine={plan}   (or: deploy-kit run {plan} IMAGE)")
        res.next_steps.append(f"cross-check with Polygraphy: polygraphy run {onnx_final} --onnxrt --trt")
    else:
        res.next_steps.append(f"build an engine: deploy-kit build {onnx_final} --backend tensorrt-rtx")
    return res


def _check_line(check) -> str:
    gates = "; ".join(g.text() for g in check.gates)
    return f"{check.status.upper()} ({gates})"


def _as_list(out) -> list:
    return list(out) if isinstance(out, (tuple, list)) else [out]


