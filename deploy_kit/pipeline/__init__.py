"""Chains the stages: model -> ONNX -> simplified -> precision -> engine -> parity -> bundle.

Each stage is a plain function of the :class:`Job` (the request and the run's settings) and of
what the stages before it returned; it returns its own result as a frozen record
(:class:`Loaded`, :class:`Reference`, :class:`Graph`, :class:`Engine`). :func:`run_export` calls
them in order and handles ``--stop-after`` in one place (:func:`_chain`); what the run reports
(artifacts, notes, timings, next steps) accumulates in the job's :class:`ExportResult`. The heavy
lifting of every stage lives in its own module (export.py, simplify.py, precision/, engine/,
parity.py, bundle.py).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import numpy as np

from . import __version__, backends, parity
from .bundle import write_bundle
from .errors import UsageError
from .export import export_onnx, read_metadata, update_metadata
from .fsutil import human_size, write_text
from .manifest import Manifest, file_sha256, input_conventions, plan_manifest, write_manifest
from .memory import PeakRss, map_large_allocations, release_memory
from .models import get_adapter, spec_for
from .onnxsource import fix_dims
from .parity import _clean, write_heatmap
from .precision.calibration import batched, eval_pairs, load_calibration_set
from .precision.fp16 import convert_fp16
from .precision.graphsafe import convert_fp16_safe
from .precision.int8 import Int8Options, quantize_int8
from .precision.quality import format_quality_table, quality_table
from .precision.truefp16 import BACKEND, true_fp16_outputs
from .reference import batch_labels, input_labels, reference_runner
from .request import validate_request
from .runtime.context import graph_fn
from .runtime import cuda
from .runtime.runners import OrtRunner, in_child_process
from .simplify import simplify
from .specs import ExportRequest, ModelSpec, Variant

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from .backends._trt import BuildResult, EngineBackend
    from .models.base import ModelAdapter
    from .parity import Check, ParityReport
    from .precision.calibration import CalibrationSet

# the --stop-after values, in chain order: after the FP32 graph's parity, after the FP16/INT8
# graph's checks, after the engine
STOP_POINTS = ("simplified", "precision", "engine")

T = TypeVar("T")


@dataclass
class ExportResult:
    """What an export reports: filled stage by stage (the stages' own results are frozen records).

    ``report`` is set when the chain ends; ``request`` is the request as the checkpoint resolved it.
    """

    request: ExportRequest
    artifacts: list[tuple[str, str]] = field(default_factory=list)  # (label, path)
    timings: list[tuple[str, float]] = field(default_factory=list)
    # peak resident memory (MiB) of this process and its children, per stage and overall
    # (memory.PeakRss); None where /proc is not available
    stage_peaks: list[tuple[str, float | None]] = field(default_factory=list)
    peak_rss_mib: float | None = None
    notes: list[str] = field(default_factory=list)
    report: ParityReport | None = None
    quality: dict[str, dict[str, float]] | None = None  # INT8 quality table (precision -> PSNRs), image models only
    next_steps: list[str] = field(default_factory=list)
    bundle: str | None = None


Progress = Callable[[str, str], None]  # (event, text): event "start" | "done" | "detail" (a line within a step)


def _quiet(event: str, text: str) -> None:
    return None


@dataclass(frozen=True)
class Job:
    """What every stage reads: the request and the run's settings.

    The request changes once, when the checkpoint resolves its variant; that makes a new Job
    (:func:`_from_pytorch`). ``res`` is the one thing the stages fill as they go.

    Attributes:
        req: the export request.
        out_dir: directory of every artifact.
        work: scratch directory inside ``out_dir`` (removed when the run ends).
        samples: number of sample images for parity.
        int8: the INT8 settings (read when ``req.precision == "int8"``).
        engine_backend: the backend that builds the engine; None stops before the engine.
        build_options: passed to the engine build (compute capabilities, timing cache).
        adapter: the model family's bridge to the pipeline.
        spec: the model family's spec (its parity tolerances).
        progress: the progress callback.
        memory: peak resident memory of the whole run.
        res: the result being filled (artifacts, notes, timings, next steps).
    """

    req: ExportRequest
    out_dir: str
    work: str
    samples: int
    int8: Int8Options
    engine_backend: EngineBackend | None
    build_options: dict[str, Any]
    adapter: ModelAdapter
    spec: ModelSpec
    progress: Progress
    memory: PeakRss
    res: ExportResult

    @property
    def stem(self) -> str:
        return os.path.join(self.out_dir, self.req.stem())

    @property
    def kind(self) -> str:
        return self.adapter.output_kind(self.req)

    @property
    def output_names(self) -> list[str]:
        return self.adapter.output_names(self.req)

    @property
    def input_names(self) -> list[str]:
        return self.adapter.input_names(self.req)

    def timed(self, label: str, fn: Callable[[], tuple[T, str]]) -> T:
        """Run one step between a "start" and a "done" progress event; record its time and peak memory.

        Args:
            label: the step's name (progress display, ``res.timings``, ``res.stage_peaks``).
            fn: does the work; returns (its result, the detail shown after the label).

        Returns:
            The result ``fn`` returned.
        """
        self.progress("start", label)
        self.memory.take()  # the stage's peak starts here
        t0 = time.perf_counter()
        value, detail = fn()
        self.res.timings.append((label, time.perf_counter() - t0))
        peak = self.memory.take()
        self.res.stage_peaks.append((label, peak))
        text = f"{label}: {detail}" if detail else label
        if peak is not None:
            text += f" [peak RSS {human_size(int(peak * 2**20))}]"
        self.progress("done", text)
        return value


@dataclass(frozen=True)
class Loaded:
    """:func:`stage_load`'s result: the PyTorch model and the request as its checkpoint resolved it."""

    req: ExportRequest
    model: nn.Module
    variant: Variant


@dataclass(frozen=True)
class Reference:
    """:func:`stage_reference`'s result: the sample inputs and the PyTorch FP32 outputs every
    parity row is judged against.

    Attributes:
        inputs: (N, C, H, W) batches of the sample images.
        refs: per batch, the outputs: each element its own sample's.
        members: per batch, the sample index of each element.
        ranges: per range-safe site, the largest FP32 statistics seen (what the range-safe FP16
            rewrites must hold).
        metadata: the request part of the manifest (:func:`request_metadata`).
        header: the parity report without checks (model, shape, reference, input labels).
    """

    inputs: list[np.ndarray]
    refs: list[list[np.ndarray]]
    members: list[list[int]]
    ranges: dict[str, dict[str, float]]
    metadata: dict[str, Any]
    header: ParityReport

    def report(self, checks: Sequence[Check]) -> ParityReport:
        """The parity report of ``checks`` (in order) under this reference's header."""
        return replace(self.header, checks=list(checks))


@dataclass(frozen=True)
class Graph:
    """An ONNX graph of the export with its parity rows.

    Attributes:
        precision: fp32 | fp16 | int8.
        path: the ONNX file.
        outputs: per batch, ONNX Runtime's outputs (the parity heatmap shows the first).
        checks: its parity rows in report order: ONNX Runtime, then true-FP16 rounding for FP16.
    """

    precision: str
    path: str
    outputs: list[list[np.ndarray]]
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class Engine:
    """:func:`stage_engine`'s result: the plan (None with ``--backend none``) and its parity row
    (skipped, with the reason, where it cannot run)."""

    plan: str | None
    check: Check


@dataclass(frozen=True)
class Finished:
    """Where the chain ended: what the bundle and the reports are written from.

    Attributes:
        job: the job, its request resolved.
        reference: the reference stage's result.
        graph: the last graph that went through parity (the one the bundle, the heatmap and
            ``verify`` name).
        checks: every parity row, in report order.
        plan: the engine plan, when one was built.
    """

    job: Job
    reference: Reference
    graph: Graph
    checks: tuple[Check, ...]
    plan: str | None = None


def run_export(
    req: ExportRequest,
    *,
    out_dir: str,
    backend: str | None = backends.TENSORRT_RTX,
    stop_after: str | None = None,
    samples: int = 2,
    int8: Int8Options | None = None,
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
        int8: the INT8 settings when ``req.precision == "int8"`` (default: ``Int8Options()``);
            the model's own FP32 node patterns are added to its patterns.
        build_options: passed to the engine backend (compute capabilities, timing cache, DLA).
        progress: callback for the progress display.
        bundle: also write ``<stem>.bundle/`` for the device (deploy_kit/bundle.py).

    Returns:
        ExportResult (artifacts, timings, parity report, next steps).

    Raises:
        DeployKitError subclasses for user errors; a failed parity gate is *not* raised here —
        the caller decides (the CLI exits 1 when ``result.report.passed()`` is False).
    """
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
    work = tempfile.mkdtemp(prefix=".dk-work-", dir=out_dir)
    try:
        with PeakRss() as memory:
            job = Job(req, out_dir, work, samples, int8 or Int8Options(), engine_backend, dict(build_options or {}),
                      adapter, spec_for(req), progress, memory, ExportResult(req))
            done = _chain(job, stop_after)
            if bundle:
                stage_bundle(done)
            job.res.peak_rss_mib = memory.peak_mib()
        return _close(done)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)  # a run that failed before writing anything leaves no empty directory


def _chain(job: Job, stop_after: str | None) -> Finished:
    """The stages in order, each fed what the ones before returned, up to ``stop_after``."""
    job, reference, raw, raw_sync = _from_pytorch(job)
    release_memory()  # the model and its exportable copy are gone: give their pages back
    fp32 = stage_parity_fp32(job, reference, stage_simplify(job, raw))
    if _stops(job, stop_after, "simplified"):
        return Finished(job, reference, fp32, fp32.checks)  # only the FP32 graph: no sync graph either
    cand = stage_precision(job, reference, fp32)
    graph, checks = (cand, fp32.checks + cand.checks) if cand is not None else (fp32, fp32.checks)
    stage_sync(job, reference, raw_sync, graph)
    if _stops(job, stop_after, "precision"):
        return Finished(job, reference, graph, checks)
    engine = stage_engine(job, reference, graph, checks)
    _stops(job, stop_after, "engine")  # the last stage: nothing is skipped, but the run says it was asked
    return Finished(job, reference, graph, checks + (engine.check,), engine.plan)


def _stops(job: Job, stop_after: str | None, point: str) -> bool:
    """Whether the chain ends at ``point``; notes it when it does."""
    if stop_after != point:
        return False
    job.res.notes.append(f"stopped after '{point}' as asked")
    return True


def _from_pytorch(job: Job) -> tuple[Job, Reference, str, str | None]:
    """Load, reference and export: the PyTorch model lives in this frame only, so it is freed
    (with the exportable copy) before ONNX Runtime runs. A user's ONNX file is its own reference
    (:func:`stage_onnx_source`).

    Returns:
        The job with the resolved request, the reference, the raw ONNX path, and the raw sync
        graph's (None where the model has no global statistics to synchronise).
    """
    if job.req.source is not None and job.req.source.kind == "onnx":
        return (*stage_onnx_source(job), None)
    loaded = stage_load(job)
    job = replace(job, req=loaded.req)
    reference = stage_reference(job, loaded)
    return job, reference, stage_export(job, loaded, reference), stage_export_sync(job, loaded, reference)


def stage_onnx_source(job: Job) -> tuple[Job, Reference, str]:
    """A user's ONNX file: its dims fixed to the request, and its ONNX Runtime FP32 outputs as the reference.

    Returns:
        The job, the reference (labelled as ONNX Runtime on the user's graph in every report), and
        the fixed graph as the raw ONNX.
    """
    req, adapter = job.req, job.adapter
    raw = os.path.join(job.work, "raw.onnx")

    degradation = adapter.input_degradation(req)
    metadata = request_metadata(adapter, job.spec, req, Variant(req.source.name, ()),
                                [req.batch, req.source.channels, req.height, req.width], degradation)

    def load() -> tuple[None, str]:
        fix_dims(req.source.ref, raw, req.batch, req.height, req.width, {**metadata, "precision": "fp32"})
        job.res.notes.append(f"reference: your graph {os.path.basename(req.source.ref)} in ONNX Runtime FP32 "
                             "(no PyTorch model to compare with)")
        return None, f"{os.path.basename(req.source.ref)} fixed at {req.batch}x{req.source.channels}x{req.height}x{req.width}"

    job.timed("load ONNX", load)

    def go() -> tuple[Reference, str]:
        import onnxruntime

        samples = adapter.sample_inputs(req, count=job.samples)
        members = parity.batch_members(len(samples), req.batch)
        inputs = parity.stack_batches(samples, members)
        refs = parity.run_onnxruntime(raw, inputs, job.input_names[0], isolated=True, batch=req.batch)
        ref_desc = f"ONNX Runtime {onnxruntime.__version__} FP32 on your graph {os.path.basename(req.source.ref)}"
        labels = input_labels(len(samples), degradation, req.seed)
        header = parity.ParityReport(req.model, req.variant, list(inputs[0].shape), None, ref_desc,
                                     batch_labels(members, labels), samples=labels)
        return Reference(inputs, refs, members, {}, metadata, header), f"{len(samples)} sample images, {ref_desc}"

    return job, job.timed("reference", go), raw


def stage_load(job: Job) -> Loaded:
    """Load the model (``--weights``, or random initialisation) and resolve the request's variant.

    Args:
        job: the run.

    Returns:
        The model and the request as the checkpoint resolved it (``res.request`` follows it).
    """
    from .models.checkpoint import load_request  # torch

    def go() -> tuple[Loaded, str]:
        req = job.req
        loaded = load_request(job.adapter, req)
        v = loaded.variant
        if req.variant != v.name or v.name == "custom":
            req = replace(req, variant=v.name, hparams=v.hparams if v.name == "custom" else ())
            job.res.request = req
        job.res.notes.append(loaded.note)
        return Loaded(req, loaded.model, v), f"{job.spec.name} {v.name}, {loaded.note}"

    return job.timed("load model", go)


def stage_reference(job: Job, loaded: Loaded) -> Reference:
    """Run the PyTorch FP32 model on the sample images, one image per pass.

    Args:
        job: the run (its request resolved by :func:`stage_load`).
        loaded: the model.

    Returns:
        The batched inputs, the reference outputs, the range-safe statistics and the report header.
    """
    import torch

    from .models.rangesafe import record_ranges  # torch

    def go() -> tuple[Reference, str]:
        req, adapter = job.req, job.adapter
        samples = adapter.sample_inputs(req, count=job.samples)  # (1, C, H, W) each
        runner = reference_runner(adapter, loaded.model, req)
        # one image per reference pass: each batch element's reference is the model on its image
        # alone, the same numbers a batch-1 export compares with
        with record_ranges(runner.module) as ranges:  # what the range-safe FP16 rewrites must hold
            sample_refs = runner.run_many(samples)
        members = parity.batch_members(len(samples), req.batch)
        inputs = parity.stack_batches(samples, members)
        refs = parity.stack_outputs(sample_refs, members)
        degradation = adapter.input_degradation(req)
        ref_desc = f"PyTorch {torch.__version__} FP32 eager{adapter.reference_label(req)}"
        labels = input_labels(len(samples), degradation, req.seed)
        metadata = request_metadata(adapter, job.spec, req, loaded.variant, list(inputs[0].shape), degradation)
        header = parity.ParityReport(req.model, req.variant, list(inputs[0].shape), metadata["tlc"], ref_desc,
                                     batch_labels(members, labels), samples=labels)
        batches = f" in {len(inputs)} batch{'es' if len(inputs) > 1 else ''} of {req.batch}" if req.batch > 1 else ""
        detail = f"{len(samples)} sample images{f' + {degradation}' if degradation else ''}{batches}, {ref_desc}"
        return Reference(inputs, refs, members, dict(ranges), metadata, header), detail

    return job.timed("reference", go)


def request_metadata(adapter: ModelAdapter, spec: ModelSpec, req: ExportRequest, variant: Variant,
                     input_shape: list[int], degradation: str | None) -> dict[str, Any]:
    """The request part of the manifest (also written into the ONNX ``metadata_props``).

    Args:
        adapter, spec: the model family's adapter and spec.
        req: the request, its variant resolved.
        variant: the resolved variant (its hyper-parameters are recorded).
        input_shape: the graph's input shape (N, C, H, W).
        degradation: how the sample inputs were degraded; None for clean images.

    Returns:
        JSON-ready metadata: version, model, variant, shapes, I/O names and conventions, TLC,
        options, weights and their sha256, seed, degradation, tolerances.
    """
    from dataclasses import asdict

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
        # a user's model: what its family spec would say, and its output scale (1 when absent)
        **({"scale": req.source.scale, "source": req.source.as_dict()} if req.source is not None else {}),
    }


def stage_export(job: Job, loaded: Loaded, reference: Reference) -> str:
    """Export the model to ONNX at the request's static shape (range-safe scales applied first).

    Args:
        job: the run.
        loaded: the model.
        reference: its sample inputs (the export's example input) and range-safe statistics.

    Returns:
        The raw ONNX file, in the work directory (:func:`stage_simplify` writes the artifact).
    """
    import torch

    from .models.rangesafe import apply_scales  # torch

    def go() -> tuple[str, str]:
        raw = os.path.join(job.work, "raw.onnx")
        exportable = job.adapter.wrap(loaded.model, job.req, static=True)
        scales = apply_scales(exportable, reference.ranges)
        if scales:
            job.res.notes.append("range-safe FP16 sites: " + ", ".join(f"{n} at scale 2^{-k}" for k, n in sorted(scales.items())))
        info = export_onnx(exportable, torch.from_numpy(reference.inputs[0]), raw, input_names=job.input_names,
                           output_names=job.output_names, metadata={**reference.metadata, "precision": "fp32"})
        return raw, f"{info.nodes} nodes, opset 17, largest pool window {info.max_pool_window}"

    return job.timed("export ONNX", go)


def stage_export_sync(job: Job, loaded: Loaded, reference: Reference) -> str | None:
    """The sync form of a global-context model (deploy_kit/models/sync.py) to ONNX, when it has one.

    Returns:
        The raw sync ONNX in the work directory, or None (local context, batch > 1, or no sync form).
    """
    import torch

    from .models.rangesafe import apply_scales  # torch
    from .models.sync import INPUTS, OUTPUTS, record_layout  # torch

    if job.req.batch != 1 or not job.adapter.global_context(job.req):
        return None
    form = job.adapter.sync_form(loaded.model, job.req)
    if form is None:
        return None

    def go() -> tuple[str, str]:
        req = job.req
        raw = os.path.join(job.work, "raw.sync.onnx")
        apply_scales(form, reference.ranges)
        ch = int(reference.inputs[0].shape[1])
        sites = record_layout(form, ch, req.height, req.width)
        size = sum(n for _, n in sites)
        example = (torch.from_numpy(reference.inputs[0]), torch.ones(1, 1, req.height, req.width),
                   torch.zeros(1, size), torch.zeros(1, 1))
        sync = {"stats": size, "sites": [[kind, n] for kind, n in sites], "pad": form.pad, "multiple": form.multiple}
        info = export_onnx(form, example, raw, input_names=list(INPUTS), output_names=list(OUTPUTS),
                           metadata={**reference.metadata, "precision": "fp32", "sync": sync})
        return raw, f"{len(sites)} global statistics sites, {size} values; {info.nodes} nodes"

    return job.timed("export sync graph", go)


def stage_sync(job: Job, reference: Reference, raw: str | None, graph: Graph) -> str | None:
    """The sync graph beside ``graph``: ``<graph stem>.sync.onnx``, simplified, in ``graph``'s
    precision (FP16 for an INT8 graph: its statistics inputs are not calibrated), checked.

    The check: with ``use`` 0 it must give what ``graph`` gives (ONNX Runtime), and fed the statistics
    it output itself (``use`` 1, the mask covering the whole tile) the same again.

    Returns:
        The sync graph, or None when there is none.
    """
    if raw is None:
        return None

    def go() -> tuple[str, str]:
        path = graph.path[: -len(".onnx")] + ".sync.onnx"
        precision = "fp32" if graph.precision == "fp32" else "fp16"
        if precision == "fp32":
            simplify(raw, path)
        else:
            tmp = os.path.join(job.work, "sync.fp32.onnx")
            simplify(raw, tmp)
            convert_fp16(tmp, path, job.adapter.fp32_islands(job.req))
        update_metadata(path, {"precision": precision})
        with OrtRunner(path) as runner:
            run, x = graph_fn(runner), reference.inputs[0]
            size = int(read_metadata(path)["sync"]["stats"])
            mask = np.ones((1, 1, *x.shape[2:]), np.float32)
            own, stats = run(x, mask, np.zeros((1, size), np.float32), np.zeros((1, 1), np.float32))
            fed, _ = run(x, mask, stats, np.ones((1, 1), np.float32))
        plain = graph.outputs[0][0]
        d0, d1 = float(np.abs(own - plain).max()), float(np.abs(fed - own).max())
        job.res.artifacts.append(("sync graph (run --context sync)", path))
        job.res.notes.append(f"sync graph {os.path.basename(path)} ({precision}): vs {os.path.basename(graph.path)} "
                             f"max abs {d0:.2e}; fed its own statistics {d1:.2e}")
        return path, f"{precision}, max abs {d0:.2e} vs the graph, {d1:.2e} fed its own statistics"

    return job.timed("sync graph", go)


def stage_simplify(job: Job, raw: str) -> str:
    """Simplify the raw ONNX into the FP32 artifact.

    Args:
        job: the run.
        raw: the exported ONNX.

    Returns:
        The FP32 ONNX, ``<stem>.fp32.onnx``.
    """
    def go() -> tuple[str, str]:
        path = f"{job.stem}.fp32.onnx"
        srep = simplify(raw, path)
        job.res.artifacts.append(("FP32 ONNX", path))
        return path, srep.line()

    return job.timed("simplify", go)


def _parity_onnx(job: Job, reference: Reference, precision: str, path: str,
                 restoration_drop: float | None = None) -> Graph:
    """ONNX Runtime parity of ``path``, its gates decided here (``restoration_drop``: see parity.evaluate)."""
    def go() -> tuple[Graph, str]:
        outs = parity.run_onnxruntime(path, reference.inputs, job.input_names[0], isolated=True, batch=job.req.batch)
        check = parity.evaluate(backends.ONNXRUNTIME, precision, path, job.output_names, reference.refs, outs,
                                job.kind, job.spec.tolerance, reference.members, restoration_drop)
        if check.status == "fail" and precision == "fp32":
            job.res.notes.append(_fp32_failure_diagnosis(job.adapter, job.req, reference.inputs, reference.refs, outs,
                                                         reference.members))
        return Graph(precision, path, outs, (check,)), _check_line(check)

    return job.timed(f"parity {precision} (onnxruntime)", go)


def stage_parity_fp32(job: Job, reference: Reference, path: str) -> Graph:
    """ONNX Runtime parity of the FP32 graph.

    Args:
        job: the run.
        reference: the PyTorch FP32 outputs.
        path: the FP32 ONNX.

    Returns:
        The FP32 graph with its parity row.
    """
    return _parity_onnx(job, reference, "fp32", path)


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
        graph = _parity_onnx(job, reference, precision, path)
        return replace(graph, checks=graph.checks + (stage_true_fp16(job, reference, path),))
    drop = stage_quality(job, fp32.path, path) if job.kind == "image" else None
    return _parity_onnx(job, reference, precision, path, restoration_drop=drop)


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
        return parity.skipped(
            "true-fp16", "fp16", path,
            f"runs up to {TRUE_FP16_MAX_PIXELS} pixels per pass (memory; {per_pass} is more); the same graph rules "
            "apply at every size and batch: export at 512x512, batch 1, to run it")

    def go() -> tuple[Check, str]:
        outs = in_child_process(_true_fp16_child, path, list(reference.inputs))
        check = parity.evaluate(BACKEND, "fp16", path, job.output_names, reference.refs, outs, job.kind,
                                job.spec.tolerance, reference.members)
        return check, _check_line(check)

    return job.timed("parity fp16 (true FP16 rounding)", go)


def _true_fp16_child(path: str, inputs: list) -> list:
    return true_fp16_outputs(path, inputs, fp16_path=path)


# TensorRT-RTX builds Q/DQ graphs but runs them at FP16/FP32 speed: said wherever such a plan is made
_RTX_INT8_NOTE = (
    "TensorRT-RTX documents INT8 only as weight-only GEMM: Q/DQ convolutions do not run as INT8 kernels "
    "there, so expect FP16/FP32 speed (and a plan larger than FP32: 20 MB vs 6.5 MB measured on the NAFNet "
    "demo); INT8 speed needs the tensorrt backend (desktop, Jetson)"
)


def stage_engine(job: Job, reference: Reference, graph: Graph, checks: tuple[Check, ...]) -> Engine:
    """Build the engine of ``graph``, check it where it can run, and write its manifest.

    Args:
        job: the run.
        reference: the PyTorch FP32 outputs.
        graph: the graph to build (the last that went through parity).
        checks: the parity rows so far (the manifest records them with the engine's).

    Returns:
        The plan and its parity row; with ``--backend none`` no plan and a skipped row.
    """
    eng, precision = job.engine_backend, job.req.precision
    if eng is None:
        return Engine(None, parity.skipped("engine", precision, "-", "--backend none: no engine was built"))
    plan = f"{job.stem}.{precision}.{eng.major()}.plan"
    built = job.timed(f"engine ({eng.name})", lambda: _build(job, eng, graph.path, plan))
    if precision == "int8" and eng.name == backends.TENSORRT_RTX:
        job.res.notes.append(_RTX_INT8_NOTE)
    # what the plan's sidecar will say (its GPUs, version, DLA core) decides whether it runs here
    typed = Manifest.from_dict(plan_manifest(reference.metadata, precision, graph.path, plan, eng, built), plan + ".json")
    check = _engine_parity(job, reference, eng, plan, typed)
    write_manifest(plan + ".json", plan_manifest(reference.metadata, precision, graph.path, plan, eng, built,
                                                 reference.report(checks + (check,))))
    job.res.artifacts.append(("engine manifest", plan + ".json"))
    return Engine(plan, check)


def _build(job: Job, eng: EngineBackend, onnx_path: str, plan: str) -> tuple[BuildResult, str]:
    built = eng.build(onnx_path, plan, **job.build_options)
    job.res.artifacts.append((f"{eng.name} engine", plan))
    return built, f"{built.seconds:.1f} s, {built.size / 2**20:.1f} MB"


def _engine_parity(job: Job, reference: Reference, eng: EngineBackend, plan: str, manifest: Manifest) -> Check:
    """The engine's parity row, or a skipped row saying why the engine cannot run here and what to use
    instead (the export still succeeds: the plan is for the GPUs its manifest names).

    Args:
        manifest: the plan's sidecar as it will be written (its GPUs, builder version, DLA core).
    """
    precision = job.req.precision
    ok, why = eng.can_run_artifact(manifest)
    if not ok:
        if eng.installed() and cuda.gpu_available()[0]:  # e.g. a TensorRT-RTX plan on a data-centre GPU
            why = why.replace("BUNDLE", manifest.onnx or "BUNDLE")  # the reason says what to build instead
        else:  # no GPU here: the plan is checked where it runs
            why += f"; check it on a GPU it was built for: deploy-kit verify {os.path.basename(plan)}"
        return parity.skipped(eng.name, precision, plan, why)

    def go() -> tuple[Check, str]:
        with eng.open_runner(plan, manifest=manifest) as runner:
            outs = runner.run_many(reference.inputs)
        check = parity.evaluate(eng.name, precision, plan, job.output_names, reference.refs, outs, job.kind,
                                job.spec.tolerance, reference.members)
        return check, _check_line(check)

    return job.timed(f"parity {precision} ({eng.name})", go)


def stage_bundle(done: Finished) -> None:
    """``--bundle``: the graph that passed parity last, with the proof, for the device.

    Args:
        done: where the chain ended (the graph, the reference, every parity row).
    """
    job = done.job

    def go() -> tuple[None, str]:
        info = write_bundle(done.graph.path, done.reference.inputs, done.reference.refs,
                            f"{job.stem}.{done.graph.precision}.bundle", report=done.reference.report(done.checks))
        job.res.bundle = info.path
        job.res.artifacts.append(("device bundle", info.path))
        job.res.next_steps.append(f"on the device: deploy-kit build {info.path} && deploy-kit verify {info.path}")
        return None, info.line()

    job.timed("bundle", go)


CONDITIONING_MAX_PIXELS = 512 * 512  # a float64 forward pass needs about twice the FP32 memory


def _fp32_failure_diagnosis(adapter: ModelAdapter, req: ExportRequest, inputs: Sequence[np.ndarray],
                            refs: Sequence[Sequence[np.ndarray]], outs: Sequence[Sequence[np.ndarray]],
                            members: Sequence[Sequence[int]] | None = None) -> str:
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

    from .models.checkpoint import load_request  # torch

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

    loaded = load_request(adapter, req)
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


def _close(done: Finished) -> ExportResult:
    """Write the parity report (JSON, Markdown, heatmap) and the next steps into the result."""
    job, graph = done.job, done.graph
    res, stem = job.res, job.stem
    checks = list(done.checks)
    if job.kind in ("image", "features") and graph.outputs:
        path = write_heatmap(f"{stem}.{graph.precision}.heatmap.png", done.reference.refs[0][0], graph.outputs[0][0])
        last_ort = max(i for i, c in enumerate(checks) if c.backend == backends.ONNXRUNTIME)  # graph.outputs: ORT
        checks[last_ort] = replace(checks[last_ort], heatmap=path)
        res.artifacts.append(("parity heatmap", path))
    res.report = done.reference.report(checks)
    write_text(f"{stem}.{graph.precision}.parity.json", res.report.to_json())
    write_text(f"{stem}.{graph.precision}.parity.md", res.report.to_markdown())
    res.artifacts.append(("parity report", f"{stem}.{graph.precision}.parity.json"))
    _next_steps(res, done.plan, job.engine_backend)
    return res


def _next_steps(res: ExportResult, plan: str | None, eng: EngineBackend | None) -> None:
    """What to run next: verify the final ONNX first, then the engine or how to build one, then the bundle."""
    onnx_final = [p for label, p in res.artifacts if label.endswith("ONNX")][-1]
    res.next_steps.insert(0, f"deploy-kit verify {onnx_final}")
    if plan and eng is not None:
        if eng.name == backends.TENSORRT_RTX:
            # trtexec is TensorRT's and cannot deserialise a TensorRT-RTX plan; the tensorrt-rtx wheel
            # ships no command-line tool, so deploy-kit's own runner (the TensorRT-RTX runtime) it is
            res.next_steps.append(f"on an NVIDIA GPU with the TensorRT-RTX runtime (trtexec cannot load RTX plans): "
                                  f"deploy-kit verify {plan}   and   deploy-kit run {plan} IMAGE --out DIR")
        else:
            res.next_steps.append(f"on the target GPU: trtexec --loadEngine={plan}   "
                                  f"(or: deploy-kit run {plan} IMAGE --out DIR)")
        res.next_steps.append(f"cross-check with Polygraphy: polygraphy run {onnx_final} --onnxrt --trt")
    else:
        res.next_steps.append(f"build an engine: deploy-kit build {onnx_final} --backend tensorrt-rtx")
    if not res.bundle:
        res.next_steps.append(f"for the device: deploy-kit bundle {onnx_final}")


def _check_line(check: Check) -> str:
    gates = "; ".join(g.text() for g in check.gates)
    return f"{check.status.upper()} ({gates})"
