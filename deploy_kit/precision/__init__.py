"""Precision lives in the ONNX graph (TensorRT 11 removed the FP16/INT8 builder flags)."""
