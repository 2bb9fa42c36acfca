"""``deploy-kit triton``: a Triton Inference Server model repository from a bundle (or a plan built in one).

Three models, every value taken from the manifest and the graph, never typed twice::

    <repo>/<name>/          platform tensorrt_plan: 1/model.plan, the engine's I/O (fixed size)
    <repo>/<name>_onnx/     platform onnxruntime_onnx: 1/model.onnx, the same graph for CPU nodes
    <repo>/<name>_tiled/    backend python: images of any size, tiled and blended by the runtime's
                            own tile_run (deploy_kit.serving.triton_model), each tile either
                            - sent to <name> or <name>_onnx inside the server (BLS), or
                            - run by deploy-kit's ONNX Runtime runner in the python backend process;
                            a global-context model's sync graph, when the bundle has one, is copied
                            beside it: ``context: sync:N`` tiles through it on ONNX Runtime, every
                            tile seeing the whole image's statistics (deploy_kit.runtime.context).

The fixed-size configs have ``max_batch_size: 0`` and the graph's full dims: deploy-kit exports and
builds static shapes (batch included), and Triton's TensorRT backend compares a config's dims with
the engine's bindings exactly when the config does not batch. Plans carry no I/O metadata of their
own: a deploy-kit plan is built, strongly typed, from the bundle's graph (its sidecar names it), so
its bindings are that graph's inputs and outputs, which the bundle's manifest records (``graph_io``,
written by ``deploy-kit bundle`` with onnx on the build machine). A bundle made before that record
existed is read with the onnx package where it is installed.

Each model folder gets a ``deploy-kit.json`` (the manifest it was made from), which also marks the
folder as deploy-kit's: only such folders are ever replaced. Models are written beside the
repository first and moved in when complete. No torch, onnx or onnxruntime for a current bundle.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

from .. import __version__, backends
from ..bundle import open_bundle
from ..errors import UsageError
from ..fsutil import replace_dir
from ..manifest import (Manifest, ManifestError, TensorInfo, is_bundle, read_manifest, target_kind, validate,
                        write_manifest)
from ..onnxmeta import graph_io
from ..runtime.context import parse_context
from ..runtime.tiling import GLOBAL_CONTEXT_NOTE, tiling_defaults

TILES_THROUGH = ("auto", "plan", "onnx", "in-process")
MARKER = "deploy-kit.json"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
# numpy dtype name (manifest graph_io and input conventions) -> Triton data_type (model_config.proto)
TRITON_TYPES = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "bfloat16": "TYPE_BF16", "float64": "TYPE_FP64",
    "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32", "uint64": "TYPE_UINT64",
    "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64", "bool": "TYPE_BOOL",
}
_PYTHON_MODEL = '''"""Written by deploy-kit {version}: images of any size through the fixed-size model (see config.pbtxt).

