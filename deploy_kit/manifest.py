"""The one artifact manifest: written by export, build and bundle; read by verify, bundle, run.

A manifest is a JSON object. Its required keys say what the graph is (model, variant, input
shape, precision) and how to feed it (input conventions); optional sections record what was
built (``backend``), how it was checked (``parity``), what travels with it (``files``, sha256 of
every file of a bundle) and the tolerances ``verify`` applies on the device. The same schema is
used for a plan's sidecar (``<plan>.json``) and a bundle's ``manifest.json``; ONNX files carry
the request part as ``metadata_props``. A bundle's manifest also records the graph's inputs and
outputs (``graph_io``: name, numpy dtype, dims), so the device reads them without onnx, and names
its checkpoint by file name and sha256 only (``weights``), never by a build-machine path.

Readers get the dict (:func:`read_manifest`) or, for the fields they consume, a typed read-only
view (:class:`Manifest`, :func:`read_typed`).

Standard library only: the Jetson runtime reads manifests without numpy-heavy or torch imports.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Mapping

from .errors import DeployKitError, UsageError
from .fsutil import write_text
from .specs import Tolerance

SCHEMA = "deploy-kit/manifest"
VERSION = 1

# key -> (accepted types, required)
_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "schema": ((str,), True),
    "schema_version": ((int,), True),
    "deploy_kit_version": ((str,), True),
    "model": ((str,), True),
    "variant": ((str,), True),
    "input_shape": ((list,), True),
    # the static batch N of input_shape, stated on its own for readers that tile N images per
    # pass; optional, so manifests written before it existed read as batch 1 (input_batch)
    "batch": ((int,), False),
    "precision": ((str,), True),
    "input_names": ((list,), True),
    "output_names": ((list,), True),
    "output_kind": ((str,), True),
    "input": ((dict,), True),
    "hparams": ((dict,), False),
    "tlc": ((dict, type(None)), False),
    "options": ((dict,), False),
    "weights": ((str, type(None)), False),
    "weights_sha256": ((str, type(None)), False),
    "seed": ((int,), False),
    "degradation": ((str,), False),
    "tolerance": ((dict,), False),
    "onnx": ((str,), False),
    "plan": ((str,), False),
    "backend": ((dict,), False),
    "build_seconds": ((int, float), False),
    "parity": ((dict,), False),
    "files": ((dict,), False),
    "references": ((dict, type(None)), False),
    "int8": ((dict, type(None)), False),
    "global_context": ((bool,), False),
    # {"inputs": [{"name", "dtype", "dims"}], "outputs": [...]}: the graph's I/O, written by bundle
    # (numpy dtype names; a dim is an int, or a str naming a dynamic one); absent before it existed
    "graph_io": ((dict,), False),
    # output size / input size of an image model (super-resolution: 2, 3, 4, ...); optional, so
    # manifests written before it existed read as 1 (output_scale)
    "scale": ((int,), False),
    # a global-context model's sync graph (synchronised statistics: deploy_kit/models/sync.py)
    "context": ((dict, type(None)), False),
    "source": ((dict, type(None)), False),
}
PRECISIONS = ("fp32", "fp16", "int8")
OUTPUT_KINDS = ("image", "logits", "features")


class ManifestError(DeployKitError):
    """A manifest that is missing, unreadable, of a newer schema, or does not match its files."""


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output, as a bundle manifest's ``graph_io`` records it.

    Attributes:
        name: tensor name.
        dtype: numpy name of the element type (``float32``, ``float16``, ...).
        dims: each dimension: an int, or the symbolic name (str) of a dynamic one.
    """

    name: str
    dtype: str
    dims: tuple[int | str, ...]


