"""Open what the device runs — a bundle or a plan with its manifest — as a runner from the registry.

``verify``, ``run``, the Python API (:class:`deploy_kit.runtime.restorer.Restorer`) and Triton's tiled
model all pick their runner here, so "which backend runs this bundle, and why" has one answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .. import backends
from ..backends import AUTO, RunOptionsArg, as_run_options
from ..bundle import open_bundle
from ..errors import DeployKitError, UsageError
from ..manifest import Manifest, plan_sidecar, read_typed, target_kind


@dataclass
class Opened:
    """A runner with the manifest of what it runs.

    Attributes:
        runner: a :class:`~deploy_kit.runners.base.Runner`.
        manifest: the bundle's or the plan's manifest, typed (one schema).
        note: what was chosen and why, for the user.
        bundle: the opened bundle, when the target was one.
    """

    runner: Any
    manifest: Manifest
    note: str
    bundle: Any = None


def bundle_runner(bundle, backend: str = AUTO, run_options: RunOptionsArg = None) -> tuple[Any, str]:
    """The runner for a bundle, and a one-line note on what was chosen and why.

    ``auto`` walks the registry in preference order and takes the first backend that can run this
    bundle's artifact here (:meth:`~deploy_kit.backends.base.Backend.can_run_artifact`): a plan built
    into the bundle for this GPU by the installed TensorRT flavour; else ONNX Runtime with its CUDA EP;
    else, on the CPU, OpenVINO where :meth:`~deploy_kit.backends.openvino.OpenVINO.preferred_on_cpu` says
    so (x86-64: measured faster, docs/cpu.md), else ONNX Runtime on the CPU. The note names every plan it
    skipped and why, and why OpenVINO was or was not taken (where it is installed). A backend by name:
    an engine needs a plan built by ``deploy-kit build BUNDLE --backend NAME`` that runs here; a graph
    runner runs the bundle's graph.

    Args:
        run_options: the run options of the backends it may open, each backend's own type
            (``OrtRunOptions(threads=2)``, ``EngineRunOptions(slots=3)``; :func:`~deploy_kit.backends.as_run_options`);
            the backend that runs takes its own, or its defaults.

    Raises:
        UsageError: the asked backend cannot run this bundle here (the reason and what to do); bad run options.
    """
    if backend not in backends.choices():
        raise UsageError(f"unknown backend '{backend}'; choose one of: {', '.join(backends.choices())}")
    run_options = as_run_options(run_options)
    plans = [(p, name, read_typed(p + ".json")) for p, name in bundle.engines()]
    if backend != AUTO and backends.get(backend).engine:
        return _named_engine(bundle, backends.get(backend), plans, run_options)
    skipped: list[str] = []
    if backend == AUTO:
        for eng in (backends.get(n) for n in backends.names(engines=True)):
            for plan, name, manifest in plans:
                if name != eng.name:
                    continue
                ok, why = eng.can_run_artifact(manifest)
                if ok:
                    try:
                        runner = eng.open_runner(plan, eng.pick_run_options(run_options), manifest=manifest)
                        return runner, f"{name} engine {os.path.basename(plan)}"
                    except (RuntimeError, ValueError, DeployKitError) as exc:  # fall back, saying why
                        why = str(exc)
                skipped.append(f"{name} engine {os.path.basename(plan)} ({_for_bundle(why, bundle.path)})")
        skipped += [f"{os.path.basename(p)} (its manifest names an unknown engine backend '{n}')"
                    for p, n, _ in plans if n not in backends.names(engines=True)]
    if backend != AUTO:  # a graph runner by name
        return _named_graph_runner(bundle, backends.get(backend), run_options)
    ort = backends.get(backends.ONNXRUNTIME)
    ok, why = ort.can_run_artifact()
    ort_options = ort.pick_run_options(run_options)
    cpu_choice = ""
    if not (ok and ort.device_for(ort_options) == "cuda"):  # no GPU through ONNX Runtime: the CPU runners
        runner, cpu_choice = _cpu_runner(bundle, run_options)
        if runner is not None:
            return runner, (f"{runner.name} ({runner.precision.upper()}, CPU) on {bundle.typed.onnx}"
                            + _engines_note(bundle, skipped) + f"; {cpu_choice}")
    if not ok:
        engines = "; ".join(skipped) or "; ".join(f"{k}: {v[1]}" for k, v in backends.status().items() if k != ort.name)
        raise UsageError(f"nothing can run this bundle here: {why}; {engines}")
    runner = ort.open_runner(bundle.onnx, ort_options)
    note = f"{ort.name} ({runner.device.upper()}) on {bundle.typed.onnx}" + _engines_note(bundle, skipped)
    return runner, note + (f"; {cpu_choice}" if cpu_choice else "")


def _engines_note(bundle, skipped: list[str]) -> str:
    """What ``auto`` says of the engines it did not take: the plans it skipped and why, else whether one
    could be built here."""
    if skipped:
        return " - no built engine can run here; skipped: " + "; ".join(skipped)
    if any(backends.get(n).can_run()[0] for n in backends.names(engines=True)):
        return f" - no engine built yet (deploy-kit build {bundle.path} builds one here)"
    return " - no engine runtime usable here"


def _cpu_runner(bundle, run_options: tuple) -> tuple[Any, str]:
    """``auto`` on the CPU: OpenVINO where :meth:`~deploy_kit.backends.openvino.OpenVINO.preferred_on_cpu`
    says so (docs/cpu.md), with why; else (None, why not, for ONNX Runtime's note; "" where OpenVINO is
    not installed)."""
    ov = backends.get(backends.OPENVINO)
    if not ov.installed():  # not asked for: ONNX Runtime's note stays as it was
        return None, ""
    preferred, why = ov.preferred_on_cpu(bundle.typed.precision)
    if not preferred:
        return None, f"{ov.name} not used: {why}"
    try:
        runner = ov.open_runner(bundle.onnx, ov.pick_run_options(run_options))
    except (RuntimeError, ValueError, DeployKitError) as exc:  # fall back to ONNX Runtime, saying why
        return None, f"{ov.name} not used: {exc}"
    return runner, why


def _named_graph_runner(bundle, runner_backend, run_options: tuple) -> tuple[Any, str]:
    """``--backend NAME`` for a graph runner (ONNX Runtime, OpenVINO) on the bundle's graph.

    Raises:
        UsageError: it cannot run here (not installed: names the extra); a precision the CPU lacks.
    """
    ok, why = runner_backend.can_run_artifact()
    if not ok:
        raise UsageError(f"cannot run {runner_backend.name} here: {why}")
    runner = runner_backend.open_runner(bundle.onnx, runner_backend.pick_run_options(run_options))
    detail = getattr(runner, "precision", None)
    device = runner.device.upper() + (f", {detail.upper()}" if detail else "")
    return runner, f"{runner_backend.name} ({device}) on {bundle.typed.onnx}"


def _named_engine(bundle, eng, plans, run_options: tuple) -> tuple[Any, str]:
    """``--backend NAME`` for an engine: its newest plan in the bundle that runs here.

    Raises:
        UsageError: the runtime cannot run here, the bundle has no such plan, or none of its plans runs here.
    """
    ok, why = eng.can_run()
    if not ok:
        raise UsageError(f"cannot run a {eng.name} engine here: {why}")
    mine = [(p, m) for p, n, m in plans if n == eng.name]
    if not mine:
        raise UsageError(f"{bundle.path} has no {eng.name} engine yet; run: deploy-kit build {bundle.path} --backend {eng.name}")
    reasons = []
    for plan, manifest in mine:
        ok, why = eng.can_run_artifact(manifest)
        if ok:
            runner = eng.open_runner(plan, eng.pick_run_options(run_options), manifest=manifest)
            return runner, f"{eng.name} engine {os.path.basename(plan)}"
        reasons.append(f"{os.path.basename(plan)}: {_for_bundle(why, bundle.path)}")
    raise UsageError(f"cannot run a {eng.name} engine here: {'; '.join(reasons)}")


def _for_bundle(why: str, path: str) -> str:
    """A backend's reason with its ``deploy-kit build BUNDLE`` advice naming the bundle at ``path``."""
    return why.replace("deploy-kit build BUNDLE", f"deploy-kit build {path}")


