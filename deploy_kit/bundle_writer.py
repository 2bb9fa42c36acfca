"""Writing a device bundle (:mod:`deploy_kit.bundle` reads one): the build machine's side.

``export --bundle`` (the pipeline) and ``deploy-kit bundle ARTIFACT`` write here: the precision graph,
its manifest (the graph's metadata and I/O, read with onnx), the reference inputs with their PyTorch
FP32 outputs, ``build.sh`` and a README, atomically.
"""

from __future__ import annotations

import os
import shlex
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .artifact import rebuild_reference
from .bundle import MANIFEST, REFERENCE
from .compare import batch_members, stack_batches, stack_outputs
from .errors import UsageError
from .fsutil import disk_size, human_size, replace_dir
from .manifest import Manifest, file_sha256, input_batch, is_bundle, make_manifest, parity_summary, write_manifest
from .onnxmeta import graph_io, read_metadata
from .precision.legacy_cache import legacy_cache_path
from .reference import batch_labels


@dataclass
class BundleInfo:
    path: str
    size: int
    files: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.path} ({len(self.files)} files, {human_size(self.size)})"


def write_bundle(onnx_path: str, inputs: Sequence[np.ndarray], refs: Sequence[Sequence[np.ndarray]], out: str,
                 *, report=None) -> BundleInfo:
    """Write ``out`` (a directory) atomically: everything is written beside it first, then renamed.

    Args:
        onnx_path: the precision ONNX written by deploy-kit (its metadata becomes the manifest).
        inputs: reference inputs, float32 of the graph's full input shape (N, C, H, W): ``verify``
            runs each through the graph as it is.
        refs: the PyTorch FP32 outputs per input (``output_names`` order), batch axis first.
        out: bundle directory to (re)create.
        report: the ParityReport of the export, recorded in the manifest when given.

    Raises:
        UsageError: the ONNX has no deploy-kit metadata, or an input is not of its input shape.
    """
    meta, quant = _bundle_metadata(onnx_path)
    onnx_name = os.path.basename(onnx_path)
    typed = Manifest.from_dict(make_manifest(meta, onnx=onnx_name), onnx_path)
    for x in inputs:
        if tuple(np.shape(x)) != typed.input_shape:
            raise UsageError(f"reference input of shape {list(np.shape(x))} does not fit {onnx_name}, "
                             f"whose input is {list(typed.input_shape)}; stack single samples into the graph's batch")
    parent = os.path.dirname(os.path.abspath(out)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".part", dir=parent)
    try:
        shutil.copyfile(onnx_path, os.path.join(tmp, onnx_name))
        _write_references(tmp, inputs, refs, typed.output_names)
        int8 = _copy_int8_sources(tmp, onnx_path, quant) if typed.precision == "int8" else None
        context = _copy_sync_graph(tmp, onnx_path)
        with open(os.path.join(tmp, "build.sh"), "w", encoding="utf-8") as fh:
            fh.write(build_script(onnx_name, int8))
        os.chmod(os.path.join(tmp, "build.sh"), 0o755)
        with open(os.path.join(tmp, "README.md"), "w", encoding="utf-8") as fh:
            fh.write(_readme(typed, meta, len(inputs)))
        files = _file_digests(tmp)
        manifest = make_manifest(
            meta,
            onnx=onnx_name,
            files=files,
            references={"file": REFERENCE, "count": len(inputs), "reference": report.reference if report else None,
                        "inputs": list(report.inputs) if report else None},
            parity=parity_summary(report) if report is not None else None,
            int8=int8,
            context=context,
        )
        write_manifest(os.path.join(tmp, MANIFEST), manifest)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

    return BundleInfo(out, disk_size(out), files)


def _bundle_metadata(onnx_path: str) -> tuple[dict, dict | None]:
    """(the manifest fields from the graph's metadata and I/O, how its Q/DQ graph was calibrated or None).

    Raises:
        UsageError: the ONNX has no deploy-kit metadata.
    """
    meta = read_metadata(onnx_path)
    quant = meta.pop("deploy_kit.int8", None)  # how the Q/DQ graph was calibrated (precision/int8.py)
    meta = _graph_manifest(meta, onnx_path)
    meta["graph_io"] = graph_io(onnx_path)  # the device reads the graph's I/O here, without onnx
    if meta.get("weights"):
        # the ONNX keeps the build machine's path (bundle/verify re-load the weights from it there);
        # what travels names the checkpoint only, with its sha256
        meta["weights"] = os.path.basename(meta["weights"])
    ref = meta["source"].get("ref") if isinstance(meta.get("source"), dict) else None
    if isinstance(ref, str) and (ref.endswith(".onnx") or ".py:" in ref):  # likewise a user's ONNX or Python file
        where, sep, attr = ref.rpartition(".py:")
        meta["source"] = {**meta["source"], "ref": os.path.basename(where) + sep + attr if sep else os.path.basename(ref)}
    return meta, quant


