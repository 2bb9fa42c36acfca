"""Open what the device runs — a bundle or a plan with its manifest — as a runner from the registry.

``verify``, ``run``, the Python API (:class:`deploy_kit.runtime.restorer.Restorer`) and Triton's tiled
model all pick their runner here, so "which backend runs this bundle, and why" has one answer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .. import backends
from ..backends import AUTO
from ..bundle import open_bundle
from ..errors import UsageError
from ..manifest import Manifest, plan_sidecar, read_typed, target_kind


@dataclass
class Opened:
    """A runner with the manifest of what it runs.

    Attributes:
        runner: a :class:`~deploy_kit.runtime.runners.Runner`.
        manifest: the bundle's or the plan's manifest, typed (one schema).
        note: what was chosen and why, for the user.
        bundle: the opened bundle, when the target was one.
    """

    runner: Any
    manifest: Manifest
    note: str
    bundle: Any = None


def bundle_runner(bundle, backend: str = AUTO, **options: Any) -> tuple[Any, str]:
    """The runner for a bundle, and a note on what was chosen and why.

    ``auto``: an engine built into the bundle whose runtime can execute here, else ONNX Runtime
    (CPU, or its CUDA EP) on the bundle's graph. An engine backend by name needs a plan built by
    ``deploy-kit build BUNDLE --backend NAME`` and a GPU.

    Args:
        options: passed to the runner (e.g. ``threads`` for ONNX Runtime).

    Raises:
        UsageError: the asked backend cannot run here (the reason is in the message).
    """
    if backend not in backends.choices():
        raise UsageError(f"unknown backend '{backend}'; choose one of: {', '.join(backends.choices())}")
    plans = bundle.engines()
    if backend != AUTO and backends.get(backend).engine:
        eng = backends.get(backend)
        ok, why = eng.can_run()
        if not ok:
            raise UsageError(f"cannot run a {backend} engine here: {why}")
        plan = next((p for p, b in plans if b == backend), None)
        if plan is None:
            raise UsageError(f"{bundle.path} has no {backend} engine yet; run: deploy-kit build {bundle.path} --backend {backend}")
        return eng.open_runner(plan), f"{backend} engine {os.path.basename(plan)}"
    if backend == AUTO:
        for plan, name in plans:
            eng = backends.REGISTRY.get(name)
            if eng is not None and eng.can_run()[0]:
                return eng.open_runner(plan), f"{name} engine {os.path.basename(plan)}"
    ort = backends.get(backends.ONNXRUNTIME)
    ok, why = ort.can_run()
    if not ok:
        engines = "; ".join(f"{k}: {v[1]}" for k, v in backends.status().items() if k != ort.name)
        raise UsageError(f"nothing can run this bundle here: {why}; {engines}")
    runner = ort.open_runner(bundle.onnx, **options)
    note = f"{ort.name} ({runner.device.upper()}) on {bundle.typed.onnx}"
    if backend == AUTO:
        note += " - no engine runtime usable here" if not plans else " - no built engine can run here"
    return runner, note


def open_sync(opened: Opened, backend: str = AUTO, **options: Any) -> tuple[Any, str]:
    """The runner of a bundle's sync graph (``run --context sync``) and a note; ONNX Runtime (its CUDA
    EP where this onnxruntime has it), whatever ``backend`` runs the bundle's main graph.

    Raises:
        UsageError: the target is not a bundle with a sync graph, or ONNX Runtime cannot run here.
    """
    m = opened.manifest
    if opened.bundle is None or not m.sync_onnx:
        raise UsageError("--context sync needs a bundle with a sync graph: export a global-context model (e.g. "
                         "NAFNet without --tlc, Restormer with --no-tlc) with --bundle")
    ort = backends.get(backends.ONNXRUNTIME)
    ok, why = ort.can_run()
    if not ok:
        raise UsageError(f"the sync graph runs on ONNX Runtime, which cannot run here: {why}")
    runner = ort.open_runner(os.path.join(opened.bundle.path, m.sync_onnx), **options)
    return runner, f"{ort.name} ({runner.device.upper()}) on {m.sync_onnx}"


def open_target(target: str, backend: str = AUTO, **options: Any) -> Opened:
    """Open a bundle folder (or its manifest.json) or a ``.plan`` with its ``.json`` manifest.

    Raises:
        UsageError / ManifestError: not found, not a bundle or plan, tampered, or nothing can run it here.
    """
    if not os.path.exists(target):
        raise UsageError(f"not found: {target}")
    kind = target_kind(target)
    if kind == "bundle":
        b = open_bundle(target)
        runner, note = bundle_runner(b, backend, **options)
        return Opened(runner, b.typed, note, b)
    if kind == "plan":
        manifest = read_typed(plan_sidecar(target, "run"))
        name = manifest.backend
        if backend not in (AUTO, name):
            raise UsageError(f"{target} is a {name} engine; --backend {backend} cannot run it")
        eng = backends.REGISTRY.get(name)
        if eng is None or not eng.engine:
            raise UsageError(f"{target}: its manifest names an unknown engine backend '{name}'")
        ok, why = eng.can_run()
        if not ok:
            raise UsageError(f"cannot run {target} here: {why}; run a bundle instead to fall back to ONNX Runtime")
        return Opened(eng.open_runner(target), manifest, f"{name} engine")
    raise UsageError(f"{target}: expected a bundle folder or a .plan with its .json manifest")