The model is deploy_kit.serving.triton_model: deploy-kit must be installed in the Python that runs
Triton's python backend ({extra}).
"""

try:
    from deploy_kit.serving.triton_model import TritonPythonModel  # noqa: F401
except ImportError as exc:  # the message Triton shows when the model fails to load
    raise ImportError(f"deploy-kit is not importable in the python backend's Python ({{exc}}); "
                      "{extra}") from exc
'''


@dataclass
class ModelInfo:
    name: str
    kind: str  # tensorrt_plan | onnxruntime_onnx | python
    path: str
    note: str = ""


@dataclass
class RepositoryInfo:
    """What :func:`write_repository` wrote, and what it left out and why."""

    repo: str
    models: list[ModelInfo] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Source:
    bundle: Any  # deploy_kit.bundle.Bundle
    plan: str | None  # a tensorrt plan to serve, or None
    plan_manifest: dict | None  # its sidecar, as decoded (copied into the model folder)
    plan_typed: Manifest | None  # the same, typed
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _Route:
    """How ``<name>_tiled`` runs its tiles."""

    bls: bool  # each tile a request to ``target`` in the server; else ``runner`` in the python backend
    target: str
    context: str  # "tile" or "sync:N"
    passes: int
    sync_file: str | None  # the bundle's sync graph (file name), copied beside the model
    runner: str = backends.ONNXRUNTIME  # the registry's graph runner of in-process tiles

    @property
    def sync(self) -> bool:
        return self.context != "tile"


def default_name(manifest: Manifest) -> str:
    """The bundle's graph stem as a Triton model name (``nafnet-tiny-64x64-tlc.fp16`` -> ``...-tlc-fp16``).

    Args:
        manifest: the bundle's manifest (typed view).

    Returns:
        A name Triton accepts: letters, digits, '_' and '-' (the model name when there is no graph name).
    """
    onnx = manifest.onnx or ""
    stem = onnx[: -len(".onnx")] if onnx.endswith(".onnx") else manifest.model
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-_")[:90] or "model"


def _resolve(source: str) -> _Source:
    """The bundle and the TensorRT plan to serve, from a bundle folder or a plan inside one."""
    if not os.path.exists(source):
        raise UsageError(f"{source} not found; give a bundle folder (deploy-kit bundle ARTIFACT) or a .plan built inside one")
    if target_kind(source) == "bundle":
        bundle = open_bundle(source)
        notes, chosen = [], None
        for plan in bundle.plans():  # newest first
            side = plan + ".json"
            if not os.path.isfile(side):
                notes.append(f"{os.path.basename(plan)} has no {os.path.basename(side)}; left out")
                continue
            m = read_manifest(side)
            typed = Manifest.from_dict(m, side)
            if typed.backend != backends.TENSORRT:
                notes.append(f"{os.path.basename(plan)} is a {typed.backend or 'unknown'} engine, which Triton's "
                             "TensorRT backend cannot load; left out")
            elif chosen is None:
                _check_plan_matches(plan, typed, bundle)
                chosen = (plan, m, typed)
        if chosen is None:
            notes.append(f"no TensorRT plan in the bundle, so no tensorrt_plan model: build one with the TensorRT of "
                         f"the Triton container that will serve it (deploy-kit build {bundle.path} --backend tensorrt), "
                         "then run this again")
            return _Source(bundle, None, None, None, tuple(notes))
        return _Source(bundle, *chosen, tuple(notes))
    if target_kind(source) == "plan" and os.path.isfile(source):
        side = source + ".json"
        if not os.path.isfile(side):
            raise UsageError(f"{source} has no manifest {side}; serve the bundle it was built in instead")
        m = read_manifest(side)
        typed = Manifest.from_dict(m, side)
        if typed.backend != backends.TENSORRT:
            raise UsageError(f"{source} is a {typed.backend or 'unknown'} engine; Triton's tensorrt_plan models need a "
                             "TensorRT plan: deploy-kit build BUNDLE --backend tensorrt (in the Triton container)")
        directory = os.path.dirname(os.path.abspath(source))
        if not is_bundle(directory):
            raise UsageError(f"{source} is not inside a deploy-kit bundle; the repository needs the bundle's graph: "
                             "make one with 'deploy-kit bundle ONNX', build in it ('deploy-kit build BUNDLE') "
                             "and pass the bundle or that plan")
        bundle = open_bundle(directory)
        _check_plan_matches(source, typed, bundle)
        return _Source(bundle, source, m, typed, ())
    raise UsageError(f"{source}: triton takes a bundle folder or a .plan built inside one")


def _check_plan_matches(plan: str, plan_manifest: Manifest, bundle) -> None:
    """The plan was built from this bundle's graph (its sidecar names the graph and the same I/O)."""
    for key in ("onnx", "input_shape", "input_names", "output_names", "precision"):
        mine, theirs = getattr(plan_manifest, key), getattr(bundle.typed, key)
        if mine != theirs:
            raise ManifestError(f"{plan}.json: {key} {str(mine)[:60]} differs from the bundle's {str(theirs)[:60]}; "
                                "the plan was not built from this bundle (rebuild it)")


