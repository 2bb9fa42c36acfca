"""Embedded runtime for Jetson/desktop: numpy + Pillow, plus TensorRT or ONNX Runtime to run a
model (no torch, onnx or click).

* :mod:`.restorer` — ``Restorer``: frames of any size in, restored frames out, pipelined (the Python API);
* :mod:`.runners` — the one runner interface (ONNX Runtime, TensorRT / TensorRT-RTX engines);
* :mod:`.target` — which runner runs a bundle or plan here (through :mod:`deploy_kit.backends`);
* :mod:`.tiling` — any image size through a fixed-size model (overlapping, blended tiles, N per call);
* :mod:`.restore` / :mod:`.imageio` / :mod:`.video` — image files and videos in and out;
* :mod:`.session` — ``EngineSession``, a deserialized plan with pinned host and device buffers (ctypes CUDA).
"""

from .imageio import postprocess, preprocess, read_image, write_image
from .restorer import Restorer
from .runners import OrtRunner, Runner
from .session import EngineRunner, EngineSession
from .tiling import DEFAULT_OVERLAP, tile_run

__all__ = ["Restorer", "EngineSession", "Runner", "OrtRunner", "EngineRunner", "tile_run",
           "DEFAULT_OVERLAP", "read_image", "write_image", "preprocess", "postprocess"]
