"""What every backend of the registry (:mod:`deploy_kit.backends`) provides, and the base classes of
its typed options.

A backend's options are frozen dataclasses declared in the backend's own module (e.g.
``tensorrt.TensorRTBuildOptions``, ``onnxruntime.OrtRunOptions``): what an engine build takes beyond
its graph (:class:`BuildOptions`) and what opening a runner takes (:class:`RunOptions`). The CLI
makes them from its flags with :meth:`Backend.build_options` / :meth:`Backend.run_options`, which
refuse a flag the backend does not take in one line. Nothing is stored in them while they are used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Iterable, Mapping, Union

from .._deps import require
from ..errors import UsageError


@dataclass(frozen=True)
class BuildOptions:
    """What an engine build takes beyond its graph and plan path; this base takes nothing (an engine
    backend without options of its own). Each engine backend declares its subclass in its module."""


@dataclass(frozen=True)
class RunOptions:
    """What opening a runner takes beyond its path; this base takes nothing. Each backend declares its
    subclass in its module (:class:`Backend.run_options_type`)."""


# what a caller that does not know yet which backend runs (``auto``) passes: one backend's run
# options, several backends' (each backend takes its own type), or none (every backend's defaults)
RunOptionsArg = Union[RunOptions, Iterable[RunOptions], None]


def as_run_options(given: RunOptionsArg) -> tuple[RunOptions, ...]:
    """``given`` as a tuple of run options, at most one of each type.

    Raises:
        UsageError: an item that is no backend's run options, or two of one type.
    """
    items = () if given is None else (given,) if isinstance(given, RunOptions) else tuple(given)
    seen: set[type] = set()
    for item in items:
        if not isinstance(item, RunOptions):
            raise UsageError(f"run options must be a backend's RunOptions (e.g. OrtRunOptions(threads=2)); "
                             f"got {type(item).__name__}")
        if type(item) in seen:
            raise UsageError(f"two {type(item).__name__} given; give one")
        seen.add(type(item))
    return items


def _given(value: Any) -> bool:
    """Whether a flag's value was given (click passes None, or () for a repeatable flag left out)."""
    return value is not None and value != ()


class Backend:
    """One way to run (and for engines, build) a model.

    Attributes:
        name: the name users type (``--backend``) and manifests record; declared by each backend module.
        module: the Python package it imports when used.
        extra: the deploy-kit pip extra that installs it.
        engine: True for plan-building backends (TensorRT flavours), False for graph runners.
        builds_without_gpu: engines built ahead of time on a machine without a GPU.
        distributions: pip distributions that may provide it (``env`` prints their versions).
        build_options_type: the frozen dataclass of its build options (a :class:`BuildOptions`
            subclass declared in its module); None for a graph runner, which builds no engine.
        run_options_type: the frozen dataclass of its run options (a :class:`RunOptions` subclass).
        refused_hints: flag keyword -> why that flag is not needed with this backend (the refusal says it).
    """

    name = ""
    module = ""
    extra = ""
    distributions: tuple[str, ...] = ()
    engine = False
    builds_without_gpu = False
    build_options_type: type[BuildOptions] | None = None
    run_options_type: type[RunOptions] = RunOptions
    refused_hints: dict[str, str] = {}

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

    def refuse(self, values: Mapping[str, object]) -> None:
        """Refuse the first flag given in ``values`` (keyword: the flag's name with ``_`` for ``-``):
        this backend does not take it.

        Raises:
            UsageError: one line naming the flag and the backend; nothing when no value was given.
        """
        for key, value in values.items():
            if _given(value):
                hint = self.refused_hints.get(key)
                raise UsageError(f"--{key.replace('_', '-')} does not apply to the {self.name} backend; drop it"
                                 + (f" ({hint})" if hint else ""))

    def build_options(self, **values: Any) -> BuildOptions:
        """This backend's typed build options from flag values (keywords: the flags' names with ``_``;
        None or () means not given).

        Raises:
            UsageError: a graph runner (it builds no engine), or a given flag it does not take.
        """
        if self.build_options_type is None:
            raise UsageError(f"{self.name} runs graphs; it builds no engine")
        self.refuse(values)
        return self.build_options_type()

    def run_options(self, **values: Any) -> RunOptions:
        """This backend's typed run options from flag or keyword values (None means not given).

        Raises:
            UsageError: a given value it does not take.
        """
        self.refuse(values)
        return self.run_options_type()

    def check_build_options(self, options: BuildOptions | None) -> BuildOptions:
        """``options`` if they are this backend's build options, its defaults for None.

        Raises:
            UsageError: a graph runner, or another backend's options (one line).
        """
        if self.build_options_type is None:
            raise UsageError(f"{self.name} runs graphs; it builds no engine")
        return self._own(options, self.build_options_type, "build")

    def check_run_options(self, options: RunOptions | None) -> RunOptions:
        """``options`` if they are this backend's run options, its defaults for None.

        Raises:
            UsageError: another backend's options (one line).
        """
        return self._own(options, self.run_options_type, "run")

    def _own(self, options, kind: type, what: str):
        """``options`` when they are of this backend's ``kind``, a default ``kind()`` for None.

        Raises:
            UsageError: options of another type (another backend's), one line.
        """
        if options is None:
            return kind()
        if type(options) is not kind:
            raise UsageError(f"{type(options).__name__} are not {what} options of {self.name} (it takes "
                             f"{kind.__name__}); make them with its {what}_options(...)")
        return options

    def pick_run_options(self, given: RunOptionsArg = None) -> RunOptions:
        """This backend's run options among ``given`` (see :func:`as_run_options`), else its defaults: a
        caller that lets ``auto`` choose passes the options of every backend it may get.

        Raises:
            UsageError: as :func:`as_run_options`.
        """
        mine = [o for o in as_run_options(given) if type(o) is self.run_options_type]
        return mine[0] if mine else self.run_options_type()

    def open_runner(self, path: str, options: RunOptions | None = None, *, manifest=None):
        """A :class:`deploy_kit.runners.base.Runner` on ``path`` (a graph or a plan).

        Args:
            options: this backend's run options (None: its defaults).
            manifest: the artifact's :class:`deploy_kit.manifest.Manifest` where it has one (a plan's sidecar).
        """
        raise NotImplementedError

    def build(self, onnx_path: str, plan_path: str, options: BuildOptions | None = None):
        """Build an engine (engine backends only)."""
        raise NotImplementedError(f"{self.name} builds no engine")
