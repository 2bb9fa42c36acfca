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
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.machinery
import importlib.metadata as md
import importlib.util
import io
import os
import re
import sys
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Sequence

from . import __version__, backends
from .errors import UsageError
from .manifest import Manifest, plan_sidecar, read_manifest, target_kind

# L4T release -> (JetPack, CUDA major, numpy of the system Python's apt package, which JetPack's own
# cv2 is built against; None where JetPack ships no apt OpenCV). Public sources: NVIDIA's JetPack
# archive (https://developer.nvidia.com/embedded/jetpack-archive) and Jetson Linux archive
# (https://developer.nvidia.com/embedded/jetson-linux-archive); jetson-containers'
# jetson_containers/l4t_version.py (https://github.com/dusty-nv/jetson-containers) for the 35.x/36.x
# releases; Ubuntu's python3-numpy on focal/jammy/noble (https://packages.ubuntu.com).
JETPACK_BY_L4T: dict[tuple[int, int, int], tuple[str, int, str | None]] = {
    (35, 1, 0): ("5.0.2", 11, "1.17.4"),
    (35, 2, 1): ("5.1", 11, "1.17.4"),
    (35, 3, 1): ("5.1.1", 11, "1.17.4"),
    (35, 4, 1): ("5.1.2", 11, "1.17.4"),
    (35, 5, 0): ("5.1.3", 11, "1.17.4"),
    (35, 6, 0): ("5.1.4", 11, "1.17.4"),
    (36, 2, 0): ("6.0 DP", 12, "1.21.5"),
    (36, 3, 0): ("6.0", 12, "1.21.5"),
    (36, 4, 0): ("6.1", 12, "1.21.5"),
    (36, 4, 3): ("6.2", 12, "1.21.5"),
    (36, 4, 4): ("6.2.1", 12, "1.21.5"),
    (38, 2, 0): ("7.0", 13, None),  # Thor; JetPack 7 ships no apt OpenCV
    (38, 4, 0): ("7.1", 13, None),
    (39, 2, 0): ("7.2", 13, None),
}

# the oldest Linux driver that runs each CUDA major (minor version compatibility; the CUDA toolkit
# release notes, "Minimum Required Driver Version": https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/)
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580"}

# pip distributions of OpenCV's official wheels (https://github.com/opencv/opencv-python): none has GStreamer
_OPENCV_PIP = ("opencv-python", "opencv-python-headless", "opencv-contrib-python", "opencv-contrib-python-headless")
_GSTREAMER_ISSUE = "https://github.com/opencv/opencv-python/issues/524"


# --------------------------------------------------------------------------- facts
@dataclass(frozen=True)
class ModuleCopy:
    """One copy of a top-level module found on ``sys.path`` (Python imports the first).

    Attributes:
        path: its ``__init__.py`` (a package) or its file (an extension or a single-file module).
        entry: the ``sys.path`` directory holding it.
        distribution, version: the installed distribution whose file list (``RECORD``) names it;
            None when no ``*.dist-info``/``*.egg-info`` there does (e.g. an apt package).
        installer: the distribution's ``INSTALLER`` (``pip``, ``uv``); None when it has none (a
            system package's metadata).
    """

    path: str
    entry: str
    distribution: str | None = None
    version: str | None = None
    installer: str | None = None

    @property
    def pip_managed(self) -> bool:
        return self.distribution is not None and self.installer is not None

    def origin(self) -> str:
        """Where it came from, for the report."""
        if self.pip_managed:
            by = "" if self.installer == "pip" else f", installed by {self.installer}"
            return f"pip distribution {self.distribution} {self.version}{by}"
        what = "a system package (apt; JetPack on a Jetson)" if _system_dir(self.entry) else "no installer metadata lists it"
        named = f", metadata {self.distribution} {self.version}" if self.distribution else ""
        return f"not pip-managed: {what}{named}"


