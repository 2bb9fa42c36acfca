"""The legacy TensorRT <= 10 implicit-INT8 calibration cache, and the ``trtexec`` line that reads it.

TensorRT 11 dropped implicit INT8 (:mod:`deploy_kit.precision.int8` writes explicit Q/DQ graphs); JetPack
users on TensorRT 10 (JetPack 6.1/6.2 ship 10.3) can still build an implicit-INT8 engine from the FP32
graph with ``trtexec --int8 --calib=<stem>.int8.calib``. :func:`~deploy_kit.precision.int8.quantize_int8`
writes that cache from the same activation ranges as its Q/DQ graph; ``bundle_writer.py`` ships it.
"""

from __future__ import annotations

import os
import shlex
import struct
from typing import Sequence

from ..errors import CalibrationError
from ..fsutil import write_text

#: TensorRT version named in the legacy cache header: JetPack 6.1/6.2 ship TensorRT 10.3, the
#: newest JetPack line that still has implicit INT8 and is the main Orin target.
LEGACY_TRT_VERSION = "10.3.0"


def trt_version_number(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION integer: 8.6.1 → 8601, 10.3.0 → 100300.

    TensorRT 10 changed the encoding from major*1000 to major*10000 (+ minor*100 + patch).
    """
    parts = [int(p) for p in (version.split(".") + ["0", "0"])[:3]]
    major, minor, patch = parts
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def write_legacy_calibration_cache(
    ranges: dict[str, float], path: str, *, trt_version: str = LEGACY_TRT_VERSION
) -> None:
    """Write a TensorRT implicit-INT8 calibration cache (text, what IInt8EntropyCalibrator2 writes).

    Format (header names the TensorRT version and algorithm; the builder ignores a cache whose
    header does not match its own version)::

        TRT-100300-EntropyCalibration2
        input: 3c010204
        /intro/Conv_output_0: 3d8f5c29

    one line per tensor: ``name: <hex of the float32 scale's bit pattern>``, i.e. the big-endian
    bytes of the IEEE-754 value, with scale = amax / 127. Written atomically.

    Args:
        ranges: amax (max |x|) per tensor name (ONNX tensor names are TensorRT's tensor names).
        path: output file.
        trt_version: the TensorRT version that will read it (e.g. "10.3.0" on JetPack 6.x).
    """
    lines = [f"TRT-{trt_version_number(trt_version)}-EntropyCalibration2"]
    for name in sorted(ranges):
        if ":" in name or "\n" in name:  # the format splits on ':'; such names cannot be represented
            continue
        scale = float(ranges[name]) / 127.0
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    write_text(path, "\n".join(lines) + "\n")


def read_legacy_calibration_cache(path: str) -> tuple[str, dict[str, float]]:
    """(header, amax per tensor) from a TensorRT calibration cache (the inverse of the writer)."""
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().strip()
        if not header.startswith("TRT-"):
            raise CalibrationError(f"{path} is not a TensorRT calibration cache (header {header[:40]!r})")
        out = {}
        for line in fh:
            if not line.strip():
                continue
            name, _, value = line.rstrip("\n").rpartition(":")
            scale = struct.unpack(">f", bytes.fromhex(value.strip().rjust(8, "0")))[0]
            out[name] = scale * 127.0
    return header, out


def _artifact_stem(src: str) -> str:
    """``/out/nafnet-w32-256x256.fp32.onnx`` → ``/out/nafnet-w32-256x256``."""
    stem = os.path.splitext(src)[0]
    return stem[: -len(".fp32")] if stem.endswith(".fp32") else stem


def legacy_cache_path(src: str) -> str:
    """Where the legacy cache goes: next to the FP32 ONNX, ``<stem>.int8.calib``."""
    return _artifact_stem(src) + ".int8.calib"


def trtexec_command(src: str, cache: str, excluded: Sequence[str], remainder: str) -> str:
    """The ``trtexec`` line (TensorRT ≤ 10, e.g. JetPack 6) that builds an implicit-INT8 engine."""
    engine = _artifact_stem(src) + ".int8-implicit.tensorrt10.plan"
    parts = ["trtexec", f"--onnx={src}", "--int8"]
    if remainder == "fp16":
        parts.append("--fp16")
    parts += [f"--calib={cache}"]
    if excluded:
        parts += ["--precisionConstraints=obey", "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in excluded)]
    parts.append(f"--saveEngine={engine}")
    return " ".join(shlex.quote(p) for p in parts)
