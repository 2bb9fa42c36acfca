"""The device doctor's trap rules: one ``trap: <what> -> <what to do>`` line per known installation
trap that :class:`~deploy_kit.doctor.facts.Facts` show (the list is in :mod:`deploy_kit.doctor`)."""

from __future__ import annotations

import os
import re
from typing import Sequence

from .. import backends
from .facts import Facts, _dotted, _system_dir

# the oldest Linux driver that runs each CUDA major (minor version compatibility; the CUDA toolkit
# release notes, "Minimum Required Driver Version": https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/)
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580"}

# pip distributions of OpenCV's official wheels (https://github.com/opencv/opencv-python): none has GStreamer
_OPENCV_PIP = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
_GSTREAMER_ISSUE = "https://github.com/opencv/opencv-python/issues/524"


def traps(facts: Facts, dla_requests: Sequence[tuple[str, int]] = ()) -> list[str]:
    """One ``trap: <what> -> <what to do>`` line per known installation trap found.

    Args:
        facts: this machine (:func:`gather`).
        dla_requests: (what asks, DLA core) — a plan built for a DLA core, or ``env --dla-core``.
    """
    out = []
    out += _trap_numpy(facts)
    out += _trap_shadowed_cv2(facts)
    out += _trap_jetson_venv(facts)
    out += _trap_dla(facts, dla_requests)
    out += _trap_cuda(facts)
    return ["trap: " + t for t in out]


def _pip(facts: Facts) -> str:
    return f"{facts.executable or 'python'} -m pip"


def _trap_numpy(facts: Facts) -> list[str]:
    """(a) numpy 2 with a cv2 built against numpy 1 (JetPack 6's cv2: numpy 1.21.5)."""
    if _major(facts.numpy) < 2:
        return []
    cv2 = facts.cv2
    failed = cv2.error is not None and any(s in cv2.error for s in (
        "_ARRAY_API", "compiled using NumPy 1.x", "numpy.core.multiarray failed to import"))
    built = cv2.build_numpy()
    if not failed and not (built and _major(built) == 1):
        return []
    where = cv2.active.path if cv2.active else (cv2.file or "cv2")
    why = "its import fails (_ARRAY_API not found)" if failed else f"its build information says numpy {built}"
    scope = " in this venv" if facts.venv else ""
    return [f"numpy {facts.numpy} runs, but cv2 ({where}) was built against numpy 1.x: {why} "
            f"-> {_pip(facts)} install \"numpy<2\"{scope}"]


def _trap_shadowed_cv2(facts: Facts) -> list[str]:
    """(b) a pip OpenCV wheel hiding another cv2 further down sys.path."""
    active, hidden = facts.cv2.active, facts.cv2.hidden
    if active is None or not hidden or not active.pip_managed or _norm(active.distribution) not in _OPENCV_PIP:
        return []
    other = hidden[0]
    gst = facts.cv2.gstreamer()
    have = f" (this one: GStreamer {gst})" if gst else ""
    line = (f"pip's {active.distribution} ({active.path}) hides the cv2 at {other.path}{have}; pip wheels have no "
            f"GStreamer ({_GSTREAMER_ISSUE}) -> {_pip(facts)} uninstall {active.distribution}")
    numpy_apt = facts.jetson.jetpack()[2] if facts.jetson else None
    if _system_dir(other.entry) and numpy_apt and _major(numpy_apt) == 1 and _major(facts.numpy) >= 2:
        line += f", then {_pip(facts)} install \"numpy<2\" (JetPack's cv2 is built against numpy {numpy_apt})"
    return [line]