@dataclass(frozen=True)
class Cv2Facts:
    """OpenCV's Python module.

    Attributes:
        copies: every ``cv2`` on ``sys.path``, in import order.
        version, file: of the imported module; None when it was not imported.
        error: why it is not importable (one line), or None.
        build_info: ``cv2.getBuildInformation()``, or None.
    """

    copies: tuple[ModuleCopy, ...] = ()
    version: str | None = None
    file: str | None = None
    error: str | None = None
    build_info: str | None = None

    @property
    def active(self) -> ModuleCopy | None:
        """The copy Python imports: the imported file's, else the first on ``sys.path``."""
        if self.file:
            for c in self.copies:
                if _same_file(c.path, self.file):
                    return c
        return self.copies[0] if self.copies else None

    @property
    def hidden(self) -> tuple[ModuleCopy, ...]:
        """Copies further down ``sys.path`` than the active one (never imported)."""
        active = self.active
        if active is None:
            return ()
        i = self.copies.index(active)
        return tuple(c for c in self.copies[i + 1:] if not _same_file(c.entry, active.entry))

    def gstreamer(self) -> str | None:
        """The ``GStreamer:`` value of the build information's Video I/O section (``YES (1.20.3)``,
        ``NO``); None without build information."""
        return _build_value(self.build_info, "Video I/O", "GStreamer")

    def build_numpy(self) -> str | None:
        """The numpy version this cv2 was built against (``numpy: ... (ver 1.21.5)`` under Python 3)."""
        value = _build_value(self.build_info, "Python 3", "numpy")
        m = re.search(r"\(ver ([0-9][0-9A-Za-z.]*)\)", value or "")
        return m.group(1) if m else None


@dataclass(frozen=True)
class EngineFacts:
    """One TensorRT flavour (an engine backend of the registry).

    Attributes:
        backend: the registry name; module: its Python package.
        copy: where the package is (None: not installed); version: its ``__version__``, or the
            distribution's when it was not imported.
        error: why it is not importable, or None.
        cuda_major: the CUDA major it was built for, where known.
    """

    backend: str
    module: str
    copy: ModuleCopy | None = None
    version: str | None = None
    error: str | None = None
    cuda_major: int | None = None


@dataclass(frozen=True)
class Venv:
    """A virtual environment (``pyvenv.cfg``).

    Attributes:
        path: its prefix; home: the directory of the interpreter it was made from.
        system_site_packages: ``include-system-site-packages``; None when the file does not say.
    """

    path: str
    home: str | None
    system_site_packages: bool | None


@dataclass(frozen=True)
class Jetson:
    """A Jetson (``/etc/nv_tegra_release`` present).

    Attributes:
        l4t: the L4T release, e.g. ``(36, 4, 3)``; None when the file is unreadable.
        model: ``/proc/device-tree/model`` (e.g. "NVIDIA Jetson Orin Nano Developer Kit"), or None.
    """

    l4t: tuple[int, int, int] | None
    model: str | None = None

    def jetpack(self) -> tuple[str, int | None, str | None]:
        """(JetPack name for the report, its CUDA major, its apt numpy) from :data:`JETPACK_BY_L4T`.

        A release not in the table maps to the newest known release of the same major below it
        ("6.2.1 or later"); a major not in the table is "unknown".
        """
        if self.l4t is None:
            return "unknown (/etc/nv_tegra_release unreadable)", None, None
        if self.l4t in JETPACK_BY_L4T:
            return JETPACK_BY_L4T[self.l4t]
        below = [k for k in JETPACK_BY_L4T if k[0] == self.l4t[0] and k < self.l4t]
        if not below:
            return f"unknown (L4T {_dots(self.l4t)} is not in deploy-kit's table)", None, None
        name, cuda, numpy = JETPACK_BY_L4T[max(below)]
        return f"{name} or later (L4T {_dots(self.l4t)} is not in deploy-kit's table)", cuda, numpy