def _graph(bundle) -> tuple[tuple[TensorInfo, ...], tuple[TensorInfo, ...]]:
    """The bundle graph's I/O from its manifest, checked against the rest of it (names, order, input
    dims, static shapes of numeric types). A bundle from before ``graph_io`` is read with onnx."""
    m: Manifest = bundle.typed
    where = os.path.join(bundle.path, "manifest.json")
    if m.graph_inputs is None:
        if importlib.util.find_spec("onnx") is None:
            raise UsageError(f"{bundle.path} predates the graph I/O record in its manifest (graph_io); re-bundle it "
                             "with this deploy-kit (deploy-kit bundle ARTIFACT) or install onnx (pip install onnx)")

        m = Manifest.from_dict({**bundle.manifest, "graph_io": graph_io(bundle.onnx)}, where)
    inputs, outputs = m.graph_inputs, m.graph_outputs
    if tuple(t.name for t in inputs) != m.input_names or tuple(t.name for t in outputs) != m.output_names:
        raise ManifestError(f"{where}: input/output names {list(m.input_names)}/{list(m.output_names)} differ from the "
                            f"graph's {[t.name for t in inputs]}/{[t.name for t in outputs]}; copy the bundle again")
    if inputs[0].dims != m.input_shape:
        raise ManifestError(f"{where}: input_shape {list(m.input_shape)} differs from the graph's {list(inputs[0].dims)}")
    for t in inputs + outputs:
        if not all(isinstance(d, int) and d > 0 for d in t.dims) or t.dtype not in TRITON_TYPES:
            raise UsageError(f"{bundle.onnx}: tensor '{t.name}' has shape {list(t.dims)} and type {t.dtype}; "
                             "Triton configs are written for static shapes of numeric types only")
    return inputs, outputs


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a protobuf text-format string literal (UTF-8, C escapes)


def _tensors(kind: str, tensors: list[tuple[str, str, list[int]]]) -> list[str]:
    lines = [f"{kind} ["]
    for i, (name, dtype, dims) in enumerate(tensors):
        lines += ["  {", f"    name: {_q(name)}", f"    data_type: {dtype}",
                  f"    dims: [ {', '.join(str(d) for d in dims)} ]", "  }" + ("," if i < len(tensors) - 1 else "")]
    return lines + ["]"]


def _config(header: list[str], name: str, engine: str, inputs, outputs, kind: str, count: int,
            parameters: dict[str, str] | None = None) -> str:
    lines = [f"# {h}" if h else "#" for h in header]
    lines += [f"name: {_q(name)}", engine, "max_batch_size: 0"]
    lines += _tensors("input", inputs) + _tensors("output", outputs)
    lines += ["instance_group [", "  {", f"    kind: {kind}", f"    count: {count}", "  }", "]"]
    for key, value in (parameters or {}).items():
        lines += ["parameters {", f"  key: {_q(key)}", f"  value: {{ string_value: {_q(value)} }}", "}"]
    return "\n".join(lines) + "\n"


def _fixed(tensors: tuple[TensorInfo, ...]) -> list[tuple[str, str, list[int]]]:
    return [(t.name, TRITON_TYPES[t.dtype], list(t.dims)) for t in tensors]


def _describe(m: Manifest) -> str:
    shape = "x".join(str(d) for d in m.input_shape)
    return f"{m.model} {m.variant} {m.precision.upper()} ({shape}{', TLC' if m.tlc else ''})"