@dataclass(frozen=True)
class Manifest:
    """A typed, read-only view of what consumers read from a manifest (:meth:`from_dict`).

    The JSON on disk stays a plain object; this view only reads it. Fields a consumer does not
    find here are in the dict it was made from (:func:`read_manifest`).

    Attributes:
        model, variant, precision, output_kind: as recorded.
        input_shape: (N, C, H, W) of the graph's input.
        batch: N, images per forward pass (manifests written before ``batch`` existed have N = 1).
        input_names, output_names: the graph's tensor names, in order.
        channels, pad_multiple, input_dtype: the input conventions (``input`` section; a missing
            ``pad_multiple`` reads as 1, a missing dtype as float32).
        global_context: the graph pools over its whole input (tiles cannot match it exactly).
        scale: the output is ``scale`` times the input in height and width (super-resolution);
            1 for restoration, and in manifests written before ``scale`` existed.
        sync_onnx, sync_stats: a global-context model's sync graph in the bundle and its statistics
            length (``run --context sync``); None / 0 when there is none.
        sync_pad: how the model pads a whole image itself (``zero``, ``reflect`` or ``none``) and to
            which multiple: sync tiling pads the image the same way first.
        tolerance: the parity gates ``verify`` applies (defaults where none are recorded).
        tlc: TLC parameters, or None for a global-context export.
        onnx: the graph's file name, where recorded (bundles and plan sidecars).
        backend, backend_version: the engine backend of a plan sidecar and the version that built it
            (a plan loads only under that version); None for a graph.
        compute_capabilities: the GPUs a plan was built for (``sm86``, ``sm120``, ...; the backend
            section's ``compute_capabilities``); None where a plan does not record them.
        dla_core: the Jetson DLA core a plan was built for (the backend section's ``dla_core``);
            None for a GPU plan.
        graph_inputs, graph_outputs: the graph's I/O (``graph_io``); None in manifests written
            before bundles recorded it.
    """

    model: str
    variant: str
    input_shape: tuple[int, int, int, int]
    batch: int
    precision: str
    input_names: tuple[str, ...]
    output_names: tuple[str, ...]
    output_kind: str
    channels: int
    pad_multiple: int
    input_dtype: str
    global_context: bool
    tolerance: Tolerance
    tlc: Mapping[str, Any] | None = None
    onnx: str | None = None
    backend: str | None = None
    backend_version: str | None = None
    compute_capabilities: tuple[str, ...] | None = None
    dla_core: int | None = None
    graph_inputs: tuple[TensorInfo, ...] | None = None
    graph_outputs: tuple[TensorInfo, ...] | None = None
    scale: int = 1
    sync_onnx: str | None = None
    sync_stats: int = 0
    sync_pad: tuple[str, int] = ("none", 1)

    @classmethod
    def for_runner(cls, input_shape: tuple[int, int, int, int], pad_multiple: int = 1, **fields_: Any) -> "Manifest":
        """The manifest of an image model opened outside a bundle (a runner built in code: tests, simulations).

        Args:
            input_shape: (N, C, H, W) of the runner's input.
            pad_multiple: the model's size multiple.
            fields_: any other field (e.g. ``global_context=True``, ``scale=2``).

        Raises:
            ManifestError: a ``scale`` that is not a positive integer.
        """
        n, c = int(input_shape[0]), int(input_shape[1])
        base = dict(model="runner", variant="-", input_shape=tuple(int(v) for v in input_shape), batch=n,
                    precision="fp32", input_names=("input",), output_names=("output",), output_kind="image",
                    channels=c, pad_multiple=pad_multiple, input_dtype="float32", global_context=False,
                    tolerance=Tolerance())
        if "scale" in fields_:
            output_scale(fields_, "<runner manifest>")
        return cls(**{**base, **fields_})

    @classmethod
    def from_dict(cls, data: Any, where: str = "<manifest>") -> "Manifest":
        """Validate a decoded manifest (:func:`validate`) and read its consumed fields, typed.

        Args:
            data: the decoded JSON object (a manifest, or a plan sidecar).
            where: the file it came from, for the messages.

        Returns:
            The view; the dict itself is not kept or changed.

        Raises:
            ManifestError: an invalid manifest, or a consumed field of the wrong type (one line).
        """
        m = validate(data, where)
        conv = m["input"]
        channels = conv.get("channels", m["input_shape"][1])
        pad_multiple = conv.get("pad_multiple", 1)
        dtype = conv.get("dtype", "float32")
        for key, value, ok in (("channels", channels, _positive_int(channels)),
                               ("pad_multiple", pad_multiple, _positive_int(pad_multiple)),
                               ("dtype", dtype, isinstance(dtype, str))):
            if not ok:
                raise ManifestError(f"{where}: input {key} {str(value)[:30]!r} is invalid; re-export it")
        tol = m.get("tolerance") or {}
        known = {f.name for f in fields(Tolerance)}
        bad = [k for k, v in tol.items() if k not in known or not (v is None or isinstance(v, (int, float)))]
        if bad:
            raise ManifestError(f"{where}: tolerance '{str(bad[0])[:40]}' is unknown or not a number; re-export it")
        backend = m.get("backend") or {}
        version = backend.get("version")
        dla = backend.get("dla_core")
        if dla is not None and not (isinstance(dla, int) and not isinstance(dla, bool) and dla >= 0):
            raise ManifestError(f"{where}: backend dla_core {str(dla)[:20]!r} is not a core number; rebuild the plan")
        io = _graph_io(m["graph_io"], where) if "graph_io" in m else (None, None)
        return cls(
            model=m["model"], variant=m["variant"], input_shape=tuple(m["input_shape"]), batch=input_batch(m),
            precision=m["precision"], input_names=tuple(m["input_names"]), output_names=tuple(m["output_names"]),
            output_kind=m["output_kind"], channels=channels, pad_multiple=pad_multiple, input_dtype=dtype,
            global_context=bool(m.get("global_context", False)), tolerance=Tolerance(**tol),
            tlc=MappingProxyType(dict(m["tlc"])) if m.get("tlc") else None,
            onnx=m.get("onnx"), backend=backend.get("name"), backend_version=None if version is None else str(version),
            compute_capabilities=_compute_capabilities(backend.get("compute_capabilities"), where), dla_core=dla,
            graph_inputs=io[0], graph_outputs=io[1], scale=output_scale(m, where),
            **_sync_fields(m.get("context"), where),
        )


