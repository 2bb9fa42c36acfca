"""Minimal CUDA runtime access through ctypes (no torch, no cuda-python) for EngineSession.

Only what running a TensorRT engine needs: a device probe, device and page-locked host memory,
asynchronous copies, streams and events. Every call declares its C prototype (a pointer passed as
a plain Python int would otherwise be truncated to a C int) and every return code is checked.

TensorRT and TensorRT-RTX link their CUDA runtime statically; they and this module's libcudart
share the device's primary context, so pointers and streams made here are valid for the engine.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import sys
from functools import lru_cache

import numpy as np

H2D, D2H = 1, 2  # cudaMemcpyKind values for memcpy_async
_STREAM_NON_BLOCKING = 0x1  # no implicit sync with the legacy default stream other libraries use
# cudaEventCreateWithFlags flags (cuda_runtime_api.h / driver_types.h): BlockingSync makes a thread that
# waits in cudaEventSynchronize sleep until the work is done instead of spinning a whole CPU core (the
# default); DisableTiming makes the cheapest event, for ordering only, no timestamps
# (https://docs.nvidia.com/cuda/cuda-runtime-api/group__CUDART__EVENT.html)
_EVENT_BLOCKING_SYNC = 0x1
_EVENT_DISABLE_TIMING = 0x2
EVENT_FLAGS = _EVENT_BLOCKING_SYNC | _EVENT_DISABLE_TIMING

_P = ctypes.POINTER
_VP, _SZ, _UINT, _INT = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int
_PROTOTYPES = {
    "cudaMalloc": (_P(_VP), _SZ), "cudaFree": (_VP,),
    "cudaHostAlloc": (_P(_VP), _SZ, _UINT), "cudaFreeHost": (_VP,),
    "cudaMemcpyAsync": (_VP, _VP, _SZ, _INT, _VP),
    "cudaStreamCreateWithFlags": (_P(_VP), _UINT), "cudaStreamSynchronize": (_VP,), "cudaStreamDestroy": (_VP,),
    "cudaEventCreateWithFlags": (_P(_VP), _UINT), "cudaEventRecord": (_VP, _VP),
    "cudaEventSynchronize": (_VP,), "cudaEventDestroy": (_VP,),
    "cudaGetDeviceCount": (_P(_INT),), "cudaRuntimeGetVersion": (_P(_INT),), "cudaDriverGetVersion": (_P(_INT),),
}


def _library_files(stem: str, sonames: list[str]) -> list[str]:
    """Files of the CUDA library ``lib<stem>.so`` to try: the loader's search path first (``sonames``),
    then pip wheels (nvidia-cuda-runtime, nvidia-cuda-nvrtc, ... install under
    site-packages/nvidia/<pkg>/lib, which the loader does not search), then the CUDA toolkit (on a
    Jetson: JetPack's /usr/local/cuda)."""
    pattern = f"lib{stem}.so*"
    names = [ctypes.util.find_library(stem) or "", *sonames]
    for root in sys.path:
        names += sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib", pattern)), reverse=True)
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home:
            names += sorted(glob.glob(os.path.join(home, "lib64", pattern)), reverse=True)
            names += sorted(glob.glob(os.path.join(home, "targets", "*", "lib", pattern)), reverse=True)
    return list(dict.fromkeys(n for n in names if n))


def _candidates() -> list[str]:
    """libcudart files to try (:func:`_library_files`)."""
    return _library_files("cudart", ["libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"])


@lru_cache(maxsize=None)
def nvrtc(major: int) -> str | None:
    """Load NVRTC of CUDA ``major`` (``libnvrtc.so.<major>``) for the whole process; the file loaded, or None.

    TensorRT-RTX compiles its kernels on the device at run time and opens ``libnvrtc.so.<major>``
    itself only then (dlopen by that name), so a missing NVRTC shows only once a model runs. Found by
    the loader, or in a pip wheel's folder (nvidia-cuda-nvrtc) that the loader does not search: loaded
    here with RTLD_GLOBAL, a later dlopen of the same soname gets the library already in the process.
    """
    soname = f"libnvrtc.so.{major}"
    files = [soname] + [f for f in _library_files("nvrtc", []) if os.path.basename(f).startswith(soname)]
    for name in dict.fromkeys(files):
        try:
            ctypes.CDLL(name, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            continue
        return name
    return None


def driver_version() -> int | None:
    """The CUDA version the installed NVIDIA driver supports (e.g. 13000 for CUDA 13.0), from libcuda's
    cuDriverGetVersion; None without a driver. Needs no GPU and no libcudart."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    out = ctypes.c_int(0)
    if libcuda.cuDriverGetVersion(ctypes.byref(out)) != 0:
        return None
    return out.value or None


def _version(lib, fn: str) -> int:
    out = ctypes.c_int(0)
    try:
        return out.value if getattr(lib, fn)(ctypes.byref(out)) == 0 else 0
    except AttributeError:
        return 0


@lru_cache(maxsize=1)
def _cudart():
    """The first libcudart whose major version the installed driver supports (a CUDA 13 runtime
    fails every call on a CUDA 12 driver), else the first one found; None when there is none."""
    first = None
    for name in _candidates():
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if first is None:
            first = lib
        driver = _version(lib, "cudaDriverGetVersion")
        if driver and _version(lib, "cudaRuntimeGetVersion") // 1000 <= driver // 1000:
            return lib
    return first


@lru_cache(maxsize=1)
def _api():
    """libcudart with every prototype this module calls declared."""
    lib = _cudart()
    for fn, argtypes in _PROTOTYPES.items():
        getattr(lib, fn).argtypes, getattr(lib, fn).restype = argtypes, ctypes.c_int
    lib.cudaGetErrorName.argtypes, lib.cudaGetErrorName.restype = (ctypes.c_int,), ctypes.c_char_p
    return lib


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
    lib = _cudart()
    if lib is None:
        return False, "libcudart not found (install the CUDA runtime, e.g. pip install nvidia-cuda-runtime)"
    runtime, driver = _version(lib, "cudaRuntimeGetVersion"), _version(lib, "cudaDriverGetVersion")
    if driver and runtime // 1000 > driver // 1000:
        return False, f"libcudart is CUDA {dotted(runtime)} but the NVIDIA driver supports CUDA {dotted(driver)} only"
    return True, ""


def device_info(device: int = 0) -> dict[str, str] | None:
    """``{"name": ..., "compute_capability": "9.0"}`` of a CUDA device, from the driver; None
    without one. (TensorRT-RTX targets only some compute capabilities: callers check this.)"""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    major, minor, name = ctypes.c_int(0), ctypes.c_int(0), ctypes.create_string_buffer(256)
    # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
    if (libcuda.cuInit(0) or libcuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)
            or libcuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)
            or libcuda.cuDeviceGetName(name, 256, device)):
        return None
    return {"name": name.value.decode(errors="replace"), "compute_capability": f"{major.value}.{minor.value}"}


def sm(info: dict[str, str] | None) -> str | None:
    """``sm90`` for a :func:`device_info` of compute capability 9.0, ``sm120`` for 12.0; None for None."""
    if not info:
        return None
    return "sm" + info["compute_capability"].replace(".", "")


def versions() -> dict[str, str]:
    """CUDA runtime and driver versions as ``"12.8"`` strings ({} when libcudart is missing)."""
    lib = _cudart()
    if lib is None:
        return {}
    return {"runtime": dotted(_version(lib, "cudaRuntimeGetVersion")),
            "driver": dotted(_version(lib, "cudaDriverGetVersion"))}


def dotted(v: int) -> str:
    """A CUDA version number as text: 12080 -> ``"12.8"``; 0 -> ``"none"``."""
    return f"{v // 1000}.{v % 1000 // 10}" if v else "none"


class CudaError(RuntimeError):
    """A CUDA runtime call failed; the message names the call and the CUDA error."""


def _call(fn: str, *args) -> None:
    """``fn(*args)`` on libcudart; raises CudaError naming ``fn`` when it does not return 0."""
    lib = _api()
    code = getattr(lib, fn)(*args)
    if code != 0:
        name = lib.cudaGetErrorName(code)
        raise CudaError(f"{fn} failed: {name.decode() if name else 'CUDA error'} ({code})")


def memcpy_async(dst: int, src: int, nbytes: int, kind: int, stream: "Stream") -> None:
    """Enqueue a copy on ``stream`` (``kind``: 1 host to device, 2 device to host). Asynchronous
    only from page-locked host memory; the caller keeps both sides alive until the stream passes it."""
    _call("cudaMemcpyAsync", dst, src, nbytes, kind, stream.handle)


class DeviceBuffer:
    """A device allocation of ``nbytes``; ``ptr`` is its address (int); freed on close."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        handle = ctypes.c_void_p()
        _call("cudaMalloc", ctypes.byref(handle), max(1, nbytes))
        self.ptr = handle.value or 0

    def close(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            _call("cudaFree", ptr)


class PinnedBuffer:
    """Page-locked host memory (cudaHostAlloc) seen as one numpy array of ``shape`` and ``dtype``.

    Copies from and to it run asynchronously and at full bus speed; pageable memory would make
    cudaMemcpyAsync stage through a driver buffer and return only when the copy is done
    (https://docs.nvidia.com/cuda/cuda-runtime-api/api-sync-behavior.html). On a Jetson host and
    device share DRAM: the copy is then DRAM to DRAM and stays correct; managed memory is avoided
    because the CPU may not touch it while any kernel runs there
    (https://docs.nvidia.com/cuda/cuda-for-tegra-appnote/index.html).

    ``array`` does not own the memory: it must not be used after :meth:`close`.
    """

    def __init__(self, shape: tuple[int, ...], dtype):
        self.nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        handle = ctypes.c_void_p()
        _call("cudaHostAlloc", ctypes.byref(handle), max(1, self.nbytes), 0)
        self.ptr = handle.value or 0
        raw = (ctypes.c_ubyte * max(1, self.nbytes)).from_address(self.ptr)
        self.array = np.frombuffer(raw, dtype=np.uint8, count=self.nbytes).view(dtype).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            _call("cudaFreeHost", ptr)


class Stream:
    """A non-blocking CUDA stream; ``handle`` is its address as an int (what TensorRT takes)."""

    def __init__(self):
        handle = ctypes.c_void_p()
        _call("cudaStreamCreateWithFlags", ctypes.byref(handle), _STREAM_NON_BLOCKING)
        self.handle = handle.value or 0

    def synchronize(self) -> None:
        _call("cudaStreamSynchronize", self.handle)

    def close(self) -> None:
        if self.handle:
            handle, self.handle = self.handle, 0
            _call("cudaStreamDestroy", handle)


class Event:
    """A CUDA event without timing: marks a point in a stream that the host can wait for; a thread
    waiting for it sleeps (``cudaEventBlockingSync``) rather than spinning a CPU core."""

    def __init__(self):
        handle = ctypes.c_void_p()
        _call("cudaEventCreateWithFlags", ctypes.byref(handle), EVENT_FLAGS)
        self.handle = handle.value or 0

    def record(self, stream: Stream) -> None:
        _call("cudaEventRecord", self.handle, stream.handle)

    def synchronize(self) -> None:
        """Block until the work recorded before it has finished (at once if never recorded).

        Raises:
            CudaError: that work failed (an asynchronous error surfaces here).
        """
        _call("cudaEventSynchronize", self.handle)

    def close(self) -> None:
        if self.handle:
            handle, self.handle = self.handle, 0
            _call("cudaEventDestroy", handle)
