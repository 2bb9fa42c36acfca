"""Embedded runtime for Jetson/desktop: numpy + Pillow, plus TensorRT or ONNX Runtime to run a
model (no torch, onnx or click).

* :mod:`.restorer` — ``Restorer``: frames of any size in, restored frames out, pipelined (the Python API);
* :mod:`.target` — which runner runs a bundle or plan here (through :mod:`deploy_kit.backends`);
* :mod:`.tiling` — any image size through a fixed-size model (overlapping, blended tiles, N per call);
* :mod:`.context` — a global-context model's statistics synchronised over the whole image;
* :mod:`.restore` / :mod:`.imageio` / :mod:`.video` — image files and videos in and out.

The runners it drives (the ``Runner`` interface, ONNX Runtime, TensorRT engines, CUDA) live one layer
below, in :mod:`deploy_kit.runners`. Importing this package imports none of its modules: each public
name below is loaded on first use (PEP 562), so importing ``deploy_kit.runtime.tiling`` does not open
the backend registry, and nothing below the runtime that imports one of its modules forms a cycle.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that defines it (``from deploy_kit.runtime import Restorer`` is the documented API, docs/runtime.md)
_PUBLIC = {
    "Restorer": "deploy_kit.runtime.restorer",
    "tile_run": "deploy_kit.runtime.tiling",
    "DEFAULT_OVERLAP": "deploy_kit.runtime.tiling",
    "read_image": "deploy_kit.runtime.imageio",
    "write_image": "deploy_kit.runtime.imageio",
    "preprocess": "deploy_kit.runtime.imageio",
    "postprocess": "deploy_kit.runtime.imageio",
    "Runner": "deploy_kit.runners.base",
    "OrtRunner": "deploy_kit.runners.ort",
    "EngineRunner": "deploy_kit.runners.session",
    "EngineSession": "deploy_kit.runners.session",
}

__all__ = list(_PUBLIC)


def __getattr__(name: str) -> Any:
    """The public names of :data:`__all__`, imported from their module on first access (PEP 562)."""
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
