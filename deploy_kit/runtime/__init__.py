"""Embedded runtime for Jetson/desktop: numpy + Pillow, plus TensorRT or ONNX Runtime to run a
model (no torch, onnx or click).

* :mod:`.runners` — the one runner interface (ONNX Runtime, TensorRT / TensorRT-RTX engines);
* :mod:`.tiling` — any image size through a fixed-size model (overlapping, blended tiles);
* :mod:`.restore` / :mod:`.imageio` — image files in and out, format and bit depth preserved;
* :mod:`.session` — ``EngineSession``, a deserialized plan with its device buffers (ctypes CUDA).
"""

from .imageio import postprocess, preprocess, read_image, write_image
from .runners import OrtRunner, Runner
from .session import EngineRunner, EngineSession
from .tiling import DEFAULT_OVERLAP, tile_run

__all__ = ["EngineSession", "Runner", "OrtRunner", "EngineRunner", "tile_run",
           "DEFAULT_OVERLAP", "read_image", "write_image", "preprocess", "postprocess"]
