"""``deploy-kit verify``: parity of an artifact or a bundle, from what it carries.

* An ONNX / plan on the build machine: the PyTorch reference is rebuilt from the artifact's
  metadata (needs the export extra: torch) — :func:`verify_artifact`.
* A bundle on the device: the reference inputs and PyTorch FP32 outputs travel inside it, so
  verifying needs no torch, only a runner (TensorRT, TensorRT-RTX or ONNX Runtime) —
  :func:`verify_bundle`. This is engine parity on the device.
"""

from __future__ import annotations

import os

from . import backends, parity
from .artifact import rebuild_reference, request_from_metadata
from .bundle import open_bundle
from .fsutil import write_text
from .errors import UsageError
from .manifest import plan_sidecar, read_typed, target_kind
from .models import get_adapter, get_spec
from .runtime.target import bundle_runner, for_plan


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
            report.checks.append(parity.skipped(eng.name, precision, path, for_plan(why, path, manifest)))
            return report
        with eng.open_runner(path, manifest=manifest) as runner:
            outs = parity.run_samples(runner, inputs)  # single samples through a batched plan too
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
    bundle = open_bundle(path)
    m = bundle.typed
    inputs, refs = bundle.references()
    runner, note = bundle_runner(bundle, backend)
    try:
        outs = runner.run_many(inputs)
        refs_meta = bundle.manifest.get("references") or {}  # free text for the report, not a contract
        report = parity.ParityReport(m.model, m.variant, list(m.input_shape), dict(m.tlc) if m.tlc else None,
                                     refs_meta.get("reference") or "PyTorch FP32 (outputs stored in the bundle)",
                                     refs_meta.get("inputs") or [f"reference input {i}" for i in range(len(inputs))])
        report.checks.append(parity.evaluate(runner.name, m.precision, getattr(runner, "path", None) or note,
                                             list(m.output_names), refs, outs, m.output_kind, m.tolerance))
    finally:
        runner.close()
    tag = runner.name if runner.name != backends.ONNXRUNTIME else f"{runner.name}-{getattr(runner, 'device', 'cpu')}"
    write_text(os.path.join(bundle.path, f"verify-{tag}.parity.json"), report.to_json())
    write_text(os.path.join(bundle.path, f"verify-{tag}.parity.md"), report.to_markdown())
    return report, note