def _write_references(tmp: str, inputs: Sequence[np.ndarray], refs: Sequence[Sequence[np.ndarray]],
                      output_names: Sequence[str]) -> None:
    """``reference.npz``: ``input_<i>`` and its PyTorch outputs ``output_<i>_<name>``, float32."""
    arrays = {f"input_{i}": np.asarray(x, np.float32) for i, x in enumerate(inputs)}
    for i, outs in enumerate(refs):
        for name, o in zip(output_names, outs):
            arrays[f"output_{i}_{name}"] = np.asarray(o, np.float32)
    np.savez_compressed(os.path.join(tmp, REFERENCE), **arrays)


def _copy_int8_sources(tmp: str, onnx_path: str, quant: dict | None) -> dict | None:
    """The FP32 graph and legacy calibration cache beside an INT8 graph, copied into ``int8/`` (TensorRT
    <= 10's implicit INT8, build.sh's legacy-int8); the manifest's ``int8`` section, or None without them."""
    fp32 = onnx_path[: -len(".int8.onnx")] + ".fp32.onnx" if onnx_path.endswith(".int8.onnx") else None
    cache = legacy_cache_path(fp32) if fp32 else None
    if not (fp32 and os.path.isfile(fp32) and cache and os.path.isfile(cache)):
        return None
    os.makedirs(os.path.join(tmp, "int8"))
    shutil.copyfile(fp32, os.path.join(tmp, "int8", os.path.basename(fp32)))
    shutil.copyfile(cache, os.path.join(tmp, "int8", os.path.basename(cache)))
    return {"fp32_onnx": f"int8/{os.path.basename(fp32)}", "calibration_cache": f"int8/{os.path.basename(cache)}",
            "quantization": quant}


def _copy_sync_graph(tmp: str, onnx_path: str) -> dict | None:
    """A global-context model's sync graph beside the graph (pipeline.stage_sync), copied; the manifest's
    ``context`` section, or None when there is none."""
    sync_path = onnx_path[: -len(".onnx")] + ".sync.onnx"
    if not os.path.isfile(sync_path):
        return None
    shutil.copyfile(sync_path, os.path.join(tmp, os.path.basename(sync_path)))
    sync = read_metadata(sync_path).get("sync") or {}
    return {"sync": {"onnx": os.path.basename(sync_path), **{k: sync.get(k) for k in ("stats", "sites", "pad", "multiple")}}}


def _file_digests(tmp: str) -> dict[str, str]:
    """sha256 of every file under ``tmp``, by its ``/``-separated path there."""
    files = {}
    for root, _, names in os.walk(tmp):
        for name in sorted(names):
            full = os.path.join(root, name)
            files[os.path.relpath(full, tmp).replace(os.sep, "/")] = file_sha256(full)
    return files


def bundle_artifact(artifact: str, out: str | None = None, samples: int = 2) -> BundleInfo:
    """``deploy-kit bundle ARTIFACT``: a bundle from an existing deploy-kit ONNX (build machine).

    The reference outputs are recomputed with the PyTorch model rebuilt from the artifact's
    metadata (the weights file it was exported from must still be there), as ``verify`` does.
    """
    if not artifact.endswith(".onnx"):
        raise UsageError(f"{artifact}: bundle takes the .onnx deploy-kit wrote (FP16/INT8/FP32), not a plan")
    report, inputs, refs, meta = rebuild_reference(artifact, samples)
    batch = input_batch(meta)
    if batch > 1:
        # the rebuilt references are single sample images: stacked N at a time, as export stacks them
        members = batch_members(len(inputs), batch)
        inputs, refs = stack_batches(inputs, members), stack_outputs(refs, members)
        report.samples, report.inputs = list(report.inputs), batch_labels(members, list(report.inputs))
        report.input_shape = list(inputs[0].shape)
    base = artifact[: -len(".onnx")]
    return write_bundle(artifact, inputs, refs, out or base + ".bundle", report=report)