@dataclass(frozen=True)
class Facts:
    """What the doctor knows about this machine; every field can be fabricated by a test.

    Attributes:
        python, executable, base_prefix: the interpreter (``sys.version``, ``sys.executable``,
            ``sys.base_prefix``); venv: its venv, or None.
        numpy: numpy's version, or None; numpy_error: why numpy is not importable.
        cv2: OpenCV; engines: the TensorRT flavours, in registry order.
        driver: ``cuDriverGetVersion`` (e.g. 12080), None without a driver; runtime: libcudart's
            version (``"12.8"``), None without one.
        gpu: name and compute capability; gpu_why: why there is no usable GPU ("" when there is).
        dla_cores: TensorRT's ``num_DLA_cores``; None when unknown (dla_why says why).
        jetson: the Jetson, or None.
    """

    python: str = ""
    executable: str = ""
    base_prefix: str = ""
    venv: Venv | None = None
    numpy: str | None = None
    numpy_error: str | None = None
    cv2: Cv2Facts = field(default_factory=Cv2Facts)
    engines: tuple[EngineFacts, ...] = ()
    driver: int | None = None
    runtime: str | None = None
    gpu: tuple[str, str] | None = None
    gpu_why: str = ""
    dla_cores: int | None = None
    dla_why: str = ""
    jetson: Jetson | None = None

    def engine(self, name: str) -> EngineFacts | None:
        return next((e for e in self.engines if e.backend == name), None)


@dataclass(frozen=True)
class ArtifactCheck:
    """Whether one backend can run one artifact (a plan, or a bundle's graph) here.

    Attributes:
        backend: registry name; label: what was checked (a file name, or a note).
        ok: True / False, None when there is nothing of this backend's to run.
        why: the backend's note or reason.
        dla_core: the DLA core the artifact was built for, or None.
    """

    backend: str
    label: str
    ok: bool | None
    why: str
    dla_core: int | None = None


# --------------------------------------------------------------------------- reading the machine
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
        mod, err = _try_import("cv2")
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
        from .runners import cuda

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


def _try_import(module: str) -> tuple[Any, str | None]:
    """(module, None), or (None, the one-line reason). What the import prints on stderr is kept:
    numpy 2 prints "_ARRAY_API not found" there before a numpy-1 extension's ImportError."""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stderr(buf):
            return importlib.import_module(module), None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any failure is "not importable (reason)"
        reason = _one_line(exc)
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


# --------------------------------------------------------------------------- artifacts
def check_target(target: str) -> tuple[str, list[ArtifactCheck]]:
    """Whether each backend can run the bundle or plan ``target`` here.

    A bundle: each engine built into it (``Bundle.engines``, checked against its plan's sidecar)
    and, for graph runners, its ONNX graph. A plan: its own backend, against its sidecar. Each
    check is ``Backend.can_run_artifact(manifest)`` where the backend has it, else ``can_run()``.

    Returns:
        (a one-line description of the target, the checks).

    Raises:
        UsageError: not found, or not a bundle or plan.
        ManifestError: a damaged manifest or sidecar (one line).
    """
    if not os.path.exists(target):
        raise UsageError(f"not found: {target}; give env a bundle folder or a .plan with its .json sidecar")
    kind = target_kind(target)
    if kind == "bundle":
        from .bundle import open_bundle  # bundle.py imports numpy, which gather() probes as a finding: only with a target

        bundle = open_bundle(target)
        checks = []
        engines = bundle.engines()
        for b in backends.REGISTRY.values():
            if not b.engine:
                ok, why = can_run_artifact(b, bundle.typed)
                checks.append(ArtifactCheck(b.name, os.path.basename(bundle.onnx), ok, why))
                continue
            plans = [p for p, name in engines if name == b.name]
            for plan in plans:
                checks.append(_plan_check(b, plan))
            if not plans:
                checks.append(ArtifactCheck(b.name, "", None,
                                            f"no engine built into it yet: deploy-kit build {target} --backend {b.name}"))
        for plan, name in engines:
            if name not in backends.REGISTRY:
                checks.append(ArtifactCheck(name, os.path.basename(plan), False, "built by a backend this deploy-kit does not know"))
        return f"bundle {bundle.path} ({bundle.typed.model} {bundle.typed.variant}, {bundle.typed.precision})", checks
    if kind == "plan":
        side = plan_sidecar(target, "env")
        typed = Manifest.from_dict(read_manifest(side), side)
        if typed.backend not in backends.REGISTRY:
            return f"plan {target}", [ArtifactCheck(str(typed.backend), os.path.basename(target), False,
                                                    "built by a backend this deploy-kit does not know")]
        return (f"plan {target} ({typed.model} {typed.variant}, {typed.precision})",
                [_plan_check(backends.get(typed.backend), target)])
    raise UsageError(f"{target} is not a bundle or a .plan; env checks a bundle folder or a .plan with its .json sidecar")


