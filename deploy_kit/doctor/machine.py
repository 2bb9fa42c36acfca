"""Reading this machine for the device doctor: copies of a module on ``sys.path`` and their owners,
the venv, the Jetson, and (probing) numpy, cv2, the TensorRT flavours, CUDA, the GPU and DLA.

TensorRT, OpenCV and numpy are imported by :func:`gather` only, and any import failure becomes
"not importable (reason)", never a crash.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.metadata as md
import io
import os
import re
import sys
from dataclasses import replace
from typing import Any, Callable, Iterable, Sequence

from .. import _deps, backends
from ..errors import MissingDependencyError
from .facts import Cv2Facts, EngineFacts, Facts, Jetson, ModuleCopy, Venv, _one_line, _same_file

def find_module(name: str, path: Iterable[str]) -> tuple[ModuleCopy, ...]:
    """Every copy of the top-level module ``name`` on ``path``, in import order, with its owner.

    A directory holds it as a package (``name/__init__.py``), an extension module of this Python
    (``name`` + one of ``importlib.machinery.EXTENSION_SUFFIXES``) or ``name.py`` — Python's own
    order within one directory. The owner is the distribution whose file list names that file.

    Args:
        name: module name, e.g. ``cv2``.
        path: ``sys.path``-like directories (missing ones and zip files are skipped).
    """
    out, seen = [], set()
    for entry in path:
        entry = entry or os.getcwd()  # "" is the current directory
        key = os.path.realpath(entry)
        if key in seen or not os.path.isdir(entry):
            continue
        seen.add(key)
        found = None
        init = os.path.join(entry, name, "__init__.py")
        if os.path.isfile(init):
            found = init
        else:
            for suffix in (*importlib.machinery.EXTENSION_SUFFIXES, ".py"):
                if os.path.isfile(os.path.join(entry, name + suffix)):
                    found = os.path.join(entry, name + suffix)
                    break
        if found:
            out.append(ModuleCopy(found, entry, *_owner(entry, found)))
    return tuple(out)


def _owner(entry: str, path: str) -> tuple[str | None, str | None, str | None]:
    """(distribution, version, installer) of the distribution in ``entry`` whose files list ``path``."""
    base = os.path.basename(path)
    try:
        for dist in md.distributions(path=[entry]):
            listing = dist.read_text("RECORD") or dist.read_text("installed-files.txt") or dist.read_text("SOURCES.txt") or ""
            if base not in listing:  # cheap filter: most distributions are skipped without parsing
                continue
            for f in dist.files or ():
                if _same_file(str(dist.locate_file(f)), path):
                    installer = (dist.read_text("INSTALLER") or "").strip() or None
                    return dist.metadata["Name"], dist.version, installer
    except Exception:  # noqa: BLE001 - damaged metadata of some other package must not stop the doctor
        pass
    return None, None, None


def read_venv(prefix: str, base_prefix: str) -> Venv | None:
    """The venv at ``prefix`` (``sys.prefix``), read from its ``pyvenv.cfg``; None outside a venv."""
    if os.path.realpath(prefix) == os.path.realpath(base_prefix):
        return None
    cfg: dict[str, str] = {}
    try:
        with open(os.path.join(prefix, "pyvenv.cfg"), encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, sep, value = line.partition("=")
                if sep:
                    cfg[key.strip().lower()] = value.strip()
    except OSError:
        pass
    flag = cfg.get("include-system-site-packages", "").lower()
    return Venv(prefix, cfg.get("home"), True if flag == "true" else False if flag == "false" else None)


def read_jetson(root: str = "/") -> Jetson | None:
    """The Jetson this is, from ``<root>/etc/nv_tegra_release``; None when the file is absent.

    The file's first line reads ``# R36 (release), REVISION: 4.3, GCID: ...`` (L4T 36.4.3).
    """
    release = os.path.join(root, "etc", "nv_tegra_release")
    if not os.path.exists(release):
        return None
    l4t = None
    try:
        with open(release, encoding="utf-8", errors="replace") as fh:
            m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*(\d+)(?:\.(\d+))?", fh.read(4096))
        if m:
            l4t = (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0))
    except OSError:
        pass
    model = None
    try:
        with open(os.path.join(root, "proc", "device-tree", "model"), "rb") as fh:
            model = fh.read(256).rstrip(b"\0\n").decode(errors="replace") or None
    except OSError:
        pass
    return Jetson(l4t, model)


def gather(*, path: Sequence[str] | None = None, root: str = "/", prefix: str | None = None,
           base_prefix: str | None = None, probe: bool = True) -> Facts:
    """Read the facts of this machine.

    Args:
        path: the ``sys.path`` to search (default: this one).
        root: where ``etc/nv_tegra_release`` and ``proc/device-tree/model`` are looked up.
        prefix, base_prefix: ``sys.prefix`` and ``sys.base_prefix`` (default: this Python's).
        probe: import numpy, cv2 and the TensorRT flavours, and ask the CUDA driver; False reads
            the file system only (tests then fill in versions with :func:`dataclasses.replace`).

    Returns:
        The facts; nothing here raises for a broken package (it becomes a reason).
    """
    path = list(sys.path if path is None else path)
    jetson = read_jetson(root)
    facts = Facts(python=sys.version.split()[0], executable=sys.executable, base_prefix=base_prefix or sys.base_prefix,
                  venv=read_venv(prefix or sys.prefix, base_prefix or sys.base_prefix), jetson=jetson,
                  cv2=Cv2Facts(copies=find_module("cv2", path)))
    jetpack_cuda = jetson.jetpack()[1] if jetson else None
    engines = []
    for b in backends.REGISTRY.values():
        if not b.engine:
            continue
        copies = find_module(b.module, path)
        copy = copies[0] if copies else None
        engines.append(EngineFacts(b.name, b.module, copy, copy.version if copy else None,
                                   cuda_major=_cuda_major(None, copy, jetpack_cuda)))
    facts = replace(facts, engines=tuple(engines))
    return _probe(facts, jetpack_cuda) if probe else facts


def _probe(facts: Facts, jetpack_cuda: int | None) -> Facts:
    """Fill in what needs imports and the driver: numpy, cv2, TensorRT versions, CUDA, GPU, DLA."""
    numpy, numpy_error = None, None
    mod, err = _try_import("numpy")
    if mod is not None:
        numpy = str(getattr(mod, "__version__", "unknown"))
    else:
        numpy_error = err
    cv2 = facts.cv2
    if cv2.copies:
        # through _deps.opencv(), the one place deploy-kit loads OpenCV: the cv2 reported is the runtime's
        mod, err = _try_import("cv2", _deps.opencv)
        if mod is None:
            cv2 = replace(cv2, error=err)
        else:
            info = None
            try:
                info = mod.getBuildInformation()
            except Exception:  # noqa: BLE001 - a cv2 without it (a stub) still has a version
                pass
            cv2 = replace(cv2, version=str(getattr(mod, "__version__", "unknown")), file=getattr(mod, "__file__", None),
                          build_info=info)
    engines = []
    for e in facts.engines:
        b = backends.REGISTRY[e.backend]
        if e.copy is not None:
            mod, err = _try_import(e.module)
            e = replace(e, version=str(getattr(mod, "__version__", e.version)) if mod is not None else e.version,
                        error=err, cuda_major=_cuda_major(b, e.copy, jetpack_cuda))
        engines.append(e)
    facts = replace(facts, numpy=numpy, numpy_error=numpy_error, cv2=cv2, engines=tuple(engines))
    return _probe_gpu(facts)


def _probe_gpu(facts: Facts) -> Facts:
    """CUDA runtime, GPU and DLA cores (deploy_kit/runners/cuda.py; TensorRT's builder for DLA)."""
    try:
        from ..runners import cuda

        # runners/cuda.py's driver_version where this deploy-kit has it (the same libcuda call)
        facts = replace(facts, driver=cuda.driver_version())
        runtime = cuda.versions().get("runtime")
        ok, why = cuda.gpu_available()
        info = cuda.device_info() if ok else None
    except Exception as exc:  # noqa: BLE001 - a broken CUDA install is a finding, not a crash
        return replace(facts, gpu_why=f"CUDA probe failed ({_one_line(exc)})", dla_why="no usable GPU")
    gpu = (info["name"], info["compute_capability"]) if info else None
    facts = replace(facts, runtime=runtime if runtime and runtime != "none" else None, gpu=gpu,
                    gpu_why="" if ok else why)
    trt = facts.engine(backends.TENSORRT)
    if trt is None or trt.copy is None or trt.error:
        return replace(facts, dla_why="TensorRT not importable" if trt and trt.error else "TensorRT not installed")
    if not ok:
        return replace(facts, dla_why="no usable GPU")
    try:
        mod = importlib.import_module(trt.module)
        cores = int(mod.Builder(mod.Logger(mod.Logger.ERROR)).num_DLA_cores)
    except Exception as exc:  # noqa: BLE001
        return replace(facts, dla_why=f"TensorRT's builder failed ({_one_line(exc)})")
    return replace(facts, dla_cores=cores)


def _try_import(module: str, load: Callable[[], Any] | None = None) -> tuple[Any, str | None]:
    """(module, None), or (None, the one-line reason). What the import prints on stderr is kept:
    numpy 2 prints "_ARRAY_API not found" there before a numpy-1 extension's ImportError.

    Args:
        module: the module's name.
        load: what imports it (default: ``importlib.import_module(module)``). A
            :class:`~deploy_kit.errors.MissingDependencyError` it raises (``_deps.opencv``) is
            reported by the import error under it: the report and the traps say what to do.

    Returns:
        (the module, None), or (None, why it is not importable).
    """
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            return (load() if load is not None else importlib.import_module(module)), None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure is "not importable (reason)"
        cause = exc.__cause__ if isinstance(exc, MissingDependencyError) and exc.__cause__ is not None else exc
        reason = _one_line(cause)
        said = buf.getvalue()
        if "_ARRAY_API not found" in said and "_ARRAY_API" not in reason:
            reason += "; _ARRAY_API not found"
        return None, reason


def _cuda_major(backend, copy: ModuleCopy | None, jetpack_cuda: int | None) -> int | None:
    """The CUDA major a TensorRT flavour was built for: the backend's own answer
    (``EngineBackend.cuda_major``: its pip distribution's name), else JetPack's CUDA for a system
    (apt) package."""
    try:
        value = backend.cuda_major()
        if isinstance(value, int):
            return value
    except Exception:  # noqa: BLE001 - a broken package: fall back to what the files say
        pass
    if copy is None:
        return None
    m = re.search(r"cu(\d+)", (copy.distribution or "").lower())
    if m:
        return int(m.group(1))
    return jetpack_cuda if not copy.pip_managed else None