def for_plan(why: str, plan: str, manifest: Manifest) -> str:
    """A backend's reason about ``plan`` with its ``deploy-kit build BUNDLE`` advice naming what to build
    from: the bundle the plan lies in, else the ONNX its manifest names beside it."""
    folder = os.path.dirname(plan) or "."
    if target_kind(folder) == "bundle":
        return _for_bundle(why, folder)
    if manifest.onnx and os.path.isfile(os.path.join(folder, manifest.onnx)):
        return _for_bundle(why, os.path.join(folder, manifest.onnx))
    return why


def open_sync(opened: Opened, backend: str = AUTO, run_options: RunOptionsArg = None) -> tuple[Any, str]:
    """The runner of a bundle's sync graph (``run --context sync``) and a note; ONNX Runtime (its CUDA
    EP where this onnxruntime has it), whatever ``backend`` runs the bundle's main graph.

    Args:
        run_options: as :func:`bundle_runner`; ONNX Runtime takes its own among them.

    Raises:
        UsageError: the target is not a bundle with a sync graph, or ONNX Runtime cannot run here; bad
            run options.
    """
    m = opened.manifest
    if opened.bundle is None or not m.sync_onnx:
        raise UsageError("--context sync needs a bundle with a sync graph: export a global-context model (e.g. "
                         "NAFNet without --tlc, Restormer with --no-tlc) with --bundle")
    ort = backends.get(backends.ONNXRUNTIME)
    ok, why = ort.can_run()
    if not ok:
        raise UsageError(f"the sync graph runs on ONNX Runtime, which cannot run here: {why}")
    runner = ort.open_runner(os.path.join(opened.bundle.path, m.sync_onnx), ort.pick_run_options(run_options))
    return runner, f"{ort.name} ({runner.device.upper()}) on {m.sync_onnx}"


