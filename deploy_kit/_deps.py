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
    "openvino": ("openvino", "openvino"),
    "ray": ("ray", "ray"),
    "torch": ("export", "torch"),
    "onnx": ("export", "onnx"),
    "onnxsim": ("export", "onnxsim"),
    "onnxconverter_common": ("export", "onnxconverter-common"),
    "skimage": ("export", "scikit-image"),
    # not a core dependency: a Jetson has JetPack's cv2, which pip cannot see (see opencv() below)
    "cv2": ("opencv", "opencv-python-headless"),
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


def opencv() -> ModuleType:
    """The ``cv2`` module importable here, whichever distribution provides it: JetPack 6's apt
    ``nvidia-opencv`` or Ubuntu's ``python3-opencv`` (seen through a venv's --system-site-packages),
    a self-built OpenCV, or pip's ``opencv-python-headless`` (the ``opencv`` extra). The one place
    deploy-kit imports OpenCV.

    OpenCV is not a core dependency: pip cannot see an apt cv2 (it ships no dist-info), so requiring
    a pip OpenCV would put a second cv2, without JetPack's GStreamer
    (https://github.com/opencv/opencv-python/issues/524), ahead of JetPack's on ``sys.path``.

    Returns:
        The imported ``cv2`` module (Python caches it, so later calls cost a dictionary look-up).

    Raises:
        MissingDependencyError: no cv2 is importable, or one is there but fails to import (a numpy-1
            build under numpy 2 fails with "_ARRAY_API not found"); one line saying what to install.
    """
    try:
        return importlib.import_module("cv2")
    except ImportError as exc:
        extra = _EXTRAS["cv2"][0]
        if isinstance(exc, ModuleNotFoundError) and exc.name == "cv2":
            raise MissingDependencyError(
                f"OpenCV (cv2) is not installed; install it with: pip install 'deploy-kit[{extra}]' "
                "(on a Jetson use the system's instead: sudo apt install nvidia-opencv on JetPack 6, python3-opencv "
                "on JetPack 7, seen from a venv made with /usr/bin/python3 -m venv --system-site-packages)"
            ) from exc
        import numpy

        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        raise MissingDependencyError(
            f"OpenCV (cv2) is installed but does not import under numpy {numpy.__version__} ({detail}); "
            "a cv2 built for numpy 1 (JetPack's, opencv-python before 4.10) needs pip install 'numpy<2'; "
            f"otherwise reinstall OpenCV: pip install --force-reinstall 'deploy-kit[{extra}]'"
        ) from exc
