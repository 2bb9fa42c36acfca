"""``deploy-kit verify BUNDLE``: engine parity on the device, from what the bundle carries.

The reference inputs and PyTorch FP32 outputs travel inside the bundle, so verifying needs no torch,
only a runner (TensorRT, TensorRT-RTX or ONNX Runtime) and the numpy comparison of
:mod:`deploy_kit.compare`. An ONNX or plan on the build machine is verified against the PyTorch
reference rebuilt from its metadata: :func:`deploy_kit.artifact.verify_artifact` (build half).
"""

from __future__ import annotations

import os

from . import backends
from .bundle import open_bundle
from .compare import ParityReport, evaluate
from .fsutil import write_text
from .runtime.target import bundle_runner


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
        report = ParityReport(m.model, m.variant, list(m.input_shape), dict(m.tlc) if m.tlc else None,
                              refs_meta.get("reference") or "PyTorch FP32 (outputs stored in the bundle)",
                              refs_meta.get("inputs") or [f"reference input {i}" for i in range(len(inputs))])
        report.checks.append(evaluate(runner.name, m.precision, getattr(runner, "path", None) or note,
                                      list(m.output_names), refs, outs, m.output_kind, m.tolerance))
    finally:
        runner.close()
    tag = runner.name if runner.name != backends.ONNXRUNTIME else f"{runner.name}-{getattr(runner, 'device', 'cpu')}"
    write_text(os.path.join(bundle.path, f"verify-{tag}.parity.json"), report.to_json())
    write_text(os.path.join(bundle.path, f"verify-{tag}.parity.md"), report.to_markdown())
    return report, note
