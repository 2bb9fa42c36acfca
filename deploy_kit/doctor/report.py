"""The device doctor's report lines: the machine, the packages, the backends and a target."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
from typing import Sequence

from .. import __version__, backends
from .artifacts import ArtifactCheck
from .facts import Cv2Facts, EngineFacts, Facts, _dots, _dotted, _one_line

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
