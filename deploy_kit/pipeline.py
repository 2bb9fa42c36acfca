"""Chains the stages: model -> ONNX -> simplified -> precision -> engine -> parity -> bundle.

Each stage is a plain function of one :class:`Run` (the state the stages pass along: paths,
inputs, reference outputs, the report) in the order of :data:`STAGES`; ``run_export`` calls
them in turn and handles ``--stop-after`` in one place. The heavy lifting of every stage lives
in its own module (export.py, simplify.py, precision/, engine/, parity.py, bundle.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from . import __version__, backends
from .errors import UsageError
from .manifest import file_sha256
from .request import validate_request
from .reference import batch_labels, input_labels
from .specs import ExportRequest

STOP_POINTS = ("onnx", "simplified", "precision", "engine")


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
    # peak resident memory (MiB) of this process and its children, per stage and overall
    # (memory.PeakRss); None where /proc is not available
    stage_peaks: list[tuple[str, float | None]] = field(default_factory=list)
    peak_rss_mib: float | None = None
    notes: list[str] = field(default_factory=list)
    report: Any = None  # ParityReport
    quality: dict | None = None  # INT8 quality table (precision -> PSNRs), image models only
    next_steps: list[str] = field(default_factory=list)
    bundle: str | None = None


Progress = Callable[[str, str], None]  # (event, text): event "start" | "done" | "note"


def _quiet(event: str, text: str) -> None:
    return None


@dataclass
class Run:
    """What the stages of one export share (no hidden state: every stage reads and fills this)."""

    req: ExportRequest
    out_dir: str
    work: str
    samples: int
    int8: "Int8Settings"
    engine_backend: Any
    build_options: dict
    progress: Progress
    res: ExportResult
    adapter: Any = None
    spec: Any = None  # the registry's ModelSpec (tolerances)
    loaded: Any = None
    stem: str = ""
    inputs: list = field(default_factory=list)  # (N, C, H, W) batches of the sample images
    refs: list = field(default_factory=list)  # per batch, the outputs: each element its own sample's
    members: list = field(default_factory=list)  # per batch, the sample index of each element
    metadata: dict = field(default_factory=dict)
    report: Any = None
    fp32_path: str = ""
    cand_path: str = ""
    cand_outs: list = field(default_factory=list)
    plan: str | None = None
    built: Any = None
    ranges: dict = field(default_factory=dict)  # range-safe site -> largest FP32 statistic seen
    precision_done: str = "fp32"  # the precision of the last graph that went through parity
    memory: Any = None  # memory.PeakRss of the whole run

    @property
    def kind(self) -> str:
        return self.adapter.output_kind(self.req)

    @property
    def output_names(self) -> list[str]:
        return self.adapter.output_names(self.req)

    @property
    def input_names(self) -> list[str]:
        return self.adapter.input_names(self.req)

    def timed(self, label: str, fn: Callable[[], str]) -> None:
        from .fsutil import human_size

        self.progress("start", label)
        if self.memory is not None:
            self.memory.take()  # the stage's peak starts here
        t0 = time.perf_counter()
        detail = fn()
        self.res.timings.append((label, time.perf_counter() - t0))
        peak = self.memory.take() if self.memory is not None else None
        self.res.stage_peaks.append((label, peak))
        text = f"{label}: {detail}" if detail else label
        if peak is not None:
            text += f" [peak RSS {human_size(int(peak * 2**20))}]"
        self.progress("done", text)


def run_export(
    req: ExportRequest,
    *,
    out_dir: str,
    backend: str | None = backends.TENSORRT_RTX,
    stop_after: str | None = None,
    samples: int = 2,
    int8: Int8Settings | None = None,
    build_options: dict[str, Any] | None = None,
    progress: Progress = _quiet,
    bundle: bool = False,
) -> ExportResult:
    """Run the whole chain for one request.

    Args:
        req: the request (:func:`deploy_kit.request.resolve_request` builds one from flags).
        out_dir: directory for every artifact (created; removed again if the run fails before
            writing anything into it).
        backend: ``tensorrt-rtx``, ``tensorrt`` or None (stop before the engine).
        stop_after: one of STOP_POINTS, or None for the whole chain.
        samples: number of sample images for parity.
        int8: calibration settings when ``req.precision == "int8"``.
        build_options: passed to the engine backend (compute capabilities, timing cache, DLA).
        progress: callback for the progress display.
        bundle: also write ``<stem>.bundle/`` for the device (deploy_kit/bundle.py).

    Returns:
        ExportResult (artifacts, timings, parity report, next steps).

    Raises:
        DeployKitError subclasses for user errors; a failed parity gate is *not* raised here —
        the caller decides (the CLI exits 1 when ``result.report.passed()`` is False).
    """
    from .memory import PeakRss, map_large_allocations
    from .models import get_adapter, get_spec

    validate_request(req)
    map_large_allocations()  # freed full-resolution activations go back to the OS (memory.py)
    if stop_after is not None and stop_after not in STOP_POINTS:
        raise UsageError(f"--stop-after must be one of {', '.join(STOP_POINTS)}")
    engine_backend = backends.get(backend) if backend else None
    if engine_backend is not None:
        engine_backend.trt()  # fail early, before minutes of work, when the backend is missing
    adapter = get_adapter(req.model)
    adapter.validate(req)
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    run = Run(req, out_dir, tempfile.mkdtemp(prefix=".dk-work-", dir=out_dir), samples, int8 or Int8Settings(),
              engine_backend, dict(build_options or {}), progress, ExportResult(req), adapter=adapter,
              spec=get_spec(req.model))
    try:
        with PeakRss() as run.memory:
            for _name, stage, stops_at in STAGES:
                stage(run)
                if stop_after is not None and stop_after in stops_at:
                    run.res.notes.append(f"stopped after '{stop_after}' as asked")
                    break
            if bundle:
                stage_bundle(run)
            run.res.peak_rss_mib = run.memory.peak_mib()
        return _close(run)
    finally:
        shutil.rmtree(run.work, ignore_errors=True)
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)  # a run that failed before writing anything leaves no empty directory


def stage_load(run: Run) -> None:
    from .models.checkpoint import load_model

    def go() -> str:
        req = run.req
        run.loaded = load_model(run.adapter, None if req.variant == "custom" else req.variant, req.weights, req.seed)
        v = run.loaded.variant
        if req.variant != v.name or v.name == "custom":
            run.req = replace(req, variant=v.name, hparams=v.hparams if v.name == "custom" else ())
            run.res.request = run.req
        run.res.notes.append(run.loaded.note)
        run.stem = os.path.join(run.out_dir, run.req.stem())
        return f"{run.spec.name} {v.name}, {run.loaded.note}"

    run.timed("load model", go)


def stage_reference(run: Run) -> None:
    import torch

    from . import parity
    from .models.rangesafe import record_ranges
    from .reference import reference_runner

    def go() -> str:
        req, adapter = run.req, run.adapter
        samples = adapter.sample_inputs(req, count=run.samples)  # (1, C, H, W) each
        runner = reference_runner(adapter, run.loaded.model, req)
        # one image per reference pass: each batch element's reference is the model on its image
        # alone, the same numbers a batch-1 export compares with
        with record_ranges(runner.module) as ranges:  # what the range-safe FP16 rewrites must hold
            sample_refs = runner.run_many(samples)
        run.ranges = dict(ranges)
        run.members = parity.batch_members(len(samples), req.batch)
        run.inputs = parity.stack_batches(samples, run.members)
        run.refs = parity.stack_outputs(sample_refs, run.members)
        degradation = adapter.input_degradation(req)
        ref_desc = f"PyTorch {torch.__version__} FP32 eager{adapter.reference_label(req)}"
        labels = input_labels(len(samples), degradation, req.seed)
        run.metadata = request_metadata(adapter, run.spec, req, run.loaded.variant, list(run.inputs[0].shape), degradation)
        run.report = parity.ParityReport(req.model, req.variant, list(run.inputs[0].shape), run.metadata["tlc"],
                                         ref_desc, batch_labels(run.members, labels), samples=labels)
        run.res.report = run.report
        batches = f" in {len(run.inputs)} batch{'es' if len(run.inputs) > 1 else ''} of {req.batch}" if req.batch > 1 else ""
        return f"{len(samples)} sample images{f' + {degradation}' if degradation else ''}{batches}, {ref_desc}"

    run.timed("reference", go)


def request_metadata(adapter, spec, req: ExportRequest, variant, input_shape: list[int], degradation: str | None) -> dict:
    """The request part of the manifest (also written into the ONNX ``metadata_props``)."""
    from dataclasses import asdict

    from .manifest import input_conventions

    return {
        "deploy_kit_version": __version__,
        "model": req.model,
        "variant": req.variant,
        "hparams": variant.kwargs(),
        "input_shape": input_shape,
        "batch": int(input_shape[0]),
        "input_names": adapter.input_names(req),
        "output_names": adapter.output_names(req),
        "output_kind": adapter.output_kind(req),
        "input": input_conventions(input_shape[1], spec.pad_multiple, adapter.input_normalisation(req)),
        "tlc": req.tlc.as_dict() if req.tlc else None,
        "options": dict(req.options),
        "weights": os.path.abspath(req.weights) if req.weights else None,
        "weights_sha256": file_sha256(req.weights) if req.weights else None,
        "seed": req.seed,
        "degradation": degradation or "none",
        "tolerance": asdict(spec.tolerance),
        "global_context": adapter.global_context(req),
    }


def stage_export(run: Run) -> None:
    import torch

    from .export import export_onnx
    from .memory import release_memory
    from .models.rangesafe import apply_scales

    def go() -> str:
        raw = os.path.join(run.work, "raw.onnx")
        exportable = run.adapter.wrap(run.loaded.model, run.req, static=True)
        scales = apply_scales(exportable, run.ranges)
        if scales:
            run.res.notes.append("range-safe FP16 sites: " + ", ".join(f"{n} at scale 2^{-k}" for k, n in sorted(scales.items())))
        info = export_onnx(exportable, torch.from_numpy(run.inputs[0]), raw, input_names=run.input_names,
                           output_names=run.output_names, metadata={**run.metadata, "precision": "fp32"})
        run.loaded = None  # the exportable copy and the model are freed before ONNX Runtime runs
        return f"{info.nodes} nodes, opset 17, largest pool window {info.max_pool_window}"

    run.timed("export ONNX", go)
    release_memory()


def stage_simplify(run: Run) -> None:
    from .simplify import simplify

    def go() -> str:
        run.fp32_path = run.cand_path = f"{run.stem}.fp32.onnx"
        srep = simplify(os.path.join(run.work, "raw.onnx"), run.fp32_path)
        run.res.artifacts.append(("FP32 ONNX", run.fp32_path))
        return srep.line()

    run.timed("simplify", go)


def _parity_onnx(run: Run, precision: str, path: str) -> None:
    from . import parity

    def go() -> str:
        outs = parity.run_onnxruntime(path, run.inputs, run.input_names[0], isolated=True, batch=run.req.batch)
        check = parity.evaluate(backends.ONNXRUNTIME, precision, path, run.output_names, run.refs, outs, run.kind,
                                run.spec.tolerance, run.members)
        run.report.checks.append(check)
        run.cand_outs = outs
        run.precision_done = precision
        if check.status == "fail" and precision == "fp32":
            run.res.notes.append(_fp32_failure_diagnosis(run.adapter, run.req, run.inputs, run.refs, outs, run.members))
        return _check_line(check)

    run.timed(f"parity {precision} (onnxruntime)", go)


def stage_parity_fp32(run: Run) -> None:
    _parity_onnx(run, "fp32", run.fp32_path)


def stage_precision(run: Run) -> None:
    from .export import update_metadata

    if run.req.precision == "fp32":
        return

    def go() -> str:
        run.cand_path = f"{run.stem}.{run.req.precision}.onnx"
        detail = _make_precision(run.req, run.adapter, run.fp32_path, run.cand_path, run.int8, run.res)
        update_metadata(run.cand_path, {"precision": run.req.precision})  # verify gates by this
        run.res.artifacts.append((f"{run.req.precision.upper()} ONNX", run.cand_path))
        return detail

    run.timed(f"precision {run.req.precision}", go)
    _parity_onnx(run, run.req.precision, run.cand_path)
    if run.req.precision == "fp16":
        stage_true_fp16(run)
    if run.req.precision == "int8" and run.kind == "image":
        run.timed("quality (held-out images)", lambda: _quality(run))


TRUE_FP16_MAX_PIXELS = 512 * 512  # the emulation graph holds every tensor twice (FP16-rounded copy)


def stage_true_fp16(run: Run) -> None:
    """A parity row that rounds every intermediate tensor to FP16 (precision/truefp16.py).

    ONNX Runtime's CPU kernels compute FP16 graphs in FP32 between casts, so the ONNX Runtime row
    cannot show an FP16 overflow; this one does (inf/NaN or lost PSNR), as TensorRT FP16 would.
    """
    from . import parity

    # a pass holds every batch element's tensors, so the memory bound counts the whole batch
    if run.req.batch * run.req.height * run.req.width > TRUE_FP16_MAX_PIXELS:
        per_pass = f"{run.req.batch} x {run.req.height}x{run.req.width}" if run.req.batch > 1 else "this size"
        run.report.checks.append(parity.skipped(
            "true-fp16", "fp16", run.cand_path,
            f"runs up to {TRUE_FP16_MAX_PIXELS} pixels per pass (memory; {per_pass} is more); the same graph rules "
            "apply at every size and batch: export at 512x512, batch 1, to run it"))
        return

    def go() -> str:
        from .precision.truefp16 import BACKEND
        from .runtime.runners import in_child_process

        outs = in_child_process(_true_fp16_child, run.cand_path, list(run.inputs))
        check = parity.evaluate(BACKEND, "fp16", run.cand_path, run.output_names, run.refs, outs, run.kind,
                                run.spec.tolerance, run.members)
        run.report.checks.append(check)
        return _check_line(check)

    run.timed("parity fp16 (true FP16 rounding)", go)


def _true_fp16_child(path: str, inputs: list) -> list:
    from .precision.truefp16 import true_fp16_outputs

    return true_fp16_outputs(path, inputs, fp16_path=path)


def stage_engine(run: Run) -> None:
    from . import parity

    eng = run.engine_backend
    if eng is None:
        run.report.checks.append(parity.skipped("engine", run.req.precision, "-", "--backend none: no engine was built"))
        return

    def go() -> str:
        run.plan = f"{run.stem}.{run.req.precision}.{eng.major()}.plan"
        run.built = eng.build(run.cand_path, run.plan, **run.build_options)
        run.res.artifacts.append((f"{eng.name} engine", run.plan))
        return f"{run.built.seconds:.1f} s, {run.built.size / 2**20:.1f} MB"

    run.timed(f"engine ({eng.name})", go)
    if run.req.precision == "int8" and eng.name == backends.TENSORRT_RTX:
        run.res.notes.append(
            "TensorRT-RTX documents INT8 only as weight-only GEMM: Q/DQ convolutions do not run as INT8 kernels "
            "there, so expect FP16/FP32 speed (and a plan larger than FP32: 20 MB vs 6.5 MB measured on the NAFNet "
            "demo); INT8 speed needs the tensorrt backend (desktop, Jetson)"
        )
    ok, why = eng.can_run()
    if ok:
        def check() -> str:
            with eng.open_runner(run.plan) as runner:
                outs = runner.run_many(run.inputs)
            c = parity.evaluate(eng.name, run.req.precision, run.plan, run.output_names, run.refs, outs, run.kind,
                                run.spec.tolerance, run.members)
            run.report.checks.append(c)
            return _check_line(c)

        run.timed(f"parity {run.req.precision} ({eng.name})", check)
    else:
        run.report.checks.append(parity.skipped(eng.name, run.req.precision, run.plan, why))
    from .manifest import plan_manifest, write_manifest

    write_manifest(run.plan + ".json", plan_manifest(run.metadata, run.req.precision, run.cand_path, run.plan,
                                                     eng, run.built, run.report))
    run.res.artifacts.append(("engine manifest", run.plan + ".json"))


def stage_bundle(run: Run) -> None:
    """``--bundle``: the graph that passed parity last, with the proof, for the device."""
    from .bundle import write_bundle

    def go() -> str:
        info = write_bundle(run.cand_path, run.inputs, run.refs, f"{run.stem}.{run.precision_done}.bundle",
                            report=run.report)
        run.res.bundle = info.path
        run.res.artifacts.append(("device bundle", info.path))
        run.res.next_steps.append(f"on the device: deploy-kit build {info.path} && deploy-kit verify {info.path}")
        return info.line()

    run.timed("bundle", go)


# (name, stage, the --stop-after values that end the run after it)
STAGES = (
    ("load", stage_load, ()),
    ("reference", stage_reference, ()),
    ("export", stage_export, ()),
    ("simplify", stage_simplify, ()),
    ("parity-fp32", stage_parity_fp32, ("onnx", "simplified")),
    ("precision", stage_precision, ("precision",)),
    ("engine", stage_engine, ("engine",)),
)


CONDITIONING_MAX_PIXELS = 512 * 512  # a float64 forward pass needs about twice the FP32 memory


def _fp32_failure_diagnosis(adapter, req: ExportRequest, inputs, refs, outs, members=None) -> str:
    """Tell an export error from an input the model itself cannot compute stably in FP32.

    Re-runs the worst sample (the batch element farthest from its reference) through the PyTorch
    model in float64: if the FP32 reference is itself as far from that as ONNX Runtime is, FP32
    rounding (amplified by the model at this input) explains the failure. Seen on BiasFree
    Restormer: no bias anywhere, so an exactly black region stays tiny and the LayerNorm's
    1/sqrt(eps) blows its rounding up block by block.

    Args:
        inputs, refs, outs: per stored input (a batch), the input and the outputs.
        members: per stored input, the sample index of each element (names the sample in the
            note); None counts the elements in order.
    """
    import numpy as np

    from .models.checkpoint import load_model

    def error(i: int, b: int) -> float:
        return max(float(np.max(np.abs(np.asarray(o[b : b + 1], np.float64) - r[b : b + 1]))) for o, r in zip(outs[i], refs[i]))

    # (error, input, element) of every batch element; the float64 run needs one element only
    errors = [(error(i, b), i, b) for i in range(len(outs)) for b in range(int(inputs[i].shape[0]))]
    flat = max(range(len(errors)), key=lambda n: errors[n][0])
    worst, i, b = errors[flat]
    k = members[i][b] if members is not None else flat
    if req.height * req.width > CONDITIONING_MAX_PIXELS:
        return (f"fp32 failure not diagnosed: the float64 re-run that tells export errors from ill-conditioned "
                f"inputs is limited to {CONDITIONING_MAX_PIXELS} pixels; re-export at 512x512 or smaller to run it")
    from .reference import reference_runner

    loaded = load_model(adapter, None if req.variant == "custom" else req.variant, req.weights, req.seed)
    ref64 = reference_runner(adapter, loaded.model, req, dtype="float64").run(inputs[i][b : b + 1])
    del loaded
    ref_err = max(float(np.max(np.abs(r[b : b + 1] - t))) for r, t in zip(refs[i], ref64))
    ort_err = max(float(np.max(np.abs(np.asarray(o[b : b + 1], np.float64) - t))) for o, t in zip(outs[i], ref64))
    head = (f"fp32 diagnosis, sample {k}: PyTorch FP32 is {ref_err:.2e} from a float64 run of the same model, "
            f"ONNX Runtime {ort_err:.2e}")
    if ref_err >= 0.5 * worst:
        return (head + ": the input is ill-conditioned for this model (FP32 rounding decides the output, not the "
                "export); check with the inputs it sees in deployment (--degradation) or trained --weights")
    return head + ": the reference is stable, so the export computes something else; report it with --debug output"


def _make_precision(req, adapter, fp32_path: str, dst: str, s: Int8Settings, res: ExportResult) -> str:
    if req.precision == "fp16":
        from .precision.fp16 import convert_fp16

        rep = convert_fp16(fp32_path, dst, adapter.fp32_islands(req))
        res.notes.append(f"FP16: kept FP32: {len(rep.kept_fp32)} nodes matching {', '.join(rep.patterns) or 'nothing'}")
        return rep.line()
    from .precision.calibration import load_calibration_set
    from .precision.int8 import Int8Options, quantize_int8

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
    if req.batch > 1:
        from .precision.calibration import batched

        cal = batched(cal, req.batch)  # the graph takes N crops per pass
    if cal.skipped:
        res.notes.append(f"calibration: skipped {len(cal.skipped)} files (first: {cal.skipped[0][0]}: {cal.skipped[0][1]})")
    opts = Int8Options(method=s.method, remainder=s.remainder, fp32_patterns=tuple(adapter.int8_excluded(req)),
                       remainder_fp32_patterns=tuple(adapter.fp32_islands(req)))
    rep = quantize_int8(fp32_path, dst, cal, opts, cache_key_extra=req.stem())
    res.notes.append(f"calibration: {cal.description}")
    if rep.get("legacy_cache"):
        res.artifacts.append(("TRT<=10 calibration cache", rep["legacy_cache"]))
        res.next_steps.append(f"JetPack TensorRT 10 implicit INT8 (not executed here): {rep['trtexec']}")
    excluded = rep.get("excluded", [])
    return f"{rep.get('quantized_nodes', '?')} nodes quantized ({s.method}), {len(excluded)} excluded, statistics cache {rep.get('cache', '?')}"


def _quality(run: Run) -> str:
    """FP32 vs INT8 on held-out degraded/clean pairs; gates the restoration drop for trained weights."""
    req, adapter, fp32_path, int8_path, s, res, stem = (run.req, run.adapter, run.fp32_path, run.cand_path,
                                                        run.int8, run.res, run.stem)
    check = run.report.checks[-1]
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
    limit = run.spec.tolerance.int8_max_restoration_drop
    if limit is not None and req.weights:
        check.gates.append(Gate.at_most("restoration PSNR drop dB", drop, limit))
        check.status = "pass" if all(g.ok for g in check.gates) else "fail"
    elif limit is not None:
        res.notes.append("quality: random weights restore nothing, so the restoration-drop gate is not applied (pass --weights)")
    res.notes.append("quality (" + (degradation or "no degradation") + f", {len(pairs)} held-out images):\n" + format_quality_table(table))
    return f"restoration drop {drop:.3f} dB, INT8 vs FP32 {table['int8']['psnr_vs_fp32']:.1f} dB"


def _close(run: Run) -> ExportResult:
    from .fsutil import write_text
    from .parity import write_heatmap

    res, stem, report, precision = run.res, run.stem, run.report, run.precision_done
    if run.kind in ("image", "features") and run.cand_outs:
        path = write_heatmap(f"{stem}.{precision}.heatmap.png", run.refs[0][0], run.cand_outs[0][0])
        next(c for c in reversed(report.checks) if c.backend == backends.ONNXRUNTIME).heatmap = path  # cand_outs: ORT
        res.artifacts.append(("parity heatmap", path))
    write_text(f"{stem}.{precision}.parity.json", report.to_json())
    write_text(f"{stem}.{precision}.parity.md", report.to_markdown())
    res.artifacts.append(("parity report", f"{stem}.{precision}.parity.json"))
    onnx_final = [p for label, p in res.artifacts if label.endswith("ONNX")][-1]
    res.next_steps.insert(0, f"deploy-kit verify {onnx_final}")
    if run.plan:
        if run.engine_backend.name == backends.TENSORRT_RTX:
            # trtexec is TensorRT's and cannot deserialise a TensorRT-RTX plan; the tensorrt-rtx wheel
            # ships no command-line tool, so deploy-kit's own runner (the TensorRT-RTX runtime) it is
            res.next_steps.append(f"on an NVIDIA GPU with the TensorRT-RTX runtime (trtexec cannot load RTX plans): "
                                  f"deploy-kit verify {run.plan}   and   deploy-kit run {run.plan} IMAGE --out DIR")
        else:
            res.next_steps.append(f"on the target GPU: trtexec --loadEngine={run.plan}   "
                                  f"(or: deploy-kit run {run.plan} IMAGE --out DIR)")
        res.next_steps.append(f"cross-check with Polygraphy: polygraphy run {onnx_final} --onnxrt --trt")
    else:
        res.next_steps.append(f"build an engine: deploy-kit build {onnx_final} --backend tensorrt-rtx")
    if not res.bundle:
        res.next_steps.append(f"for the device: deploy-kit bundle {onnx_final}")
    return res


def _check_line(check) -> str:
    gates = "; ".join(g.text() for g in check.gates)
    return f"{check.status.upper()} ({gates})"