def write_repository(source: str, repo: str, *, name: str | None = None, instances: int = 1, threads: int = 0,
                     tiles_through: str = "auto", overlap: int | None = None, context: str = "tile",
                     cpu_backend: str = backends.ONNXRUNTIME) -> RepositoryInfo:
    """Write (or update) the Triton models of ``source`` into the model repository ``repo``.

    Args:
        source: a bundle folder, or a TensorRT ``.plan`` built inside one (``deploy-kit build BUNDLE``).
        repo: the model repository folder (created if missing; other models in it are left alone).
        name: the models' base name (default :func:`default_name`).
        instances: ``instance_group`` count of each model (GPU for the plan, CPU for the others).
        threads: ONNX Runtime intra-op threads per instance (``<name>_onnx`` and in-process tiles);
            0 = ONNX Runtime's default (every core: lower it when several instances share them).
        tiles_through: how ``<name>_tiled`` runs each tile: a BLS request to ``<name>`` (``plan``) or
            to ``<name>_onnx`` (``onnx``) in the same server; ``auto`` = ``plan`` when there is one, else
            ``onnx``; or ``in-process``: deploy-kit's ONNX Runtime runner inside the python backend
            process, on a copy of the graph (CPU nodes, or servers without the onnxruntime backend).
        overlap: tile overlap in pixels (default: as ``deploy-kit run``).
        context: ``<name>_tiled``'s context mode (its config's ``context`` parameter): ``tile`` (each
            tile its own statistics) or ``sync[:N]`` (N passes through the bundle's sync graph, which
            is then required, on ONNX Runtime in the python backend process: tiles see whole-image
            statistics, as ``deploy-kit run --context sync:N``). A sync graph in the bundle is copied
            into ``<name>_tiled`` in either mode, so editing the parameter switches it.
        cpu_backend: the registry's graph runner of in-process tiles (``onnxruntime``, or ``openvino``
            on x86-64 CPU nodes: docs/cpu.md); the config's ``cpu_runner`` parameter. The sync graph's
            passes stay on ONNX Runtime.

    Raises:
        UsageError / ManifestError: bad options, a source that is not a bundle or a plan built in one,
            a tampered bundle, or a model folder in ``repo`` that deploy-kit did not write (one line).
            Nothing is written then.
    """
    _check_options(tiles_through, instances, threads)
    if cpu_backend not in backends.names(engines=False):
        raise UsageError(f"--cpu-backend must be one of {', '.join(backends.names(engines=False))}; got {cpu_backend!r}")
    if cpu_backend != backends.ONNXRUNTIME and tiles_through != "in-process":
        raise UsageError(f"--cpu-backend {cpu_backend} runs in-process tiles: add --tiles-through in-process")
    mode, passes = parse_context(context)
    src = _resolve(source)
    m = src.bundle.typed
    if mode == "sync" and not m.sync_onnx:
        raise UsageError(f"--context sync needs a bundle with a sync graph; {src.bundle.path} has none (export a "
                         "global-context model, e.g. NAFNet without --tlc or Restormer with --no-tlc, with --bundle)")
    name = default_name(m) if name is None else name
    if not _NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(f"--name {name[:60]!r} is not a model name: letters, digits, '_', '-', '.' (at most 100, "
                         "starting with a letter or digit)")
    inputs, outputs = _graph(src.bundle)
    info = RepositoryInfo(os.path.abspath(repo), notes=list(src.notes))
    header = [f"Written by deploy-kit {__version__} from {os.path.basename(src.bundle.path)}: {_describe(m)}.",
              "Every value comes from the bundle's manifest and graph; regenerate with 'deploy-kit triton' rather than edit."]
    plan_name, onnx_name, tiled_name = name, f"{name}_onnx", f"{name}_tiled"
    files: dict[str, dict[str, Any]] = {}  # model -> {"config.pbtxt": text, "1/x": ("copy", path), MARKER: manifest}
    if src.plan is not None:
        files[plan_name] = _plan_model(src, plan_name, header, inputs, outputs, instances, info)
    files[onnx_name] = _onnx_model(src, onnx_name, header, inputs, outputs, instances, threads, info)
    if m.output_kind != "image" or len(inputs) != 1 or len(outputs) != 1:
        info.notes.append(f"no {tiled_name}: the graph outputs {m.output_kind} ({len(outputs)} outputs), "
                          "so images of other sizes cannot be tiled through it")
    else:
        ov, multiple = tiling_defaults(m, overlap)
        _check_tileable(src.bundle.path, m, inputs, outputs)
        if tiles_through == "plan" and src.plan is None:
            raise UsageError("--tiles-through plan needs a TensorRT plan in the repository, and there is none "
                             "(see the notes above); use --tiles-through onnx or in-process")
        bls = tiles_through != "in-process"
        target = plan_name if tiles_through == "plan" or (tiles_through == "auto" and src.plan is not None) else onnx_name
        route = _Route(bls=bls, target=target, context="tile" if mode == "tile" else f"sync:{passes}", passes=passes,
                       sync_file=os.path.basename(m.sync_onnx) if m.sync_onnx else None, runner=cpu_backend)
        files[tiled_name] = _tiled_model(src, tiled_name, header, inputs, outputs, instances, threads, route,
                                         ov, multiple, info)
    _write(repo, files)
    return info


def _check_options(tiles_through: str, instances: int, threads: int) -> None:
    """The options that need no bundle: one line each (UsageError)."""
    if tiles_through not in TILES_THROUGH:
        raise UsageError(f"--tiles-through must be one of {', '.join(TILES_THROUGH)}; got {tiles_through!r}")
    if not isinstance(instances, int) or isinstance(instances, bool) or not 1 <= instances <= 64:
        raise UsageError(f"--instances must be between 1 and 64; got {instances}")
    if not isinstance(threads, int) or isinstance(threads, bool) or not 0 <= threads <= 1024:
        raise UsageError(f"--threads must be between 0 (ONNX Runtime's default) and 1024; got {threads}")