def build_script(onnx_name: str, int8: dict | None) -> str:
    """``build.sh``: the trtexec lines for TensorRT 10 (JetPack 6/7) and 11, with and without DLA.

    Args:
        onnx_name: the graph's file name in the bundle.
        int8: the manifest's ``int8`` section (the FP32 graph and calibration cache), or None.

    Returns:
        The script's text.
    """
    stem = onnx_name[: -len(".onnx")]
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        "# Build the engine ON THE TARGET (TensorRT engines are not portable between GPUs or versions).",
        "# Preferred: deploy-kit build . --backend tensorrt   (same builder as export; writes the manifest,",
        "#            then: deploy-kit verify . --backend tensorrt)",
        "# Or with trtexec (JetPack: /usr/src/tensorrt/bin/trtexec). Usage: sh build.sh [gpu|dla|legacy-int8]",
        "set -e",
        'cd "$(dirname "$0")"',
        'TRTEXEC="${TRTEXEC:-trtexec}"',
        'MODE="${1:-gpu}"',
        "",
        "# Precision is in the graph (FP16 casts / INT8 Q/DQ): strongly typed on TensorRT 10 and 11 alike.",
        'if [ "$MODE" = gpu ]; then',
        f'  "$TRTEXEC" --onnx={q(onnx_name)} --stronglyTyped --saveEngine={q(stem + ".trt.plan")}',
        "fi",
        "# Jetson DLA (Orin/Xavier): layers DLA cannot run fall back to the GPU; trtexec --verbose lists them.",
        'if [ "$MODE" = dla ]; then',
        f'  "$TRTEXEC" --onnx={q(onnx_name)} --stronglyTyped --useDLACore=0 --allowGPUFallback --saveEngine={q(stem + ".dla0.plan")}',
        "fi",
    ]
    if int8:
        lines += [
            "# TensorRT <= 10 only (JetPack 6): implicit INT8 on the FP32 graph with the calibration cache.",
            "# TensorRT 11 removed implicit INT8 and calibrators; use the Q/DQ graph above there.",
            'if [ "$MODE" = legacy-int8 ]; then',
            f'  "$TRTEXEC" --onnx={q(int8["fp32_onnx"])} --int8 --fp16 --calib={q(int8["calibration_cache"])} '
            f'--saveEngine={q(stem + ".int8-implicit.trt10.plan")}',
            "fi",
        ]
    return "\n".join(lines) + "\n"


def _graph_manifest(meta: dict, onnx_path: str) -> dict:
    """The manifest fields of a deploy-kit ONNX's metadata (older exports lack the I/O section)."""
    needed = ("model", "input_shape", "input_names", "output_names", "output_kind", "input")
    missing = [k for k in needed if k not in meta]
    if missing:
        raise UsageError(f"{onnx_path} has no deploy-kit {'metadata' if 'model' in missing else 'I/O metadata'} "
                         f"({', '.join(missing)}); re-export it with this deploy-kit")
    meta = {k: v for k, v in meta.items() if "." not in k}
    meta.setdefault("precision", "fp32")
    return meta


def _readme(m: Manifest, meta: dict, count: int) -> str:
    shape = "x".join(str(d) for d in m.input_shape)
    tlc = "TLC on" if m.tlc else "no TLC"
    per_pass = f" ({m.batch} tiles per pass)" if m.batch > 1 else ""
    refs = f"{count} reference inputs" if m.batch == 1 else f"{count} reference batches of {m.batch}"
    conv = meta["input"]
    return f"""# {m.model} {m.variant} — {m.precision.upper()} bundle ({shape}, {tlc})

Made by deploy-kit {meta.get('deploy_kit_version', '?')}. Everything here is checked against
`manifest.json` (sha256 of every file) before it is used.

On the device (Jetson with JetPack, or a GPU server), with only the core installed
(`pip install deploy-kit`, plus JetPack's TensorRT or `deploy-kit[ort]`):

```bash
deploy-kit build .  --backend tensorrt          # the engine, built here on the target
deploy-kit verify . --backend auto              # {refs} vs their PyTorch FP32 outputs
deploy-kit run .    photo.png folder/ --out restored/
```

`build.sh` has the equivalent `trtexec` lines (TensorRT 10 and 11, GPU or DLA).
Input: {conv.get('color', f'{m.channels} channels')} in [0, 1], {conv.get('normalisation', 'none')}; padding: {conv.get('padding', 'none')}.
Images of any size are tiled through the fixed {m.input_shape[2]}x{m.input_shape[3]} engine{per_pass} by `deploy-kit run`.
Graph: `{m.onnx}`.
"""


def _replace_dir(tmp: str, out: str) -> None:
    """Move the finished ``tmp`` onto ``out`` (:func:`deploy_kit.fsutil.replace_dir`); only a bundle is replaced."""
    if os.path.lexists(out) and (not os.path.isdir(out) or not is_bundle(out)):
        shutil.rmtree(tmp, ignore_errors=True)
        raise UsageError(f"{out} exists and is not a deploy-kit bundle; remove it or choose another --out")
    replace_dir(tmp, out)
