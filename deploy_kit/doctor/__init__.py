"""``deploy-kit env``: the device doctor.

It says what this Python sees (interpreter, venv, numpy, which ``cv2`` and where it came from,
TensorRT flavours and the CUDA they were built for, the CUDA driver and runtime, the GPU, DLA
cores, the Jetson's L4T and JetPack), whether each backend of the registry can build and run
here (and run a given bundle or plan), and one ``trap:`` line, with what to do, for each known
installation trap it finds:

a. numpy 2 beside a ``cv2`` built against numpy 1 (JetPack 6's: "_ARRAY_API not found");
b. a pip OpenCV wheel hiding another ``cv2`` further down ``sys.path`` (JetPack's, with GStreamer);
c. on a Jetson, a Python that cannot see JetPack's apt packages (TensorRT, OpenCV);
d. a DLA core asked for on a device without one;
e. a TensorRT built for a newer CUDA major than the NVIDIA driver supports.

The report is computed from :class:`Facts`, which :func:`gather` reads from this machine and tests
fabricate (``sys.path`` directories holding ``cv2`` packages and ``*.dist-info`` folders, a root for
``/etc/nv_tegra_release``, a venv prefix with its ``pyvenv.cfg``, version strings, a build-info
string). Nothing here imports torch or onnx; TensorRT, OpenCV and numpy are imported by
:func:`gather` only, and any import failure becomes "not importable (reason)", never a crash.

The modules: ``facts.py`` (what is known: :class:`Facts` and its parts, the JetPack table),
``machine.py`` (reading this machine: :func:`gather`), ``artifacts.py`` (whether a bundle or plan
runs here: :func:`check_target`), ``traps.py`` (the trap rules: :func:`traps`) and ``report.py``
(the lines ``env`` prints). ``deploy_kit.cli.device``'s ``env`` calls the names below.
"""

from __future__ import annotations

from .artifacts import ArtifactCheck, can_run_artifact, check_target
from .facts import JETPACK_BY_L4T, Cv2Facts, EngineFacts, Facts, Jetson, ModuleCopy, Venv
from .machine import find_module, gather, read_jetson, read_venv
from .report import backend_lines, machine_lines, package_lines, target_lines
from .traps import MIN_DRIVER, traps

__all__ = [
    "JETPACK_BY_L4T", "MIN_DRIVER",
    "ArtifactCheck", "Cv2Facts", "EngineFacts", "Facts", "Jetson", "ModuleCopy", "Venv",
    "find_module", "read_venv", "read_jetson", "gather",
    "check_target", "can_run_artifact",
    "traps",
    "machine_lines", "package_lines", "backend_lines", "target_lines",
]
