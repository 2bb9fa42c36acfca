"""The shipping stages: the engine (built, checked where it runs, its manifest written), the device
bundle, and the report (parity JSON, Markdown, heatmap) with the next steps.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING

from .. import backends, compare
from ..bundle_writer import write_bundle
from ..fsutil import write_text
from ..manifest import Manifest, plan_manifest, write_manifest
from ..parity import write_heatmap
from ..runners import cuda
from .records import Engine, ExportResult, Finished, Graph, Job, Reference, check_line

if TYPE_CHECKING:  # pragma: no cover
    from ..backends._trt import BuildResult, EngineBackend
    from ..compare import Check


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
        return Engine(None, compare.skipped("engine", precision, "-", "--backend none: no engine was built"))
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
    built = eng.build(onnx_path, plan, job.build_options)
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
        return compare.skipped(eng.name, precision, plan, why)

    def go() -> tuple[Check, str]:
        with eng.open_runner(plan, manifest=manifest) as runner:
            outs = runner.run_many(reference.inputs)
        check = compare.evaluate(eng.name, precision, plan, job.output_names, reference.refs, outs, job.kind,
                                job.spec.tolerance, reference.members)
        return check, check_line(check)

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


def stage_report(done: Finished) -> ExportResult:
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
