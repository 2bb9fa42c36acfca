"""``deploy-kit verify``: re-run parity for an existing artifact from its own metadata."""

from __future__ import annotations

import json
import os

from .errors import UsageError
from .specs import ExportRequest, TLCConfig, _freeze


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
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"the artifact has no deploy-kit metadata ({exc}); verify only reads deploy-kit exports") from exc


def verify_artifact(path: str, samples: int = 2):
    """Parity of one artifact against the PyTorch reference rebuilt from its metadata.

    Returns:
        ParityReport (engines are reported as skipped, with the reason, without a GPU runtime).

    Raises:
        UsageError: not a deploy-kit artifact, or its weights file is gone/changed.
    """
    import torch

    from . import parity
    from .export import read_metadata
    from .models import get_adapter, get_spec
    from .memory import map_large_allocations
    from .models.checkpoint import load_model
    from .pipeline import file_sha256, input_labels, reference_outputs, run_engine

    map_large_allocations()  # the reference is a full-size forward pass; see memory.py
    is_plan = path.endswith(".plan")
    if is_plan:
        side = path + ".json"
        if not os.path.isfile(side):
            raise UsageError(f"{path} has no manifest {side}; verify needs the sidecar deploy-kit wrote")
        with open(side, encoding="utf-8") as fh:
            meta = json.load(fh)
    else:
        try:
            meta = read_metadata(path)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from exc
    precision = meta.get("precision", "fp32")
    req = request_from_metadata(meta, precision)
    if req.weights:
        if not os.path.isfile(req.weights):
            raise UsageError(f"the weights this artifact was exported from are gone: {req.weights}")
        if meta.get("weights_sha256") and file_sha256(req.weights) != meta["weights_sha256"]:
            raise UsageError(f"{req.weights} changed since the export (sha256 differs); re-export")
    spec, adapter = get_spec(req.model), get_adapter(req.model)
    variant_arg = None if req.variant == "custom" else req.variant
    loaded = load_model(adapter, variant_arg, req.weights, req.seed)
    inputs = adapter.sample_inputs(req, count=samples)
    refs = reference_outputs(adapter, loaded.model, req, inputs)
    report = parity.ParityReport(req.model, req.variant, list(inputs[0].shape), meta.get("tlc"),
                                 f"PyTorch {torch.__version__} FP32 eager{adapter.reference_label(req)}",
                                 input_labels(len(inputs), adapter.input_degradation(req), req.seed))
    names, kind = adapter.output_names(req), adapter.output_kind(req)
    if is_plan:
        from .engine import get_backend

        eng = get_backend(meta["backend"]["name"])
        ok, why = eng.can_run()
        if not ok:
            report.checks.append(parity.skipped(eng.name, precision, path, why))
            return report
        outs = run_engine(path, eng.name, inputs, adapter.input_names(req)[0], names)
        report.checks.append(parity.evaluate(eng.name, precision, path, names, refs, outs, kind, spec.tolerance))
        return report
    outs = parity.run_onnxruntime(path, inputs, adapter.input_names(req)[0], isolated=True)
    report.checks.append(parity.evaluate("onnxruntime", precision, path, names, refs, outs, kind, spec.tolerance))
    return report