def _compute_capabilities(value: Any, where: str) -> tuple[str, ...] | None:
    """A plan's recorded GPU targets as ``("sm86", "sm89", ...)``; None when none are recorded.

    Plans written before targets were recorded list ``"default (sm86, sm89, sm120 portable)"``
    for TensorRT-RTX's default: the ``smNN`` names in each entry are what it targets.
    """
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ManifestError(f"{where}: backend compute_capabilities must be a list of names like 'sm86'; rebuild the plan")
    found = tuple(dict.fromkeys(t.lower() for v in value for t in re.findall(r"\b(sm\d+)\b", v, re.IGNORECASE)))
    return found or None


def _sync_fields(context: Any, where: str) -> dict[str, Any]:
    """``sync_onnx``/``sync_stats`` from a manifest's ``context`` section (absent: no sync graph)."""
    sync = (context or {}).get("sync") if isinstance(context, dict) else None
    if not sync:
        return {}
    onnx, stats = sync.get("onnx") if isinstance(sync, dict) else None, sync.get("stats") if isinstance(sync, dict) else None
    if not isinstance(onnx, str) or not _positive_int(stats):
        raise ManifestError(f"{where}: context.sync must name its graph and a positive statistics length; re-bundle it")
    pad, multiple = sync.get("pad", "none"), sync.get("multiple", 1)
    if pad not in ("none", "zero", "reflect") or not _positive_int(multiple):
        raise ManifestError(f"{where}: context.sync pad {str(pad)[:20]!r} / multiple {str(multiple)[:20]!r} is invalid; re-bundle it")
    return {"sync_onnx": onnx, "sync_stats": stats, "sync_pad": (pad, multiple)}


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def input_conventions(channels: int, pad_multiple: int, normalisation: str = "none") -> dict[str, Any]:
    """How the graph's input is made from an image (and its output turned back into one).

    Args:
        channels: 1 (gray), 3 (RGB) or 6 (dual-pixel pairs).
        pad_multiple: the model's size multiple; padding to it happens inside the graph.
        normalisation: what the graph does to the [0, 1] input itself (e.g. ImageNet mean/std
            for PVT), or ``none``.
    """
    return {
        "layout": "NCHW",
        "channels": channels,
        "color": {1: "gray", 3: "RGB", 6: "dual-pixel (2 x RGB)"}.get(channels, f"{channels} channels"),
        "dtype": "float32",
        "range": [0.0, 1.0],
        "normalisation": normalisation,
        "pad_multiple": pad_multiple,
        "padding": f"inside the graph: bottom/right to a multiple of {pad_multiple}, output cropped back"
        if pad_multiple > 1 else "none",
    }


def make_manifest(meta: Mapping[str, Any], **sections: Any) -> dict[str, Any]:
    """A validated manifest from the request metadata plus any optional sections.

    Args:
        meta: the request part (what ``export`` writes into the ONNX ``metadata_props``).
        sections: further keys (``backend``, ``parity``, ``files``, …); None values are dropped.

    Raises:
        ManifestError: a required key is missing or of the wrong type (a deploy-kit bug when
            written by deploy-kit itself).
    """
    out = {"schema": SCHEMA, "schema_version": VERSION}
    out.update({k: v for k, v in meta.items() if k not in ("schema", "schema_version")})
    out.update({k: v for k, v in sections.items() if v is not None})
    validate(out, "<new manifest>")
    return out