def _plan_check(backend, plan: str) -> ArtifactCheck:
    side = plan + ".json"
    raw = read_manifest(side)
    ok, why = can_run_artifact(backend, Manifest.from_dict(raw, side))
    dla = (raw.get("backend") or {}).get("dla_core")
    return ArtifactCheck(backend.name, os.path.basename(plan), ok, why,
                         dla if isinstance(dla, int) and not isinstance(dla, bool) else None)


def can_run_artifact(backend, manifest: Manifest | None) -> tuple[bool, str]:
    """``backend.can_run_artifact(manifest)`` (the artifact's backend version, CUDA and compute
    capability checked here); an exception from a broken package becomes (False, its reason)."""
    try:
        return backend.can_run_artifact(manifest)
    except Exception as exc:  # noqa: BLE001 - a broken package is a finding, not a crash
        return False, f"check failed ({_one_line(exc)})"


# --------------------------------------------------------------------------- the traps
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


# --------------------------------------------------------------------------- the report
_W = 13  # width of the first column of the machine lines


def _row(label: str, text: str) -> str:
    return f"{label:<{_W}}{text}"


def machine_lines(facts: Facts) -> list[str]:
    """The doctor's lines about the interpreter, packages of note, CUDA, GPU and Jetson."""
    lines = [_row("deploy-kit", __version__), _row("python", f"{facts.python} at {facts.executable}")]
    v = facts.venv
    if v is None:
        lines.append(_row("venv", f"none (the interpreter's own site-packages; prefix {facts.base_prefix})"))
    else:
        sysp = {True: "yes", False: "no", None: "not stated in pyvenv.cfg"}[v.system_site_packages]
        lines.append(_row("venv", f"{v.path}, made from {v.home or 'unknown (no home in pyvenv.cfg)'}; "
                                  f"system site-packages: {sysp}"))
    lines.append(_row("numpy", facts.numpy if facts.numpy else f"not importable ({facts.numpy_error})"))
    lines += _cv2_lines(facts.cv2)
    for e in facts.engines:
        lines.append(_row(e.backend, _engine_line(e)))
    drv = f"CUDA {_dotted(facts.driver)}" if facts.driver else "none (no NVIDIA driver: libcuda.so.1 not found)"
    lines.append(_row("CUDA", f"driver: {drv}; runtime (libcudart): {facts.runtime or 'none found'}"))
    gpu = f"{facts.gpu[0]}, compute capability {facts.gpu[1]}" if facts.gpu else f"none ({facts.gpu_why or 'not probed'})"
    dla = str(facts.dla_cores) if facts.dla_cores is not None else f"unknown ({facts.dla_why or 'not probed'})"
    lines.append(_row("GPU", f"{gpu}; DLA cores: {dla}"))
    if facts.jetson is None:
        lines.append(_row("Jetson", "no (/etc/nv_tegra_release not found)"))
    else:
        j = facts.jetson
        name, cuda, _ = j.jetpack()
        l4t = _dots(j.l4t) if j.l4t else "unknown"
        lines.append(_row("Jetson", f"L4T {l4t} = JetPack {name}{f' (CUDA {cuda})' if cuda else ''}"
                                    f"{'; ' + j.model if j.model else ''}"))
    return lines


def target_lines(target: str, checks: Sequence[ArtifactCheck]) -> list[str]:
    """Whether each backend can run the target's artifacts here (:func:`check_target`)."""
    lines = [f"can it run {target}?"]
    for c in checks:
        if c.ok is None:
            lines.append(f"  {c.backend:<22} {c.why}")
            continue
        dla = f" [DLA core {c.dla_core}]" if c.dla_core is not None else ""
        lines.append(f"  {c.backend:<22} {c.label}{dla}: {'yes' if c.ok else 'no'}{' - ' + c.why if c.why else ''}")
    return lines