def _trap_jetson_venv(facts: Facts) -> list[str]:
    """(c) on a Jetson, a Python that cannot see JetPack's apt packages (TensorRT bindings, OpenCV)
    (https://github.com/NVIDIA/TensorRT/issues/4176)."""
    if facts.jetson is None:
        return []
    fix = "/usr/bin/python3 -m venv --system-site-packages VENV"
    venv = facts.venv
    if venv is None:
        if _system_prefix(facts.base_prefix):
            return []
        return [f"this Python ({facts.executable}) is not the system /usr/bin/python3: JetPack's TensorRT and OpenCV "
                f"are apt packages for the system Python only -> {fix}"]
    problems = []
    if venv.system_site_packages is not True:
        problems.append("does not include system site-packages")
    if venv.home is None or not _system_bin(venv.home):
        problems.append(f"was made from {venv.home or 'an unknown interpreter'}, not /usr/bin/python3")
    if not problems:
        return []
    return [f"the venv {venv.path} {' and '.join(problems)}: JetPack's TensorRT and OpenCV are apt packages for the "
            f"system Python only, invisible here -> {fix}"]


def _trap_dla(facts: Facts, requests: Sequence[tuple[str, int]]) -> list[str]:
    """(d) a DLA core asked for on a device without one (Orin Nano and Thor have none; TensorRT
    11.0/11.1 dropped DLA)."""
    if not requests:
        return []
    trt = facts.engine(backends.TENSORRT)
    trt_version = trt.version if trt and trt.copy is not None else None
    model = facts.jetson.model if facts.jetson else None
    if facts.dla_cores is not None and facts.dla_cores > 0:
        missing = None
    elif facts.dla_cores == 0:
        missing = f"this device has no DLA (TensorRT reports 0 DLA cores{'; ' + model if model else ''})"
    elif model and ("Orin Nano" in model or "Thor" in model):
        missing = f"this device ({model}) has no DLA"
    elif facts.jetson is None and facts.gpu is not None:
        missing = f"this is not a Jetson (GPU {facts.gpu[0]}): DLA exists on Jetson Xavier/Orin only"
    else:
        missing = None
    if missing is None and trt_version and re.match(r"11\.[01](\.|$)", trt_version):
        missing = f"TensorRT {trt_version} has no DLA support (dropped in 11.0/11.1)"
    out = []
    for what, core in requests:
        if missing:
            out.append(f"{what} asks for DLA core {core}, but {missing} -> rebuild for the GPU "
                       f"(deploy-kit build BUNDLE --backend {backends.TENSORRT}, without --dla-core)")
        elif facts.dla_cores is not None and core >= facts.dla_cores:
            out.append(f"{what} asks for DLA core {core}, but this device has {facts.dla_cores} "
                       f"(cores 0..{facts.dla_cores - 1}) -> rebuild with --dla-core 0, or for the GPU")
    return out


def _trap_cuda(facts: Facts) -> list[str]:
    """(e) a TensorRT flavour built for a newer CUDA major than the driver supports."""
    if not facts.driver:
        return []
    driver = facts.driver // 1000
    out = []
    for e in facts.engines:
        if e.copy is None or e.cuda_major is None or e.cuda_major <= driver:
            continue
        dist = e.copy.distribution or e.module
        want = MIN_DRIVER.get(e.cuda_major)
        other = re.sub(r"cu\d+", f"cu{driver}", _norm(dist)) if re.search(r"cu\d+", dist.lower()) else f"a CUDA {driver} build"
        out.append(f"{e.backend} {e.version or ''} ({dist}) is built for CUDA {e.cuda_major}, but the NVIDIA driver supports "
                   f"CUDA {_dotted(facts.driver)} only -> install the cu{driver} wheel ({other}) or a driver for CUDA "
                   f"{e.cuda_major}{' (>= ' + want + ')' if want else ''}")
    return out


def _system_bin(home: str) -> bool:
    return os.path.normpath(home) in ("/usr/bin", "/bin")


def _system_prefix(prefix: str) -> bool:
    return os.path.normpath(prefix) in ("/usr", "/")


def _norm(name: str | None) -> str:
    return re.sub(r"[-_.]+", "-", name or "").lower()


def _major(version: str | None) -> int:
    m = re.match(r"(\d+)", version or "")
    return int(m.group(1)) if m else -1

