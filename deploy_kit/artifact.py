"""What a deploy-kit artifact (ONNX or plan) was made from: its metadata, the request, the PyTorch
reference, and its parity against that reference (``verify`` of an ONNX or plan).

Build half: ``verify ARTIFACT.onnx|.plan`` (:func:`verify_artifact`), ``bundle`` (reference outputs
that travel) and ``seam-check`` read artifacts through here. The metadata readers are torch-free;
:func:`rebuild_reference` needs the export extra. A bundle is verified on the device without this
module (:func:`deploy_kit.verify.verify_bundle`): its reference travels inside it.
"""

from __future__ import annotations

import os

from . import backends
from .compare import ParityReport, evaluate, run_samples, skipped
from .errors import UsageError
from .manifest import file_sha256, plan_sidecar, read_manifest, read_typed, target_kind
from .memory import map_large_allocations
from .models import get_adapter, get_spec
from .onnxmeta import read_metadata
from .onnxsource import fix_dims
from .parity import run_onnxruntime
from .reference import input_labels, reference_outputs
from .runners.ort import OrtRunner
from .runtime.target import for_plan
from .specs import ExportRequest, TLCConfig, UserSource, _freeze


def request_from_metadata(meta: dict, precision: str) -> ExportRequest:
    """Rebuild the ExportRequest an artifact was made from (ONNX metadata_props or plan manifest)."""
    try:
        _, _, h, w = meta["input_shape"]
        tlc = meta.get("tlc")
        return ExportRequest(
            model=meta["model"],
            variant=meta["variant"],
            height=int(h),
            width=int(w),
            precision=precision,
            tlc=TLCConfig(tuple(tlc["train_size"]), tuple(tlc["base_size"])) if tlc else None,
            weights=meta.get("weights"),
            options=tuple(sorted((meta.get("options") or {}).items())),
            seed=int(meta.get("seed") or 0),
            hparams=tuple(sorted((k, _freeze(v)) for k, v in (meta.get("hparams") or {}).items())) if meta["variant"] == "custom" else (),
            # artifacts from before inputs were degraded were checked on clean photos
            degradation=meta.get("degradation", "none"),
            batch=int(meta.get("batch") or 1),
            source=UserSource.from_dict(meta["source"]) if meta.get("source") else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"the artifact has no deploy-kit metadata ({type(exc).__name__}: {exc}); verify only reads deploy-kit exports") from exc


def artifact_metadata(path: str) -> dict:
    """The metadata of a deploy-kit ONNX (``metadata_props``) or plan (its ``.json`` manifest).

    Raises:
        UsageError / ManifestError: unreadable file, or a plan without its manifest.
    """
    if target_kind(path) == "plan":
        return read_manifest(plan_sidecar(path, "verify"))

    return read_metadata(path)  # UsageError for a missing or damaged file (one line)


def artifact_request(path: str, weights: str | None = None) -> tuple[ExportRequest, dict]:
    """The request an artifact was made from, with its weights file checked (gone, or changed since).

    Args:
        weights: a checkpoint to use instead of the path recorded in the artifact (e.g. it moved).

    Raises:
        UsageError: not a deploy-kit artifact, or the weights are gone or changed.
    """
    import dataclasses

    meta = artifact_metadata(path)
    req = request_from_metadata(meta, meta.get("precision", "fp32"))
    if weights is not None:
        if not os.path.isfile(weights):
            raise UsageError(f"weights file not found: {weights}")
        return dataclasses.replace(req, weights=os.path.abspath(weights)), meta
    if req.weights:
        if not os.path.isfile(req.weights):
            raise UsageError(f"the weights this artifact was exported from are gone: {req.weights}; pass them again")
        if meta.get("weights_sha256") and file_sha256(req.weights) != meta["weights_sha256"]:
            raise UsageError(f"{req.weights} changed since the export (sha256 differs); re-export")
    return req, meta


