"""Chains the stages: model -> ONNX -> simplified -> precision -> engine -> parity -> bundle.

Each stage is a plain function of the :class:`~deploy_kit.pipeline.records.Job` (the request and
the run's settings) and of what the stages before it returned; it returns its own result as a
frozen record (``Loaded``, ``Reference``, ``Graph``, ``Engine``: deploy_kit/pipeline/records.py).
:func:`run_export` calls them in order and handles ``--stop-after`` in one place
(:func:`_chain`); what the run reports (artifacts, notes, timings, next steps) accumulates in the
job's :class:`ExportResult`.

The stages, by the modules of this package:

* ``graph.py``: load, reference, ONNX export (and the sync graph's), simplify, FP32 parity; a
  user's ONNX file as the source.
* ``precision.py``: the FP16 or INT8 graph, the held-out quality table, the true-FP16 check.
* ``shipping.py``: the engine, the device bundle, the parity report and the next steps.

The heavy lifting of every stage lives in its own module (export.py, simplify.py, precision/,
engine/, parity.py, bundle_writer.py).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import replace

from .. import backends
from ..backends import BuildOptions
from ..errors import UsageError
from ..memory import PeakRss, map_large_allocations, release_memory
from ..models import get_adapter, spec_for
from ..precision.int8 import Int8Options
from ..request import validate_request
from ..specs import ExportRequest
from .graph import (stage_export, stage_export_sync, stage_load, stage_onnx_source, stage_parity_fp32,
                    stage_reference, stage_simplify, stage_sync)
from .precision import stage_precision
from .records import ExportResult, Finished, Job, Progress, Reference
from .shipping import stage_bundle, stage_engine, stage_report

__all__ = ["STOP_POINTS", "ExportResult", "Progress", "run_export"]

# the --stop-after values, in chain order: after the FP32 graph's parity, after the FP16/INT8
# graph's checks, after the engine
STOP_POINTS = ("simplified", "precision", "engine")


def _quiet(event: str, text: str) -> None:
    return None


def run_export(
    req: ExportRequest,
    *,
    out_dir: str,
    backend: str | None = backends.TENSORRT_RTX,
    stop_after: str | None = None,
    samples: int = 2,
    int8: Int8Options | None = None,
    build_options: BuildOptions | None = None,
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
        build_options: the engine backend's typed build options (``backends.get(backend).build_options(...)``:
            compute capabilities, timing cache, DLA); None: its defaults. Ignored without an engine.
        progress: callback for the progress display.
        bundle: also write ``<stem>.bundle/`` for the device (deploy_kit/bundle_writer.py).

    Returns:
        ExportResult (artifacts, timings, parity report, next steps).

    Raises:
        DeployKitError subclasses for user errors (another backend's build options among them, before
        any work); a failed parity gate is *not* raised here —
        the caller decides (the CLI exits 1 when ``result.report.passed()`` is False).
    """
    validate_request(req)
    map_large_allocations()  # freed full-resolution activations go back to the OS (memory.py)
    if stop_after is not None and stop_after not in STOP_POINTS:
        raise UsageError(f"--stop-after must be one of {', '.join(STOP_POINTS)}")
    engine_backend = backends.get(backend) if backend else None
    if engine_backend is not None:
        engine_backend.trt()  # fail early, before minutes of work, when the backend is missing
        build_options = engine_backend.check_build_options(build_options)  # another backend's: before any work
    adapter = get_adapter(req.model)
    adapter.validate(req)
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".dk-work-", dir=out_dir)
    try:
        with PeakRss() as memory:
            job = Job(req, out_dir, work, samples, int8 or Int8Options(), engine_backend,
                      build_options if engine_backend is not None else None,
                      adapter, spec_for(req), progress, memory, ExportResult(req))
            done = _chain(job, stop_after)
            if bundle:
                stage_bundle(done)
            job.res.peak_rss_mib = memory.peak_mib()
        return stage_report(done)
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