def _plan_model(src: _Source, name: str, header: list[str], inputs, outputs, instances: int,
                info: RepositoryInfo) -> dict[str, Any]:
    """``<name>``: the TensorRT plan, fixed size, on the GPU (recorded in ``info``)."""
    trt = src.plan_typed.backend_version or "?"
    info.models.append(ModelInfo(name, "tensorrt_plan", os.path.join(info.repo, name), f"TensorRT {trt}, GPU"))
    return {
        "config.pbtxt": _config(
            header + [f"TensorRT {trt} plan {os.path.basename(src.plan)}: it loads only under TensorRT {trt} on the",
                      "GPU kind it was built on: serve it with the Triton container that ships that TensorRT."],
            name, 'platform: "tensorrt_plan"', _fixed(inputs), _fixed(outputs), "KIND_GPU", instances),
        "1/model.plan": ("copy", src.plan),
        MARKER: _marker(src.plan_manifest, "tensorrt_plan", src.plan),
    }


def _onnx_model(src: _Source, name: str, header: list[str], inputs, outputs, instances: int, threads: int,
                info: RepositoryInfo) -> dict[str, Any]:
    """``<name>_onnx``: the same graph on ONNX Runtime, fixed size, on the CPU (recorded in ``info``)."""
    info.models.append(ModelInfo(name, "onnxruntime_onnx", os.path.join(info.repo, name), "ONNX Runtime, CPU"))
    return {
        "config.pbtxt": _config(header + ["The same graph on ONNX Runtime (CPU nodes)."], name,
                                'platform: "onnxruntime_onnx"', _fixed(inputs), _fixed(outputs), "KIND_CPU", instances,
                                {"intra_op_thread_count": str(threads)} if threads else None),
        "1/model.onnx": ("copy", src.bundle.onnx),
        MARKER: _marker(src.bundle.manifest, "onnxruntime_onnx", src.bundle.onnx),
    }


def _check_tileable(where: str, m: Manifest, inputs, outputs) -> None:
    """The graph's output is ``scale`` x its input's size and its input a float image (ManifestError)."""
    sc, (_, _, th, tw) = m.scale, m.input_shape
    if tuple(outputs[0].dims[2:]) != (sc * th, sc * tw):
        raise ManifestError(f"{where}: the graph outputs {list(outputs[0].dims)} for {list(inputs[0].dims)} "
                            f"inputs, not {sc} x the input's size (manifest scale {sc}); re-export it")
    if m.input_dtype not in ("float32", "float16"):
        raise ManifestError(f"{where}: input dtype {m.input_dtype[:20]!r} is not float32/float16")


def _tiled_model(src: _Source, name: str, header: list[str], inputs, outputs, instances: int, threads: int,
                 route: _Route, overlap: int, multiple: int, info: RepositoryInfo) -> dict[str, Any]:
    """``<name>_tiled``: images of any size through the python backend (recorded in ``info``, with a note
    for a global-context model tiled without its sync graph)."""
    m = src.bundle.typed
    _, ch, th, tw = m.input_shape
    sc = m.scale
    if route.sync:
        how = (f"Context {route.context}: every tile sees the whole image's statistics, {route.passes} passes through "
               f"the sync graph 1/{route.sync_file} on deploy-kit's ONNX Runtime runner in the python backend process.")
    else:
        how = (f"Each tile is a request to '{route.target}' in this server (BLS)." if route.bls else
               "Each tile runs on deploy-kit's ONNX Runtime runner in the python backend process (1/model.onnx).")
    extra = "pip install deploy-kit there" if route.bls and not route.sync else "pip install 'deploy-kit[ort]' there"
    tiled = {
        "config.pbtxt": _config(
            header + [f"Images of any size (N, {ch}, H, W) in [0, 1], tiled {th}x{tw} with overlap {overlap} and blended by",
                      "deploy-kit's runtime (deploy_kit.runtime.tiling.tile_run), as 'deploy-kit run' does.",
                      *([f"Super-resolution x{sc}: the output is (N, {outputs[0].dims[1]}, {sc}*H, {sc}*W)."]
                        if sc > 1 else []),
                      how,
                      f"Needs deploy-kit in the Python that runs the python backend ({extra})."],
            name, 'backend: "python"', [(inputs[0].name, TRITON_TYPES[m.input_dtype], [-1, ch, -1, -1])],
            [(outputs[0].name, "TYPE_FP32", [-1, outputs[0].dims[1], -1, -1])], "KIND_CPU", instances,
            _tiled_parameters(m, inputs, outputs, threads, route, overlap, multiple)),
        "1/model.py": ("text", _PYTHON_MODEL.format(version=__version__, extra=extra)),
        MARKER: _marker(src.bundle.manifest, "python", src.bundle.onnx),
    }
    if not route.bls:
        tiled["1/model.onnx"] = ("copy", src.bundle.onnx)
    if route.sync_file:
        tiled[f"1/{route.sync_file}"] = ("copy", os.path.join(src.bundle.path, m.sync_onnx))
    through = f"the sync graph, {route.context}, ONNX Runtime in-process" if route.sync else \
        (route.target if route.bls else f"{route.runner} in-process")
    info.models.append(ModelInfo(name, "python", os.path.join(info.repo, name), f"any size, tiles through {through}"))
    if m.global_context and not route.sync:
        hint = "; this bundle has a sync graph: --context sync makes the tiles match the full image" \
            if route.sync_file else ""
        info.notes.append(f"{GLOBAL_CONTEXT_NOTE}{hint}")
    return tiled


