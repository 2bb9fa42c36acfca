"""``deploy-kit verify BUNDLE``: engine parity on the device, from what the bundle carries.

The reference inputs and PyTorch FP32 outputs travel inside the bundle, so verifying needs no torch,
only a runner (TensorRT, TensorRT-RTX, ONNX Runtime or OpenVINO) and the numpy comparison of
:mod:`deploy_kit.compare`. An ONNX or plan on the build machine is verified against the PyTorch
reference rebuilt from its metadata: :func:`deploy_kit.artifact.verify_artifact` (build half).
"""

from __future__ import annotations

import os

from . import backends
from .bundle import open_bundle
from .backends import RunOptionsArg
from .compare import ParityReport, evaluate, run_precision
from .fsutil import write_text
from .runtime.target import bundle_runner


def verify_bundle(path: str, backend: str = "auto", run_options: RunOptionsArg = None):
    """Engine (or graph runner) parity of a bundle against the PyTorch outputs it carries; torch-free.

    The row's precision is the lossier of the bundle's and the arithmetic the runner really compiled
    (:func:`deploy_kit.compare.run_precision`): an FP32 bundle run by OpenVINO at BF16 is a ``bf16`` row
    with the BF16 gate.

    Args:
        run_options: the run options of the backends it may open (see
            :func:`deploy_kit.runtime.target.bundle_runner`), e.g. OpenVINO's precision.

    Returns:
        (ParityReport, the runner note). The report is also written into the bundle as
        ``verify-<backend>.parity.json`` / ``.md`` (ONNX Runtime: ``-cpu``/``-cuda`` added; a runner that
        reports its compute precision: that precision added).

    Raises:
        ManifestError: a tampered or incomplete bundle; UsageError: the backend cannot run here, or
            cannot at the precision asked.
    """
    bundle = open_bundle(path)
    m = bundle.typed
    inputs, refs = bundle.references()
    runner, note = bundle_runner(bundle, backend, run_options)
    compute = getattr(runner, "precision", None)  # what really compiled (OpenVINO reads it back)
    try:
        outs = runner.run_many(inputs)
        refs_meta = bundle.manifest.get("references") or {}  # free text for the report, not a contract
        report = ParityReport(m.model, m.variant, list(m.input_shape), dict(m.tlc) if m.tlc else None,
                              refs_meta.get("reference") or "PyTorch FP32 (outputs stored in the bundle)",
                              refs_meta.get("inputs") or [f"reference input {i}" for i in range(len(inputs))])
        report.checks.append(evaluate(runner.name, run_precision(m.precision, compute), getattr(runner, "path", None) or note,
                                      list(m.output_names), refs, outs, m.output_kind, m.tolerance))
    finally:
        runner.close()
    tag = runner.name if runner.name != backends.ONNXRUNTIME else f"{runner.name}-{getattr(runner, 'device', 'cpu')}"
    tag += f"-{compute}" if compute else ""
    write_text(os.path.join(bundle.path, f"verify-{tag}.parity.json"), report.to_json())
    write_text(os.path.join(bundle.path, f"verify-{tag}.parity.md"), report.to_markdown())
    return report, note