def validate(data: Any, where: str) -> dict[str, Any]:
    """Check a decoded manifest; returns it.

    Raises:
        ManifestError: one line naming the first problem and what to do.
    """
    if not isinstance(data, dict):
        raise ManifestError(f"{where} is not a deploy-kit manifest (a JSON object was expected)")
    if data.get("schema") != SCHEMA:
        raise ManifestError(f"{where} is not a deploy-kit manifest (schema {str(data.get('schema'))[:40]!r}, expected {SCHEMA!r})")
    version = data.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ManifestError(f"{where} has no valid schema_version (a positive integer); re-export it")
    if version > VERSION:
        raise ManifestError(f"{where} uses manifest schema {version}, newer than this deploy-kit reads ({VERSION}); "
                            "upgrade deploy-kit on this machine")
    for key, (types, required) in _FIELDS.items():
        if key not in data:
            if required:
                raise ManifestError(f"{where} lacks '{key}'; re-export it with this deploy-kit")
            continue
        value = data[key]
        if not isinstance(value, types) or isinstance(value, bool) and bool not in types:
            raise ManifestError(f"{where}: '{key}' has the wrong type ({type(value).__name__}); re-export it")
    shape = data["input_shape"]
    if len(shape) != 4 or not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d < 1 << 20 for d in shape):
        raise ManifestError(f"{where}: input_shape must be four positive integers (N, C, H, W); got {str(shape)[:60]}")
    if "batch" in data and data["batch"] != shape[0]:
        raise ManifestError(f"{where}: batch {str(data['batch'])[:20]} differs from input_shape {shape}; re-export it")
    if data["precision"] not in PRECISIONS:
        raise ManifestError(f"{where}: unknown precision {str(data['precision'])[:20]!r}")
    if data["output_kind"] not in OUTPUT_KINDS:
        raise ManifestError(f"{where}: unknown output_kind {str(data['output_kind'])[:20]!r}")
    for key in ("input_names", "output_names"):
        if not data[key] or not all(isinstance(n, str) for n in data[key]):
            raise ManifestError(f"{where}: '{key}' must be a non-empty list of names")
    files = data.get("files", {})
    for name, digest in files.items():
        if not isinstance(digest, str) or len(digest) != 64 or os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
            raise ManifestError(f"{where}: bad files entry {str(name)[:60]!r}")
    backend = data.get("backend")
    if backend is not None and not isinstance(backend.get("name"), str):
        raise ManifestError(f"{where}: backend has no name")
    if "graph_io" in data:
        _graph_io(data["graph_io"], where)
    output_scale(data, where)
    return data


def _graph_io(section: dict, where: str) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """The ``graph_io`` section as TensorInfo tuples (inputs, outputs); ManifestError when malformed."""
    out = []
    for key in ("inputs", "outputs"):
        tensors = section.get(key)
        if not isinstance(tensors, list) or not tensors:
            raise ManifestError(f"{where}: graph_io has no '{key}' list; re-bundle it")
        infos = []
        for t in tensors:
            ok = (isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("dtype"), str)
                  and isinstance(t.get("dims"), list)
                  and all(isinstance(d, str) or isinstance(d, int) and not isinstance(d, bool) for d in t["dims"]))
            if not ok:
                raise ManifestError(f"{where}: bad graph_io {key} entry {str(t)[:60]}; re-bundle it")
            infos.append(TensorInfo(t["name"], t["dtype"], tuple(t["dims"])))
        out.append(tuple(infos))
    return out[0], out[1]


def input_batch(manifest: Mapping[str, Any]) -> int:
    """The static batch N of a manifest's graph: images per forward pass.

    Args:
        manifest: a validated manifest (or ONNX metadata) dict.

    Returns:
        ``batch`` where recorded; else the first dimension of ``input_shape`` (1 in every
        manifest written before ``batch`` existed); else 1.
    """
    if "batch" in manifest:
        return int(manifest["batch"])
    shape = manifest.get("input_shape")
    return int(shape[0]) if isinstance(shape, list) and shape else 1


def output_scale(manifest: Mapping[str, Any], where: str = "<manifest>") -> int:
    """The output scale of a manifest's graph: output height/width over input height/width.

    Args:
        manifest: a manifest or ONNX metadata dict (``scale`` may be absent).
        where: the file it came from, for the message.

    Returns:
        ``scale`` where recorded, else 1 (restoration: output size = input size).

    Raises:
        ManifestError: a recorded ``scale`` that is not a positive integer (one line).
    """
    value = manifest.get("scale", 1)
    if not _positive_int(value):
        raise ManifestError(f"{where}: scale {str(value)[:30]!r} is not a positive integer (output size / input size); "
                            "re-export it")
    return value


