"""Engine builds from bundles and deploy-kit ONNX files (the builders are in :mod:`deploy_kit.backends`)."""

from .base import BuildResult, build_engine

__all__ = ["BuildResult", "build_engine"]
