"""``deploy-kit verify``: parity of an artifact or a bundle, from what it carries.

* An ONNX / plan on the build machine: the PyTorch reference is rebuilt from the artifact's
  metadata (needs the export extra: torch) — :func:`verify_artifact`.
* A bundle on the device: the reference inputs and PyTorch FP32 outputs travel inside it, so
  verifying needs no torch, only a runner (TensorRT, TensorRT-RTX or ONNX Runtime) —
  :func:`verify_bundle`. This is engine parity on the device.
"""

from __future__ import annotations

import os

from .errors import UsageError
from .specs import ExportRequest, TLCConfig, Tolerance, _freeze

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
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"the artifact has no deploy-kit metadata ({type(exc).__name__}: {exc}); verify only reads deploy-kit exports") from exc


def artifact_metadata(path: str) -> dict:
    """The metadata of a deploy-kit ONNX (``metadata_props``) or plan (its ``.json`` manifest).

    Raises:
        UsageError / ManifestError: unreadable file, or a plan without its manifest.
    """
    if path.endswith(".plan"):
        from .manifest import read_manifest

        side = path + ".json"
        if not os.path.isfile(side):
            raise UsageError(f"{path} has no manifest {side}; verify needs the sidecar deploy-kit wrote")
        return read_manifest(side)
    from .export import read_metadata

    return read_metadata(path)  # UsageError for a missing or damaged file (one line)


def artifact_request(path: str, weights: str | None = None) -> tuple[ExportRequest, dict]:
    """The request an artifact was made from, with its weights file checked (gone, or changed since).

    Args:
        weights: a checkpoint to use instead of the path recorded in the artifact (e.g. it moved).

    Raises:
        UsageError: not a deploy-kit artifact, or the weights are gone or changed.
    """
    import dataclasses

    from .manifest import file_sha256

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

    from . import parity
    from .memory import map_large_allocations
    from .models import get_adapter
    from .models.checkpoint import load_model
    from .reference import input_labels, reference_outputs

    map_large_allocations()  # the reference is a full-size forward pass; see memory.py
    req, meta = artifact_request(path)
    adapter = get_adapter(req.model)
    loaded = load_model(adapter, None if req.variant == "custom" else req.variant, req.weights, req.seed)
    inputs = adapter.sample_inputs(req, count=samples)
    refs = reference_outputs(adapter, loaded.model, req, inputs)
    report = parity.ParityReport(req.model, req.variant, list(inputs[0].shape), meta.get("tlc"),
                                 f"PyTorch {torch.__version__} FP32 eager{adapter.reference_label(req)}",
                                 input_labels(len(inputs), adapter.input_degradation(req), req.seed))
    return report, inputs, refs, meta


def verify_artifact(path: str, samples: int = 2):
    """Parity of one ONNX or plan against the PyTorch reference rebuilt from its metadata.

    Returns:
        ParityReport (an engine is reported as skipped, with the reason, without a GPU runtime).
    """
    from . import backends, parity
    from .models import get_spec

    report, inputs, refs, meta = rebuild_reference(path, samples)
    precision = meta.get("precision", "fp32")
    spec = get_spec(meta["model"])
    req = request_from_metadata(meta, precision)
    from .models import get_adapter

    adapter = get_adapter(req.model)
    names, kind = adapter.output_names(req), adapter.output_kind(req)
    if path.endswith(".plan"):
        eng = backends.get(meta["backend"]["name"])
        ok, why = eng.can_run()
        if not ok:
            report.checks.append(parity.skipped(eng.name, precision, path, why))
            return report
        with eng.open_runner(path) as runner:
            outs = runner.run_many(inputs)
        report.checks.append(parity.evaluate(eng.name, precision, path, names, refs, outs, kind, spec.tolerance))
        return report
    outs = parity.run_onnxruntime(path, inputs, adapter.input_names(req)[0], isolated=True)
    report.checks.append(parity.evaluate(backends.ONNXRUNTIME, precision, path, names, refs, outs, kind, spec.tolerance))
    return report


def verify_bundle(path: str, backend: str = "auto"):
    """Engine (or ONNX Runtime) parity of a bundle against the PyTorch outputs it carries; torch-free.

    Returns:
        (ParityReport, the runner note). The report is also written into the bundle as
        ``verify-<backend>.parity.json`` / ``.md``.

    Raises:
        ManifestError: a tampered or incomplete bundle; UsageError: the backend cannot run here.
    """
    from . import backends, parity
    from .bundle import open_bundle
    from .fsutil import write_text
    from .runtime.target import bundle_runner

    bundle = open_bundle(path)
    m = bundle.manifest
    inputs, refs = bundle.references()
    runner, note = bundle_runner(bundle, backend)
    try:
        outs = runner.run_many(inputs)
        refs_meta = m.get("references") or {}
        report = parity.ParityReport(m["model"], m["variant"], list(m["input_shape"]), m.get("tlc"),
                                     refs_meta.get("reference") or "PyTorch FP32 (outputs stored in the bundle)",
                                     refs_meta.get("inputs") or [f"reference input {i}" for i in range(len(inputs))])
        tol = Tolerance(**(m.get("tolerance") or {}))
        report.checks.append(parity.evaluate(runner.name, m["precision"], getattr(runner, "path", None) or note,
                                             m["output_names"], refs, outs, m["output_kind"], tol))
    finally:
        runner.close()
    tag = runner.name if runner.name != backends.ONNXRUNTIME else f"{runner.name}-{getattr(runner, 'device', 'cpu')}"
    write_text(os.path.join(bundle.path, f"verify-{tag}.parity.json"), report.to_json())
    write_text(os.path.join(bundle.path, f"verify-{tag}.parity.md"), report.to_markdown())
    return report, note