def read_manifest(path: str) -> dict[str, Any]:
    """Read and validate a manifest file (a plan sidecar or a bundle's ``manifest.json``).

    Raises:
        ManifestError: missing, unreadable, not JSON, newer schema or invalid content (one line).
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read((16 << 20) + 1)
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None
    if len(raw) > 16 << 20:
        raise ManifestError(f"{path} is larger than 16 MiB; it is not a deploy-kit manifest")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ManifestError(f"{path} is not valid JSON; it is not a deploy-kit manifest or it was damaged") from None
    return validate(data, path)


def read_typed(path: str) -> Manifest:
    """Read a manifest file as the typed view (:meth:`Manifest.from_dict`).

    Raises:
        ManifestError: as :func:`read_manifest`, or a consumed field of the wrong type (one line).
    """
    return Manifest.from_dict(read_manifest(path), path)


def write_manifest(path: str, manifest: Mapping[str, Any]) -> None:
    """Write ``manifest`` as JSON atomically (inf/nan as strings)."""
    validate(dict(manifest), path)
    write_text(path, json.dumps(_json_safe(manifest), indent=2) + "\n")


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_files(manifest: Mapping[str, Any], directory: str, where: str) -> None:
    """Every file the manifest lists exists in ``directory`` with its recorded sha256.

    Raises:
        ManifestError: a missing or changed file (names the first one).
    """
    for name, digest in manifest.get("files", {}).items():
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise ManifestError(f"{where}: {name} is missing; copy the whole bundle folder again")
        if file_sha256(path) != digest:
            raise ManifestError(f"{where}: {name} does not match its sha256 in manifest.json (changed or damaged); "
                                "copy the bundle again")


def parity_summary(report) -> dict[str, Any]:
    """The ``parity`` section: what was checked where, and how close it came (a ParityReport in)."""
    return {
        "passed": report.passed(),
        "reference": report.reference,
        "checks": [
            {
                "backend": c.backend,
                "precision": c.precision,
                "status": c.status,
                "reason": c.reason,
                "min_psnr": min((m.psnr for m in c.outputs if m.psnr is not None), default=None),
                "min_cosine": min((m.cosine for m in c.outputs if m.cosine is not None), default=None),
                "max_abs": max((m.max_abs for m in c.outputs), default=None),
            }
            for c in report.checks
        ],
    }


def plan_manifest(meta: Mapping[str, Any], precision: str, onnx_path: str, plan: str, backend, built,
                  report=None) -> dict[str, Any]:
    """The sidecar manifest of a plan (``<plan>.json``): the request plus what was built and checked.

    Args:
        meta: the graph's manifest or ONNX metadata; backend: the EngineBackend; built: its BuildResult.
    """
    own = ("files", "references", "parity", "backend", "plan", "build_seconds")  # what this plan records anew
    return make_manifest(
        {**{k: v for k, v in meta.items() if k not in own}, "precision": precision},
        onnx=os.path.basename(onnx_path),
        plan=os.path.basename(plan),
        backend={"name": backend.name, "version": built.version, **built.details},
        build_seconds=round(built.seconds, 2),
        parity=parity_summary(report) if report is not None else None,
    )


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "inf" if obj > 0 else ("-inf" if obj < 0 else "nan")
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- what a command was given
BUNDLE_MANIFEST = "manifest.json"  # a bundle is a folder holding this file


def is_bundle(path: str) -> bool:
    """A bundle directory, or its manifest.json."""
    return (os.path.isdir(path) and os.path.isfile(os.path.join(path, BUNDLE_MANIFEST))) or (
        os.path.basename(path) == BUNDLE_MANIFEST and os.path.isfile(path))


def target_kind(path: str) -> str | None:
    """What a command was given: ``"bundle"``, ``"plan"`` or ``"onnx"`` (by name), else None. The one place
    ``build``, ``verify``, ``run``, ``bench`` and ``triton`` tell them apart."""
    if is_bundle(path):
        return "bundle"
    for kind in ("plan", "onnx"):
        if path.endswith("." + kind):
            return kind
    return None


def plan_sidecar(plan: str, command: str) -> str:
    """The path of a plan's manifest (``PLAN.json``).

    Raises:
        UsageError: it is missing (one line naming ``command``, which needs it).
    """
    side = plan + ".json"
    if not os.path.isfile(side):
        raise UsageError(f"{plan} has no manifest {side}; {command} needs the sidecar deploy-kit wrote")
    return side
