"""Engine backends: TensorRT (desktop/Jetson) and TensorRT-RTX behind one small interface."""

from .base import BACKENDS, BuildResult, EngineBackend, build_engine, get_backend

__all__ = ["BACKENDS", "BuildResult", "EngineBackend", "build_engine", "get_backend"]
