"""User-facing errors: one line on stderr, exit code 2, no traceback (``--debug`` shows it)."""

from __future__ import annotations


class DeployKitError(Exception):
    """Root of every error caused by what the user asked for or gave us.

    The message is one line saying what is wrong and what to do. Bugs are never wrapped in
    this class, so they keep their traceback.
    """

    exit_code = 2


class UsageError(DeployKitError):
    """Conflicting or out-of-range options."""


class CheckpointError(DeployKitError):
    """A weights file that is missing, unreadable or of another architecture."""


class MissingDependencyError(DeployKitError):
    """An optional package is not installed; the message names the extra to install."""


class ExportError(DeployKitError):
    """The model could not be traced or written to ONNX at the requested shape."""


class EngineBuildError(DeployKitError):
    """TensorRT / TensorRT-RTX rejected the network."""


class CalibrationError(DeployKitError):
    """A calibration set that is empty, unreadable or does not fit the model."""


class InvalidGraphError(DeployKitError):
    """A stage of deploy-kit produced a graph that does not load: a deploy-kit bug, reported in
    one line naming the stage and the node (``--debug`` shows the traceback)."""

    exit_code = 3
