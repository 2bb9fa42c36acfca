"""The graph stages: load the model, run the reference, export ONNX (and the sync graph), simplify,
and check the FP32 graph on ONNX Runtime; a user's ONNX file is its own source and reference.

Each stage takes the :class:`~deploy_kit.pipeline.records.Job` and what the stages before it
returned, and returns its own record (deploy_kit/pipeline/records.py).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .. import __version__, backends, compare, parity
from ..export import export_onnx, update_metadata
from ..manifest import file_sha256, input_conventions
from ..onnxmeta import read_metadata
from ..onnxmeta import read_metadata
from ..onnxsource import fix_dims
from ..precision.fp16 import convert_fp16
from ..reference import batch_labels, input_labels, reference_runner
from ..runtime.context import graph_fn
from ..runners.ort import OrtRunner
from ..simplify import simplify
from ..specs import ExportRequest, ModelSpec, Variant
from .records import Graph, Job, Loaded, Reference, check_line

if TYPE_CHECKING:  # pragma: no cover
    from ..models.base import ModelAdapter


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
        members = compare.batch_members(len(samples), req.batch)
        inputs = compare.stack_batches(samples, members)
        refs = parity.run_onnxruntime(raw, inputs, job.input_names[0], isolated=True, batch=req.batch)
        ref_desc = f"ONNX Runtime {onnxruntime.__version__} FP32 on your graph {os.path.basename(req.source.ref)}"
        labels = input_labels(len(samples), degradation, req.seed)
        header = compare.ParityReport(req.model, req.variant, list(inputs[0].shape), None, ref_desc,
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
    from ..models.checkpoint import load_request  # torch

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

    from ..models.rangesafe import record_ranges  # torch

    def go() -> tuple[Reference, str]:
        req, adapter = job.req, job.adapter
        samples = adapter.sample_inputs(req, count=job.samples)  # (1, C, H, W) each
        runner = reference_runner(adapter, loaded.model, req)
        # one image per reference pass: each batch element's reference is the model on its image
        # alone, the same numbers a batch-1 export compares with
        with record_ranges(runner.module) as ranges:  # what the range-safe FP16 rewrites must hold
            sample_refs = runner.run_many(samples)
        members = compare.batch_members(len(samples), req.batch)
        inputs = compare.stack_batches(samples, members)
        refs = compare.stack_outputs(sample_refs, members)
        degradation = adapter.input_degradation(req)
        ref_desc = f"PyTorch {torch.__version__} FP32 eager{adapter.reference_label(req)}"
        labels = input_labels(len(samples), degradation, req.seed)
        metadata = request_metadata(adapter, job.spec, req, loaded.variant, list(inputs[0].shape), degradation)
        header = compare.ParityReport(req.model, req.variant, list(inputs[0].shape), metadata["tlc"], ref_desc,
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

    from ..models.rangesafe import apply_scales  # torch

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

    from ..models.rangesafe import apply_scales  # torch
    from ..models.sync import INPUTS, OUTPUTS, record_layout  # torch

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


def parity_onnx(job: Job, reference: Reference, precision: str, path: str,
                 restoration_drop: float | None = None) -> Graph:
    """ONNX Runtime parity of ``path``, its gates decided here (``restoration_drop``: see compare.evaluate)."""
    def go() -> tuple[Graph, str]:
        outs = parity.run_onnxruntime(path, reference.inputs, job.input_names[0], isolated=True, batch=job.req.batch)
        check = compare.evaluate(backends.ONNXRUNTIME, precision, path, job.output_names, reference.refs, outs,
                                job.kind, job.spec.tolerance, reference.members, restoration_drop)
        if check.status == "fail" and precision == "fp32":
            job.res.notes.append(_fp32_failure_diagnosis(job.adapter, job.req, reference.inputs, reference.refs, outs,
                                                         reference.members))
        return Graph(precision, path, outs, (check,)), check_line(check)

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
    return parity_onnx(job, reference, "fp32", path)


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
    from ..models.checkpoint import load_request  # torch

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
