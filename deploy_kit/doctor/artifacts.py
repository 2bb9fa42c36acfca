"""Whether each backend of the registry can run a given bundle or plan here (``deploy-kit env TARGET``)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from .. import backends
from ..errors import UsageError
from ..manifest import Manifest, plan_sidecar, read_manifest, target_kind
from .facts import _one_line

@dataclass(frozen=True)
class ArtifactCheck:
    """Whether one backend can run one artifact (a plan, or a bundle's graph) here.

    Attributes:
        backend: registry name; label: what was checked (a file name, or a note).
        ok: True / False, None when there is nothing of this backend's to run.
        why: the backend's note or reason.
        dla_core: the DLA core the artifact was built for, or None.
    """

    backend: str
    label: str
    ok: bool | None
    why: str
    dla_core: int | None = None


def check_target(target: str) -> tuple[str, list[ArtifactCheck]]:
    """Whether each backend can run the bundle or plan ``target`` here.

    A bundle: each engine built into it (``Bundle.engines``, checked against its plan's sidecar)
    and, for graph runners, its ONNX graph. A plan: its own backend, against its sidecar. Each
    check is ``Backend.can_run_artifact(manifest)`` where the backend has it, else ``can_run()``.

    Returns:
        (a one-line description of the target, the checks).

    Raises:
        UsageError: not found, or not a bundle or plan.
        ManifestError: a damaged manifest or sidecar (one line).
    """
    if not os.path.exists(target):
        raise UsageError(f"not found: {target}; give env a bundle folder or a .plan with its .json sidecar")
    kind = target_kind(target)
    if kind == "bundle":
        from ..bundle import open_bundle  # bundle.py imports numpy, which gather() probes as a finding: only with a target

        bundle = open_bundle(target)
        checks = []
        engines = bundle.engines()
        for b in backends.REGISTRY.values():
            if not b.engine:
                ok, why = can_run_artifact(b, bundle.typed)
                checks.append(ArtifactCheck(b.name, os.path.basename(bundle.onnx), ok, why))
                continue
            plans = [p for p, name in engines if name == b.name]
            for plan in plans:
                checks.append(_plan_check(b, plan))
            if not plans:
                checks.append(ArtifactCheck(b.name, "", None,
                                            f"no engine built into it yet: deploy-kit build {target} --backend {b.name}"))
        for plan, name in engines:
            if name not in backends.REGISTRY:
                checks.append(ArtifactCheck(name, os.path.basename(plan), False, "built by a backend this deploy-kit does not know"))
        return f"bundle {bundle.path} ({bundle.typed.model} {bundle.typed.variant}, {bundle.typed.precision})", checks
    if kind == "plan":
        side = plan_sidecar(target, "env")
        typed = Manifest.from_dict(read_manifest(side), side)
        if typed.backend not in backends.REGISTRY:
            return f"plan {target}", [ArtifactCheck(str(typed.backend), os.path.basename(target), False,
                                                    "built by a backend this deploy-kit does not know")]
        return (f"plan {target} ({typed.model} {typed.variant}, {typed.precision})",
                [_plan_check(backends.get(typed.backend), target)])
    raise UsageError(f"{target} is not a bundle or a .plan; env checks a bundle folder or a .plan with its .json sidecar")


def _plan_check(backend, plan: str) -> ArtifactCheck:
    side = plan + ".json"
    raw = read_manifest(side)
    ok, why = can_run_artifact(backend, Manifest.from_dict(raw, side))
    dla = (raw.get("backend") or {}).get("dla_core")
    return ArtifactCheck(backend.name, os.path.basename(plan), ok, why,
                         dla if isinstance(dla, int) and not isinstance(dla, bool) else None)


def can_run_artifact(backend, manifest: Manifest | None) -> tuple[bool, str]:
    """``backend.can_run_artifact(manifest)`` (the artifact's backend version, CUDA and compute
    capability checked here); an exception from a broken package becomes (False, its reason)."""
    try:
        return backend.can_run_artifact(manifest)
    except Exception as exc:  # noqa: BLE001 - a broken package is a finding, not a crash
        return False, f"check failed ({_one_line(exc)})"
