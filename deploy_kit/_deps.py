"""Optional dependencies: import on demand, fail with the pip extra that provides them."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .errors import MissingDependencyError

# module name -> (pip extra, pip package) used in the error message
_EXTRAS = {
    "tensorrt_rtx": ("rtx", "tensorrt-rtx-cu13"),
    "tensorrt": ("tensorrt", "tensorrt-cu13"),
    "polygraphy": ("polygraphy", "polygraphy"),
    "onnxruntime": ("ort", "onnxruntime"),
    "torch": ("export", "torch"),
    "onnx": ("export", "onnx"),
    "onnxsim": ("export", "onnxsim"),
    "onnxconverter_common": ("export", "onnxconverter-common"),
    "skimage": ("export", "scikit-image"),
}

# what the build-machine commands (export, bundle ARTIFACT, verify ONNX, seam-check) import
EXPORT_MODULES = ("torch", "onnx", "onnxruntime", "onnxsim", "onnxconverter_common", "skimage")


def require_export() -> None:
    """Fail in one line, naming the ``export`` extra, when the build-machine chain is not installed
    (the core install on a Jetson has none of it)."""
    for module in EXPORT_MODULES:
        if importlib.util.find_spec(module) is None:
            extra, package = _EXTRAS[module]
            raise MissingDependencyError(
                f"{package} is not installed: this command runs on the build machine and needs the export chain; "
                f"install it with: pip install 'deploy-kit[{extra}]' (on the device use bundle commands: build, verify, run)"
            )


def require(module: str) -> ModuleType:
    """Import ``module`` or raise a one-line error naming the extra that installs it.

    Args:
        module: importable module name, e.g. ``"tensorrt_rtx"``.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: the module is not installed (never pip-installs at runtime).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, package = _EXTRAS.get(module, (None, module))
        hint = f"pip install 'deploy-kit[{extra}]'" if extra else f"pip install {package}"
        raise MissingDependencyError(
            f"{module} is not installed ({exc.__class__.__name__}: {exc}); install it with: {hint}"
        ) from exc


def available(module: str) -> bool:
    """True when ``module`` imports cleanly (used for capability probes, never for dispatch by name)."""
    try:
        importlib.import_module(module)
    except Exception:  # noqa: BLE001 - a broken install counts as unavailable
        return False
    return True
