"""The one artifact manifest: written by export, build and bundle; read by verify, bundle, run.

A manifest is a JSON object. Its required keys say what the graph is (model, variant, input
shape, precision) and how to feed it (input conventions); optional sections record what was
built (``backend``), how it was checked (``parity``), what travels with it (``files``, sha256 of
every file of a bundle) and the tolerances ``verify`` applies on the device. The same schema is
used for a plan's sidecar (``<plan>.json``) and a bundle's ``manifest.json``; ONNX files carry
the request part as ``metadata_props``.

Standard library only: the Jetson runtime reads manifests without numpy-heavy or torch imports.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from typing import Any, Mapping

from .errors import DeployKitError

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
}
PRECISIONS = ("fp32", "fp16", "int8")
OUTPUT_KINDS = ("image", "logits", "features")


class ManifestError(DeployKitError):
    """A manifest that is missing, unreadable, of a newer schema, or does not match its files."""


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
    return data


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


def write_manifest(path: str, manifest: Mapping[str, Any]) -> None:
    """Write ``manifest`` as JSON atomically (inf/nan as strings)."""
    from .fsutil import write_text

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