def read_target(target: str) -> tuple[Manifest, Any]:
    """What a bundle folder (or its manifest.json) or a ``.plan`` with its ``.json`` manifest is, without
    running it: (its typed manifest, the opened bundle or None for a plan).

    Raises:
        UsageError / ManifestError: not found, not a bundle or plan, tampered.
    """
    if not os.path.exists(target):
        raise UsageError(f"not found: {target}")
    kind = target_kind(target)
    if kind == "bundle":
        b = open_bundle(target)
        return b.typed, b
    if kind == "plan":
        return read_typed(plan_sidecar(target, "run")), None
    raise UsageError(f"{target}: expected a bundle folder or a .plan with its .json manifest")


def open_target(target: str, backend: str = AUTO, run_options: RunOptionsArg = None) -> Opened:
    """Open a bundle folder (or its manifest.json) or a ``.plan`` with its ``.json`` manifest.

    Args:
        run_options: as :func:`bundle_runner`; a plan's engine backend takes its own among them.

    Raises:
        UsageError / ManifestError: not found, not a bundle or plan, tampered, or nothing can run it
            here; bad run options.
    """
    run_options = as_run_options(run_options)
    manifest, b = read_target(target)
    if b is not None:
        runner, note = bundle_runner(b, backend, run_options)
        return Opened(runner, manifest, note, b)
    name = manifest.backend
    if backend not in (AUTO, name):
        raise UsageError(f"{target} is a {name} engine; --backend {backend} cannot run it")
    eng = backends.REGISTRY.get(name)
    if eng is None or not eng.engine:
        raise UsageError(f"{target}: its manifest names an unknown engine backend '{name}'")
    ok, why = eng.can_run()
    if not ok:
        raise UsageError(f"cannot run {target} here: {why}; run a bundle instead to fall back to ONNX Runtime")
    ok, why = eng.can_run_artifact(manifest)  # another version, GPU or DLA core: rebuild it
    if not ok:
        raise UsageError(f"cannot run {target} here: {for_plan(why, target, manifest)}")
    return Opened(eng.open_runner(target, eng.pick_run_options(run_options), manifest=manifest), manifest,
                  f"{name} engine")
