"""What every backend of the registry (:mod:`deploy_kit.backends`) provides."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from .._deps import require


class Backend:
    """One way to run (and for engines, build) a model.

    Attributes:
        name: the name users type (``--backend``) and manifests record; declared by each backend module.
        module: the Python package it imports when used.
        extra: the deploy-kit pip extra that installs it.
        engine: True for plan-building backends (TensorRT flavours), False for graph runners.
        builds_without_gpu: engines built ahead of time on a machine without a GPU.
        distributions: pip distributions that may provide it (``env`` prints their versions).
    """

    name = ""
    module = ""
    extra = ""
    distributions: tuple[str, ...] = ()
    engine = False
    builds_without_gpu = False

    def load(self) -> ModuleType:
        """Import the backend's package.

        Raises:
            MissingDependencyError: not installed (names the extra).
        """
        return require(self.module)

    def installed(self) -> bool:
        """The package imports here (a broken install counts as missing)."""
        try:
            importlib.import_module(self.module)
        except Exception:  # noqa: BLE001 - any import failure means it cannot be used
            return False
        return True

    def missing(self) -> str:
        """The one-line reason used when the package is not installed."""
        return f"{self.module} is not installed (pip install 'deploy-kit[{self.extra}]')"

    def can_run(self) -> tuple[bool, str]:
        """(True, a short note) when a model can run here, else (False, why not)."""
        raise NotImplementedError

    def can_run_artifact(self, manifest=None) -> tuple[bool, str]:
        """Whether this backend can run an artifact on this machine, and why not.

        Args:
            manifest: the artifact's :class:`deploy_kit.manifest.Manifest` (an engine's plan sidecar),
                or None for any artifact of this backend.

        Returns:
            (True, a short note) or (False, one line: why not and what to do). A graph runner runs
            any graph it can run at all: :meth:`can_run`.
        """
        return self.can_run()

    def can_build(self) -> tuple[bool, str]:
        """(True, "") when this backend can build an engine here, else (False, why not)."""
        return False, f"{self.name} runs graphs; it builds no engine"

    def open_runner(self, path: str, **options: Any):
        """A :class:`deploy_kit.runners.base.Runner` on ``path`` (a graph or a plan)."""
        raise NotImplementedError

    def build(self, onnx_path: str, plan_path: str, **options: Any):
        """Build an engine (engine backends only)."""
        raise NotImplementedError(f"{self.name} builds no engine")