def _tiled_parameters(m: Manifest, inputs, outputs, threads: int, route: _Route, overlap: int,
                      multiple: int) -> dict[str, str]:
    """``<name>_tiled``'s config parameters, which deploy_kit.serving.triton_model reads."""
    _, ch, th, tw = m.input_shape
    return {
        "tiles_through": "bls" if route.bls else "in-process",
        **({"tile_model": route.target} if route.bls else {"onnx": "model.onnx", "cpu_runner": route.runner}),
        **({"intra_op_threads": str(threads)} if not route.bls or route.sync_file else {}),
        "tile_input": inputs[0].name,
        "tile_input_dtype": inputs[0].dtype,
        "tile_output": outputs[0].name,
        "channels": str(ch),
        "tile_height": str(th),
        "tile_width": str(tw),
        "tile_batch": str(m.batch),
        "scale": str(m.scale),
        "overlap": str(overlap),
        "multiple": str(multiple),
        "global_context": "true" if m.global_context else "false",
        "context": route.context,
        **({"sync_onnx": route.sync_file, "sync_stats": str(m.sync_stats), "sync_pad": m.sync_pad[0],
            "sync_pad_multiple": str(m.sync_pad[1])} if route.sync_file else {}),
        "deploy_kit_version": __version__,
    }


def _marker(manifest: dict, role: str, source_file: str) -> dict:
    out = {k: v for k, v in manifest.items() if k not in ("files", "references")}
    out["triton"] = {"role": role, "source": os.path.basename(source_file), "written_by": f"deploy-kit {__version__}"}
    return validate(out, MARKER)


def is_deploy_kit_model(path: str) -> bool:
    """A model folder deploy-kit wrote (its ``deploy-kit.json`` reads as a manifest)."""
    try:
        read_manifest(os.path.join(path, MARKER))
    except ManifestError:
        return False
    return os.path.isdir(path)


def _write(repo: str, files: dict[str, dict[str, Any]]) -> None:
    """Every model into a temp folder beside ``repo``, then each moved in; replaced only if deploy-kit's."""
    if os.path.lexists(repo) and not os.path.isdir(repo):
        raise UsageError(f"--repo {repo} exists and is not a folder")
    for model in files:
        target = os.path.join(repo, model)
        if os.path.lexists(target) and not is_deploy_kit_model(target):
            raise UsageError(f"{target} exists and was not written by deploy-kit; remove it or choose another --name")
    parent = os.path.dirname(os.path.abspath(repo)) or "."
    os.makedirs(parent, exist_ok=True)
    # beside the repository, not in it: a polling server would try to load a half-written folder
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(os.path.abspath(repo))}.", suffix=".part", dir=parent)
    try:
        for model, content in files.items():
            for rel, value in content.items():
                path = os.path.join(tmp, model, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if rel == MARKER:
                    write_manifest(path, value)
                elif isinstance(value, tuple) and value[0] == "copy":
                    shutil.copyfile(value[1], path)
                else:
                    with open(path, "w", encoding="utf-8") as fh:
                        fh.write(value[1] if isinstance(value, tuple) else value)
        umask = os.umask(0)
        os.umask(umask)
        for root, dirs, _ in os.walk(tmp):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o777 & ~umask)
        if not os.path.lexists(repo):
            replace_dir(tmp, repo)  # a new repository appears complete
            return
        for model in files:
            replace_dir(os.path.join(tmp, model), os.path.join(repo, model), aside=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