def package_lines() -> list[str]:
    """Versions of the pip distributions deploy-kit uses (the backends': the first found, else the usual one)."""
    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except Exception:  # noqa: BLE001 - PackageNotFoundError, or damaged metadata
            return None

    lines = []
    for dist in ("torch", "onnx", "onnxsim", "onnxslim", "onnxconverter-common", "polygraphy", "click", "numpy", "pillow"):
        lines.append(f"  {dist:<22} {version(dist) or 'not installed'}")
    for b in backends.REGISTRY.values():
        found = [(d, version(d)) for d in b.distributions if version(d)]
        dist, ver = found[0] if found else (b.distributions[0], "not installed")
        lines.append(f"  {dist:<22} {ver}")
    return lines


def backend_lines() -> list[str]:
    """Whether each backend of the registry can run and build here, and why not."""
    def ask(fn) -> tuple[bool, str]:
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - a broken package is a finding, not a crash
            return False, f"check failed ({_one_line(exc)})"

    lines = ["backends that can run a model here:"]
    for b in backends.REGISTRY.values():
        ok, why = ask(b.can_run)
        lines.append(f"  {b.name:<22} {'yes' if ok else 'no'}{' - ' + why if why else ''}")
    lines.append("backends that can build an engine here:")
    for b in backends.REGISTRY.values():
        if not b.engine:
            continue
        ok, why = ask(b.can_build)
        if ok and b.builds_without_gpu:
            why = "ahead of time, without a GPU"
        lines.append(f"  {b.name:<22} {'yes' if ok else 'no'}{' - ' + why if why else ''}")
    export = importlib.util.find_spec("torch") is not None  # found, not imported: torch takes seconds to import
    lines.append(f"export (torch) installed: {'yes' if export else 'no - pip install deploy-kit[export]'}")
    return lines


def _cv2_lines(cv2: Cv2Facts) -> list[str]:
    active = cv2.active
    if active is None:
        return [_row("cv2", "not installed (no cv2 on sys.path): pip install opencv-python-headless, or JetPack's OpenCV")]
    if cv2.error:
        head = _row("cv2", f"not importable ({cv2.error}); {active.path} ({active.origin()})")
    else:
        gst = cv2.gstreamer()
        built = cv2.build_numpy()
        head = _row("cv2", f"{cv2.version or '?'} at {cv2.file or active.path} ({active.origin()}); "
                           f"GStreamer: {gst or 'unknown (no build information)'}"
                           + (f"; built against numpy {built}" if built else ""))
    return [head] + [_row("", f"also on sys.path, hidden by it: {c.path} ({c.origin()})") for c in cv2.hidden]


def _engine_line(e: EngineFacts) -> str:
    if e.copy is None:
        return f"not installed (no {e.module} module on sys.path)"
    cuda = f"; built for CUDA {e.cuda_major}" if e.cuda_major else "; CUDA major unknown"
    if e.error:
        return f"not importable ({e.error}); {e.copy.path} ({e.copy.origin()}){cuda}"
    return f"{e.version} at {e.copy.path} ({e.copy.origin()}){cuda}"


# --------------------------------------------------------------------------- helpers
def _build_value(info: str | None, section: str, key: str) -> str | None:
    """The value of ``key:`` in ``section`` of cv2's build information (sections are unindented
    or two-space-indented titles ending in ":"; their keys are indented deeper)."""
    if not info:
        return None
    inside = False
    for line in info.splitlines():
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if stripped.endswith(":") and indent <= 2:
            inside = stripped[:-1].strip() == section
            continue
        if inside and stripped.startswith(key + ":"):
            return stripped[len(key) + 1:].strip() or None
    return None


def _same_file(a: str, b: str) -> bool:
    return os.path.normcase(os.path.realpath(a)) == os.path.normcase(os.path.realpath(b))


def _system_dir(entry: str) -> bool:
    """A Debian/Ubuntu system Python directory (apt packages: /usr/lib/python3/dist-packages)."""
    return os.path.abspath(entry).startswith("/usr/lib/python3") and "dist-packages" in entry


def _system_bin(home: str) -> bool:
    return os.path.normpath(home) in ("/usr/bin", "/bin")


def _system_prefix(prefix: str) -> bool:
    return os.path.normpath(prefix) in ("/usr", "/")


def _norm(name: str | None) -> str:
    return re.sub(r"[-_.]+", "-", name or "").lower()


def _major(version: str | None) -> int:
    m = re.match(r"(\d+)", version or "")
    return int(m.group(1)) if m else -1


def _dots(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def _dotted(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
