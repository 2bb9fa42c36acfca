"""Image <-> tensor conversions shared by parity, calibration and the runtime (numpy only)."""

from __future__ import annotations

import numpy as np


def preprocess(img: np.ndarray, channels: int) -> np.ndarray:
    """uint8/float HWC (or HW) image -> float32 NCHW in [0, 1] with ``channels`` channels."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    else:
        arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    arr = arr[..., :3] if channels != 6 else arr
    if channels == 1 and arr.shape[-1] == 3:
        arr = arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        arr = arr[..., None]
    elif channels == 3 and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] != channels:
        raise ValueError(f"image has {arr.shape[-1]} channels, the engine needs {channels}")
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])


def postprocess(out: np.ndarray) -> np.ndarray:
    """float NCHW output in [0, 1] -> uint8 HWC (first batch item; gray squeezed)."""
    img = np.clip(out[0].transpose(1, 2, 0), 0.0, 1.0)
    img = (img * 255.0 + 0.5).astype(np.uint8)
    return img[..., 0] if img.shape[-1] == 1 else img
