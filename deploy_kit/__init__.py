"""deploy-kit: image-restoration networks from PyTorch to verified TensorRT engines.

Importing this package imports no torch, onnx or tensorrt (tests/test_imports.py checks it).
"""

__version__ = "0.1.0"
