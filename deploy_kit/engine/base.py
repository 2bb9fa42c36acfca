"""``deploy-kit build``: an engine from a bundle (on the device) or a deploy-kit ONNX, with its manifest.

The builders themselves are the engine backends of the registry (:mod:`deploy_kit.backends`).
"""

from __future__ import annotations

import os
from typing import Any

from ..backends import BuildOptions, get
from ..backends._trt import BuildResult
from ..bundle import open_bundle
from ..errors import UsageError
from ..manifest import ManifestError, plan_manifest, target_kind, write_manifest
from ..onnxmeta import read_metadata


def build_engine(target: str, backend: str, *, out_path: str | None = None, progress=None,
                 options: BuildOptions | None = None) -> BuildResult:
    """``deploy-kit build``: an engine from a bundle (on the device) or a deploy-kit ONNX, plus its manifest.

    The same :meth:`EngineBackend.build` the export pipeline uses; torch-free (a bundle's manifest
    carries the metadata; an ONNX's is read with the onnx package when it is installed).

    Args:
        target: a bundle folder (or its manifest.json) or an ``.onnx``.
        backend: ``tensorrt`` or ``tensorrt-rtx``.
        out_path: plan path (default: inside the bundle, or next to the ONNX).
        options: the backend's build options (``get(backend).build_options(...)``: DLA core, compute
            capabilities, timing cache); None: its defaults.

    Raises:
        ManifestError: a tampered bundle; UsageError/EngineBuildError as the build raises them (another
            backend's options among them, before any work).
    """
    eng = get(backend)
    options = eng.check_build_options(options)
    kind = target_kind(target)
    if kind == "bundle":
        b = open_bundle(target)
        onnx_path, meta = b.onnx, b.manifest
        base = b.onnx[: -len(".onnx")]
    else:
        if kind != "onnx" or not os.path.isfile(target):
            raise UsageError(f"{target}: build takes a bundle folder or an .onnx file")
        onnx_path, base = target, target[: -len(".onnx")]
        meta = _onnx_metadata(target)
    plan = out_path or f"{base}.{eng.major()}.plan"
    if progress:
        progress(f"building {plan} with {eng.name} {eng.version()} ...")
    res = eng.build(onnx_path, plan, options)
    try:
        write_manifest(plan + ".json", plan_manifest(meta, meta.get("precision", "fp32"), onnx_path, plan, eng, res))
    except ManifestError as exc:
        if progress:
            progress(f"note: no manifest written ({exc}); 'verify'/'run' need one, so build from a deploy-kit export")
    return res


def _onnx_metadata(path: str) -> dict[str, Any]:
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        return {}  # the device core install has no onnx package: build without a manifest

    return read_metadata(path)  # a damaged file is its one-line UsageError