def rebuild_reference(path: str, samples: int = 2):
    """The PyTorch reference of an artifact, rebuilt from its metadata (build machine: torch).

    Returns:
        (an empty ParityReport, inputs, reference outputs per input, the metadata).

    Raises:
        UsageError: not a deploy-kit artifact, or its weights file is gone/changed.
    """
    import torch

    from .models.checkpoint import load_request  # torch

    map_large_allocations()  # the reference is a full-size forward pass; see memory.py
    req, meta = artifact_request(path)
    adapter = get_adapter(req.model)
    inputs = adapter.sample_inputs(req, count=samples)
    if req.source is not None and req.source.kind == "onnx":
        refs, label = source_onnx_outputs(req, inputs)
    else:
        loaded = load_request(adapter, req)
        refs = reference_outputs(adapter, loaded.model, req, inputs)
        label = f"PyTorch {torch.__version__} FP32 eager{adapter.reference_label(req)}"
    report = ParityReport(req.model, req.variant, list(inputs[0].shape), meta.get("tlc"), label,
                                 input_labels(len(inputs), adapter.input_degradation(req), req.seed))
    return report, inputs, refs, meta


def source_onnx_outputs(req: ExportRequest, inputs) -> tuple[list, str]:
    """The reference of a user's ONNX file: that graph, its dims fixed to ``req``, in ONNX Runtime FP32.

    Raises:
        UsageError: the file is gone or changed since the export.
    """
    import tempfile

    import onnxruntime

    src = req.source.ref
    if not os.path.isfile(src):
        raise UsageError(f"the ONNX file this artifact was exported from is gone: {src}")
    if req.source.sha256 and file_sha256(src) != req.source.sha256:
        raise UsageError(f"{src} changed since the export (sha256 differs); re-export")
    with tempfile.TemporaryDirectory(prefix="dk-source-") as tmp:
        fixed = os.path.join(tmp, "source.onnx")
        fix_dims(src, fixed, 1, req.height, req.width)
        with OrtRunner(fixed) as runner:
            refs = runner.run_many(inputs)
    return refs, f"ONNX Runtime {onnxruntime.__version__} FP32 on your graph {os.path.basename(src)}"


def verify_artifact(path: str, samples: int = 2):
    """Parity of one ONNX or plan against the PyTorch reference rebuilt from its metadata.

    Returns:
        ParityReport (an engine that cannot run on this machine, e.g. without a GPU or on a GPU it was
        not built for, is reported as skipped, with the reason).

    Raises:
        UsageError: a plan built by another version of its TensorRT flavour than the one installed.
    """
    report, inputs, refs, meta = rebuild_reference(path, samples)
    precision = meta.get("precision", "fp32")
    spec = get_spec(meta["model"])
    req = request_from_metadata(meta, precision)

    adapter = get_adapter(req.model)
    names, kind = adapter.output_names(req), adapter.output_kind(req)
    if target_kind(path) == "plan":
        eng = backends.get(meta["backend"]["name"])
        manifest = read_typed(plan_sidecar(path, "verify"))
        ok, why = eng.can_run()
        if ok:
            stale = eng.stale(manifest)
            if stale:  # not a property of this machine: the plan must be rebuilt
                raise UsageError(f"cannot run {path} here: {for_plan(stale, path, manifest)}")
            ok, why = eng.can_run_artifact(manifest)
        if not ok:
            report.checks.append(skipped(eng.name, precision, path, for_plan(why, path, manifest)))
            return report
        with eng.open_runner(path, manifest=manifest) as runner:
            outs = run_samples(runner, inputs)  # single samples through a batched plan too
        report.checks.append(evaluate(eng.name, precision, path, names, refs, outs, kind, spec.tolerance))
        return report
    outs = run_onnxruntime(path, inputs, adapter.input_names(req)[0], isolated=True)
    report.checks.append(evaluate(backends.ONNXRUNTIME, precision, path, names, refs, outs, kind, spec.tolerance))
    return report
