"""Embedded runtime for Jetson/desktop: numpy + tensorrt only (no torch, onnx or click).

``EngineSession`` runs a plan built by deploy-kit; ``preprocess``/``postprocess`` are the same
conversions parity and calibration use.
"""

from .session import EngineSession, load_manifest
from .imageio import postprocess, preprocess

__all__ = ["EngineSession", "load_manifest", "preprocess", "postprocess"]
