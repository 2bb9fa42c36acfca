"""Minimal CUDA runtime access through ctypes (no torch, no cuda-python) for EngineSession.

Only what running a TensorRT engine needs: device probe, malloc/free, copies, a stream.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache

_H2D, _D2H = 1, 2


@lru_cache(maxsize=1)
def _cudart():
    names = ["libcudart.so", "libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0"]
    found = ctypes.util.find_library("cudart")
    if found:
        names.insert(0, found)
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    return None


def gpu_available() -> tuple[bool, str]:
    """(True, "") when a CUDA device is usable; otherwise (False, the reason)."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False, "no NVIDIA driver (libcuda.so.1 not found): running an engine needs a CUDA GPU"
    if libcuda.cuInit(0) != 0:
        return False, "the NVIDIA driver found no usable GPU (cuInit failed)"
    count = ctypes.c_int(0)
    if libcuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return False, "no CUDA device present"
    if _cudart() is None:
        return False, "libcudart not found (install the CUDA runtime, e.g. pip install nvidia-cuda-runtime)"
    return True, ""


class CudaError(RuntimeError):
    pass


def _check(code: int, what: str) -> None:
    if code != 0:
        raise CudaError(f"{what} failed with CUDA error {code}")


class DeviceBuffer:
    """A device allocation of ``nbytes``; freed on close."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.ptr = ctypes.c_void_p()
        _check(_cudart().cudaMalloc(ctypes.byref(self.ptr), ctypes.c_size_t(max(1, nbytes))), "cudaMalloc")

    def upload(self, array, stream) -> None:
        _check(
            _cudart().cudaMemcpyAsync(self.ptr, array.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(array.nbytes), _H2D, stream.handle),
            "cudaMemcpyAsync(H2D)",
        )

    def download(self, array, stream) -> None:
        _check(
            _cudart().cudaMemcpyAsync(array.ctypes.data_as(ctypes.c_void_p), self.ptr, ctypes.c_size_t(array.nbytes), _D2H, stream.handle),
            "cudaMemcpyAsync(D2H)",
        )

    def close(self) -> None:
        if self.ptr:
            _cudart().cudaFree(self.ptr)
            self.ptr = ctypes.c_void_p()


class Stream:
    def __init__(self):
        self.handle = ctypes.c_void_p()
        _check(_cudart().cudaStreamCreate(ctypes.byref(self.handle)), "cudaStreamCreate")

    def synchronize(self) -> None:
        _check(_cudart().cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.handle:
            _cudart().cudaStreamDestroy(self.handle)
            self.handle = ctypes.c_void_p()
