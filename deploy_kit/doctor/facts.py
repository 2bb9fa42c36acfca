"""What the device doctor knows about a machine: :class:`Facts` and its parts, and the JetPack table.

Plain frozen dataclasses, read from this machine by :mod:`deploy_kit.doctor.machine` and fabricated
by tests; nothing here touches the machine.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

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


def _dots(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def _dotted(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
