"""``deploy-kit bench``: latency, throughput and memory of one model on every backend that runs here.

Rows, in order (a backend that cannot run here is a ``skipped`` row with the reason):

* ``pytorch`` — the upstream module (``--torch-module eager``, the default: what a user would run
  without deploy-kit; TLC as upstream computes it) in eager PyTorch FP32 on the CPU: the baseline
  every ``ratio_vs_pytorch`` is taken against (model targets only). ``static`` times the export
  form instead (TLC unrolled, range-safe norms, LayerNorm affines folded: models/fastpath.py);
* ``pytorch-cuda``, ``pytorch-cuda-fp16``, ``pytorch-cuda-fp16-cl`` (channels_last),
  ``pytorch-cuda-fp16-compile`` (``torch.compile``) — when ``torch.cuda.is_available()``;
* ``onnxruntime`` (CPU) and ``onnxruntime-cuda`` (its CUDA execution provider) on the exported graph;
* ``tensorrt-rtx`` / ``tensorrt`` — the engine backends of the registry (:mod:`deploy_kit.backends`)
  when their ``can_run`` says it can run here (a plan the target carries, else one built for
  the run into a temporary folder).

Every backend runs in its own spawned process (:func:`in_child_process`, with the allocator left
as glibc sets it, as in a user's process), so its peak host memory is its own: the process's
resident-set high-water mark is reset after the imports and read after the last run
(:func:`deploy_kit.memory.reset_peak_rss`, :func:`~deploy_kit.memory.peak_rss_mib`). Latency is the
wall time of :meth:`Runner.run` (numpy in, numpy out: host/device copies included for GPU rows)
over ``runs`` calls after ``warmup`` untimed ones. CPU backends all get the same thread count.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from . import __version__, backends
from ._deps import require
from .bundle import open_bundle
from .compare import run_precision
from .engine import build_engine
from .errors import UsageError
from .fsutil import write_text
from .manifest import plan_sidecar, read_typed, target_kind
from .memory import peak_rss_mib, reset_peak_rss
from .models import get_adapter
from .onnxmeta import read_metadata
from .pipeline import run_export
from .reference import TorchRunner
from .runners.base import in_child_process

TORCH_CUDA_MODES = (  # (row, dtype, channels_last, compile)
    ("pytorch-cuda", "float32", False, False),
    ("pytorch-cuda-fp16", "float16", False, False),
    ("pytorch-cuda-fp16-cl", "float16", True, False),
    ("pytorch-cuda-fp16-compile", "float16", False, True),
)
FEW_RUNS = 20  # fewer timed runs than this make the p90 a rough figure (the run says so)


@dataclass
class Row:
    """One backend's result (``status`` ok) or why it did not run (``status`` skipped, ``reason``)."""

    backend: str
    device: str
    precision: str
    status: str = "skipped"
    reason: str = ""
    detail: str = ""
    runs: int = 0
    median_ms: float | None = None
    p90_ms: float | None = None
    mean_ms: float | None = None
    min_ms: float | None = None
    megapixels_per_s: float | None = None
    peak_rss_mib: float | None = None  # the backend's process, high-water mark after its imports
    peak_rss_delta_mib: float | None = None  # rise over the RSS before the model/session was created
    peak_device_mib: float | None = None
    device_memory_note: str = ""
    ratio_vs_pytorch: float | None = None  # median latency / PyTorch eager FP32 (CPU) median
    ratio_vs_pytorch_cuda: float | None = None  # GPU rows: / PyTorch eager FP32 on the GPU
    version: str = ""


@dataclass
class BenchTarget:
    """What is benchmarked: a model request (exported for the run) or an artifact."""

    kind: str  # model | onnx | plan | bundle
    label: str
    stem: str
    precision: str
    req: Any = None  # ExportRequest (model targets)
    onnx: str | None = None  # the graph ONNX Runtime runs
    onnx_missing: str = ""  # why there is none (plan targets)
    plans: dict[str, str] = field(default_factory=dict)  # engine backend -> plan
    input_shape: tuple[int, ...] | None = None
    torch_module: str = "eager"


@dataclass
class BenchResult:
    target: BenchTarget
    rows: list[Row]
    threads: int
    warmup: int
    runs: int
    notes: list[str] = field(default_factory=list)
    load_average: tuple = (None, None)  # 1-minute load average before and after the run

    @property
    def pixels(self) -> int:
        return int(self.target.input_shape[-2] * self.target.input_shape[-1])

    def to_dict(self) -> dict[str, Any]:
        t = self.target
        return {
            "deploy_kit_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "target": t.label,
            "target_kind": t.kind,
            "stem": t.stem,
            "model": t.req.model if t.req is not None else None,
            "variant": t.req.variant if t.req is not None else None,
            "tlc": bool(t.req.tlc) if t.req is not None else None,
            "precision": t.precision,
            "input_shape": list(t.input_shape or ()),
            "megapixels": self.pixels / 1e6,
            "threads": self.threads,
            "cpu_count": os.cpu_count(),
            "load_average_1min": {"before": self.load_average[0], "after": self.load_average[1]},
            "warmup": self.warmup,
            "runs": self.runs,
            "pytorch_module": t.torch_module if t.kind == "model" else None,
            "latency": "wall time of one Runner.run (numpy in, numpy out; host<->device copies included on GPU rows)",
            "notes": list(self.notes),
            "rows": [asdict(r) for r in self.rows],
        }

    def table(self) -> str:
        """The aligned terminal table (skipped rows carry their reason in the last column)."""
        gpu_ratio = any(r.ratio_vs_pytorch_cuda is not None for r in self.rows)
        head = ["backend", "device", "prec", "status", "median ms", "p90 ms", "MP/s", "peak RSS MiB", "+RSS MiB",
                "dev MiB", "vs torch"] + (["vs torch-cuda"] if gpu_ratio else []) + ["note"]

        def num(v, fmt):
            return "-" if v is None else format(v, fmt)

        body = []
        for r in self.rows:
            cells = [r.backend, r.device, r.precision, r.status, num(r.median_ms, ".2f"), num(r.p90_ms, ".2f"),
                     num(r.megapixels_per_s, ".3f"), num(r.peak_rss_mib, ".0f"), num(r.peak_rss_delta_mib, ".0f"),
                     num(r.peak_device_mib, ".0f"), num(r.ratio_vs_pytorch, ".2f")]
            if gpu_ratio:
                cells.append(num(r.ratio_vs_pytorch_cuda, ".2f"))
            cells.append(r.reason if r.status != "ok" else r.detail)
            body.append(cells)
        widths = [max(len(str(x[i])) for x in [head, *body]) for i in range(len(head) - 1)]
        right = {4, 5, 6, 7, 8, 9, 10, 11} - ({11} if not gpu_ratio else set())

        def line(cells):
            out = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths))]
            return "  ".join(out + [str(cells[-1])]).rstrip()

        return "\n".join([line(head), line(["-" * w for w in widths] + ["-" * 4]), *map(line, body)])


# --------------------------------------------------------------------------- targets

def model_target(req, torch_module: str = "eager") -> BenchTarget:
    """A model request; :func:`run_bench` exports it first (ONNX at the request's precision)."""
    return BenchTarget("model", f"{req.model} {req.variant}", f"{req.stem()}.{req.precision}", req.precision, req=req,
                       input_shape=None, torch_module=torch_module)


def artifact_target(path: str) -> BenchTarget:
    """A deploy-kit ONNX, a ``.plan`` with its ``.json`` manifest, or a bundle folder.

    Raises:
        UsageError / ManifestError: not found, or not one of those (one line).
    """
    if not os.path.exists(path):
        raise UsageError(f"not found: {path}")
    name = os.path.basename(os.path.normpath(path))
    kind = target_kind(path)
    if kind == "bundle":
        b = open_bundle(path)
        plans = {}
        for plan, backend in b.engines():  # newest first: the first plan per backend wins
            plans.setdefault(backend, plan)
        stem = os.path.basename(b.path.rstrip(os.sep))
        stem = stem[: -len(".bundle")] if stem.endswith(".bundle") else stem
        return BenchTarget("bundle", b.path, stem, b.typed.precision, onnx=b.onnx, plans=plans,
                           input_shape=b.typed.input_shape)
    if os.path.isdir(path):
        raise UsageError(f"{path} is a folder but not a deploy-kit bundle (no manifest.json)")
    if kind == "plan":
        side = plan_sidecar(path, "bench")
        m = read_typed(side)
        if m.backend is None:
            raise UsageError(f"{side} names no engine backend; it is not the manifest of a plan deploy-kit built")
        onnx = os.path.join(os.path.dirname(os.path.abspath(path)), m.onnx) if m.onnx else None
        missing = "" if onnx and os.path.isfile(onnx) else f"the plan's graph {m.onnx or '(unnamed)'} is not next to it"
        return BenchTarget("plan", path, name[: -len(".plan")], m.precision,
                           onnx=onnx if not missing else None, onnx_missing=missing,
                           plans={m.backend: path}, input_shape=m.input_shape)
    if kind == "onnx":
        shape, precision = _onnx_shape(path)
        return BenchTarget("onnx", path, name[: -len(".onnx")], precision, onnx=path, input_shape=shape)
    raise UsageError(f"{path}: bench takes a model name, an .onnx, a .plan with its .json manifest, or a bundle folder")


def _onnx_shape(path: str) -> tuple[tuple[int, ...], str]:
    """(input shape, precision) of an ONNX: deploy-kit metadata, else the graph's first input."""
    require("onnx")

    meta = read_metadata(path)  # one line for a missing or damaged file
    if meta.get("input_shape"):
        return tuple(int(d) for d in meta["input_shape"]), str(meta.get("precision", "fp32"))
    import onnx

    model = onnx.load(path, format="protobuf", load_external_data=False)
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in model.graph.input[0].type.tensor_type.shape.dim]
    if len(dims) != 4 or min(dims) <= 0:
        raise UsageError(f"{path}: bench needs a fixed NCHW input; its first input has shape {dims}")
    return tuple(dims), "fp32"


# --------------------------------------------------------------------------- the run

def run_bench(target: BenchTarget, *, out_dir: str, runs: int = 20, warmup: int = 3, threads: int | None = None,
              progress: Callable[[str], None] = lambda text: None) -> BenchResult:
    """Benchmark ``target`` on every backend; model targets are exported first into a work folder.

    Args:
        out_dir: where the temporary work folder (export, engines built for the run) is made.
        runs / warmup: timed and untimed :meth:`Runner.run` calls per backend.
        threads: intra-op threads of every CPU backend (torch and ONNX Runtime); default os.cpu_count().
    """
    threads = threads or os.cpu_count() or 1
    notes: list[str] = []
    load = _load()
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        notes.append(f"the 1-minute load average was {load:.2f} on {os.cpu_count()} CPUs before the run: other "
                     "processes compete for the cores, so the CPU figures are noisy (see p90)")
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix=".dk-bench-", dir=out_dir)
    try:
        if target.kind == "model":
            _export_for_bench(target, work, notes, progress)
        usable = backends.status()
        shape = tuple(target.input_shape)
        rows: list[Row] = []
        if target.kind == "model":
            rows.append(_bench_row(progress, "pytorch", "cpu", "fp32", _child_torch,
                                   target.req, target.torch_module, "cpu", "float32", False, False, shape, runs,
                                   warmup, threads))
            cuda, why = _torch_cuda()
            for name, dtype, cl, comp in TORCH_CUDA_MODES:
                prec = "fp16" if dtype == "float16" else "fp32"
                if not cuda:
                    rows.append(Row(name, "cuda", prec, reason=why))
                    continue
                rows.append(_bench_row(progress, name, "cuda", prec, _child_torch, target.req, target.torch_module,
                                       "cuda", dtype, cl, comp, shape, runs, warmup, threads))
        ort_ok, ort_why = usable[backends.ONNXRUNTIME]
        for name, device in ((backends.ONNXRUNTIME, "cpu"), (f"{backends.ONNXRUNTIME}-cuda", "cuda")):
            if not ort_ok:
                rows.append(Row(name, device, target.precision, reason=ort_why))
            elif target.onnx is None:
                rows.append(Row(name, device, target.precision, reason=target.onnx_missing or "no ONNX graph"))
            elif device == "cuda" and ort_why != "CUDA EP available":
                rows.append(Row(name, device, target.precision,
                                reason="this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu, and a CUDA GPU)"))
            else:
                rows.append(_bench_row(progress, name, device, target.precision, _child_ort, target.onnx, device,
                                       shape, runs, warmup, threads))
        rows += _openvino_rows(target, usable[backends.OPENVINO], shape, runs, warmup, threads, progress)
        for backend in backends.names(engines=True):
            rows.append(_engine_row(target, backend, usable[backend], work, shape,
                                    runs, warmup, threads, progress))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _ratios(rows)
    if runs < FEW_RUNS:
        notes.append(f"{runs} timed runs: the p90 is a rough figure below {FEW_RUNS}")
    result = BenchResult(target, rows, threads, warmup, runs, notes)
    result.load_average = (load, _load())
    return result


def _export_for_bench(target: BenchTarget, work: str, notes: list[str], progress) -> None:
    """Export the model request (no engine) so ONNX Runtime benches the real graph."""
    req = target.req
    progress(f"exporting {req.model} {req.variant} {req.height}x{req.width} {req.precision} ONNX (no engine) ...")
    t0 = time.perf_counter()
    res = run_export(req, out_dir=work, backend=None, stop_after="precision", samples=1)
    onnx = [p for label, p in res.artifacts if label.endswith("ONNX")][-1]
    target.req = res.request  # variant as resolved (e.g. read from the checkpoint)
    target.onnx = onnx
    target.input_shape = tuple(int(d) for d in res.report.input_shape) if res.report is not None else (
        1, 3, req.height, req.width)
    notes.extend(res.notes[:1])  # how the weights were loaded (stage_load's note)
    failures = res.report.failures() if res.report is not None else []
    if failures:
        notes.append("parity of the exported graph FAILED (figures still measured): " + " | ".join(failures))
    progress(f"    exported {os.path.basename(onnx)} in {time.perf_counter() - t0:.1f} s")


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _torch_cuda() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        build = "a CPU build of torch" if not torch.version.cuda else "no CUDA device visible to torch"
        return False, f"torch.cuda.is_available() is False ({build}, torch {torch.__version__})"
    return True, ""


def _engine_row(target: BenchTarget, backend: str, usable: tuple[bool, str], work: str, shape, runs, warmup,
                threads, progress) -> Row:
    ok, why = usable
    if not ok:
        return Row(backend, "cuda", target.precision, reason=why)
    plan, detail = target.plans.get(backend), ""
    if plan is None:
        if target.kind == "plan":
            return Row(backend, "cuda", target.precision, reason=f"the target is a {next(iter(target.plans))} plan")

        source = target.label if target.kind == "bundle" else target.onnx
        progress(f"building a {backend} engine for the run ...")
        try:
            built = build_engine(source, backend, out_path=os.path.join(work, f"{target.stem}.{backend}.plan"))
        except Exception as exc:  # noqa: BLE001 - one backend's failure must not hide the other rows
            return Row(backend, "cuda", target.precision, reason=f"engine build failed: {_short(exc)}")
        plan, detail = built.plan, f"engine built for the run in {built.seconds:.1f} s"
    sidecar = plan + ".json"
    if os.path.isfile(sidecar):  # this plan on this GPU: its version, targets and DLA core
        ok, why = backends.get(backend).can_run_artifact(read_typed(sidecar))
        if not ok:
            return Row(backend, "cuda", target.precision, reason=why)
    row = _bench_row(progress, backend, "cuda", target.precision, _child_engine, plan, backend, shape, runs, warmup,
                     threads)
    row.detail = "; ".join(x for x in (row.detail, detail) if x)
    return row


def _bench_row(progress, name: str, device: str, precision: str, child, *args) -> Row:
    progress(f"{name} ({device}, {precision}) ...")
    try:
        got = in_child_process(child, *args, lean=False)  # glibc's allocator as is, as a user's process
    except Exception as exc:  # noqa: BLE001 - a crashed backend is reported as its row, the rest still run
        return Row(name, device, precision, reason=f"failed: {_short(exc)}")
    row = Row(name, device, precision, status="ok", **got)
    progress(f"    median {row.median_ms:.2f} ms, p90 {row.p90_ms:.2f} ms, peak RSS +{row.peak_rss_delta_mib:.0f} MiB")
    return row


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:200]}"


def _ratios(rows: list[Row]) -> None:
    def median(name):
        return next((r.median_ms for r in rows if r.backend == name and r.status == "ok"), None)

    cpu, gpu = median("pytorch"), median("pytorch-cuda")
    for r in rows:
        if r.status != "ok":
            continue
        if cpu:
            r.ratio_vs_pytorch = round(r.median_ms / cpu, 4)
        if gpu and r.device == "cuda":
            r.ratio_vs_pytorch_cuda = round(r.median_ms / gpu, 4)


# --------------------------------------------------------------------------- child processes

def _time(runner, x: np.ndarray, runs: int, warmup: int, sync=None) -> list[float]:
    for _ in range(warmup):
        runner.run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        runner.run(x)
        if sync is not None:
            sync()
        times.append(time.perf_counter() - t)
    return times


def _figures(times: list[float], shape, base_mib: float) -> dict[str, Any]:
    ms = np.asarray(times) * 1e3
    median = float(np.median(ms))
    peak = peak_rss_mib()
    return {
        "runs": len(times),
        "median_ms": round(median, 4),
        "p90_ms": round(float(np.percentile(ms, 90)), 4),
        "mean_ms": round(float(ms.mean()), 4),
        "min_ms": round(float(ms.min()), 4),
        "megapixels_per_s": round(shape[-2] * shape[-1] / 1e6 / (median / 1e3), 4),
        "peak_rss_mib": round(peak, 1),
        "peak_rss_delta_mib": round(max(peak - base_mib, 0), 1),
    }


def _input(shape) -> np.ndarray:
    return np.random.default_rng(0).random(tuple(shape), dtype=np.float32)


def _child_torch(req, form: str, device: str, dtype: str, channels_last: bool, compile_: bool, shape, runs: int,
                 warmup: int, threads: int) -> dict[str, Any]:
    import torch

    from .models.checkpoint import load_request  # torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)  # as ONNX Runtime's inter-op (ort_session)
    except RuntimeError:
        pass
    x = _input(shape)
    base = reset_peak_rss()
    adapter = get_adapter(req.model)
    loaded = load_request(adapter, req)
    module = adapter.wrap(loaded.model, req, static=form == "static").eval()
    detail = ("upstream module" if form == "eager" else
              f"export form{' (TLC unrolled)' if req.tlc else ''}, range-safe, affines folded") + ", eager mode"
    if device == "cpu":
        runner = TorchRunner(module, adapter.output_names(req))
        with torch.inference_mode():
            times = _time(runner, x, runs, warmup)
        return {**_figures(times, shape, base), "detail": detail + f", {threads} threads",
                "version": f"torch {torch.__version__}", "device_memory_note": "CPU: no device memory"}
    torch.cuda.reset_peak_memory_stats()
    runner = _CudaTorchRunner(module, dtype, channels_last, compile_)
    times = _time(runner, x, runs, warmup, sync=torch.cuda.synchronize)
    parts = [detail if not compile_ else f"{form} module, torch.compile"]
    parts += ["channels_last"] if channels_last else []
    return {**_figures(times, shape, base), "detail": ", ".join(parts), "version": f"torch {torch.__version__}",
            "peak_device_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1),
            "device_memory_note": "torch.cuda.max_memory_allocated (weights + activations)"}


class _CudaTorchRunner:
    """numpy in, numpy out on the GPU (copies included, as for the engine rows)."""

    def __init__(self, module, dtype: str, channels_last: bool, compile_: bool):
        import torch

        self.dtype = getattr(torch, dtype)
        self.fmt = torch.channels_last if channels_last else torch.contiguous_format
        module = module.to("cuda", self.dtype).to(memory_format=self.fmt)
        self.module = torch.compile(module) if compile_ else module

    def run(self, x: np.ndarray):
        import torch

        with torch.inference_mode():
            t = torch.from_numpy(x).to("cuda", self.dtype).contiguous(memory_format=self.fmt)
            out = self.module(t)
            outs = list(out) if isinstance(out, (tuple, list)) else [out]
            return [o.float().cpu().numpy() for o in outs]


def _child_ort(path: str, device: str, shape, runs: int, warmup: int, threads: int) -> dict[str, Any]:
    import onnxruntime

    x = _input(shape)
    base = reset_peak_rss()
    ort = backends.get(backends.ONNXRUNTIME)
    runner = ort.open_runner(path, ort.run_options(device=device, threads=threads))
    try:
        times = _time(runner, x, runs, warmup)
        figures = _figures(times, shape, base)
    finally:
        runner.close()
    providers = "CUDA EP" if device == "cuda" else "CPU EP"
    return {**figures, "detail": f"{providers}, {threads} intra-op threads, graph optimisations on",
            "version": f"onnxruntime {onnxruntime.__version__}",
            "device_memory_note": "CPU: no device memory" if device == "cpu" else "not measured (ONNX Runtime's arena)"}


def _openvino_rows(target: BenchTarget, usable: tuple[bool, str], shape, runs, warmup, threads, progress) -> list[Row]:
    """OpenVINO's CPU plugin at FP32 and at BF16 (a row skipped with why where the CPU has no BF16: OpenVINO
    would compile FP32 and the row would lie); each row's precision is the lossier of the graph's and the
    arithmetic's (:func:`deploy_kit.compare.run_precision`)."""
    ok, why = usable
    ov = backends.get(backends.OPENVINO)
    rows = []
    for name, compute in ((backends.OPENVINO, "fp32"), (f"{backends.OPENVINO}-bf16", "bf16")):
        prec = run_precision(target.precision, compute)
        if not ok:
            rows.append(Row(name, "cpu", prec, reason=why))
        elif target.onnx is None:
            rows.append(Row(name, "cpu", prec, reason=target.onnx_missing or "no ONNX graph"))
        elif compute not in ov.precisions():
            rows.append(Row(name, "cpu", prec, reason="this CPU has no BF16 (AMX or AVX-512-BF16); OpenVINO runs FP32 here"))
        else:
            rows.append(_bench_row(progress, name, "cpu", prec, _child_openvino, target.onnx, compute, shape, runs,
                                   warmup, threads))
    return rows


def _child_openvino(path: str, compute: str, shape, runs: int, warmup: int, threads: int) -> dict[str, Any]:
    import openvino

    x = _input(shape)
    base = reset_peak_rss()
    ov = backends.get(backends.OPENVINO)
    runner = ov.open_runner(path, ov.run_options(precision=compute, threads=threads, cache_dir=""))
    try:
        times = _time(runner, x, runs, warmup)
        figures = _figures(times, shape, base)
    finally:
        runner.close()
    return {**figures, "detail": f"CPU plugin, {runner.precision.upper()} compiled (read back), {threads} threads",
            "version": f"openvino {openvino.__version__}", "device_memory_note": "CPU: no device memory"}


def _child_engine(plan: str, backend: str, shape, runs: int, warmup: int, threads: int) -> dict[str, Any]:
    x = _input(shape)
    base = reset_peak_rss()
    runner = backends.get(backend).open_runner(plan)
    try:
        times = _time(runner, x, runs, warmup)
        figures = _figures(times, shape, base)
    finally:
        runner.close()
    return {**figures, "detail": os.path.basename(plan), "version": backend,
            "device_memory_note": "not measured (engine device memory is not exposed through EngineRunner)"}


# --------------------------------------------------------------------------- outputs

def write_json(result: BenchResult, path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_text(path, json.dumps(result.to_dict(), indent=2) + "\n")


def write_plot(result: BenchResult, path: str) -> None:
    """A horizontal bar chart of median latency (p90 as a whisker) per backend, skipped rows greyed (Pillow)."""
    from PIL import Image, ImageDraw, ImageFont

    def font(size):
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1
            return ImageFont.load_default()

    f, small, title_font = font(14), font(12), font(16)
    rows = result.rows
    left, right, top, bar_h, gap = 230, 40, 64, 22, 12
    width = 1000
    height = top + len(rows) * (bar_h + gap) + 40
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    t = result.target
    shape = "x".join(str(v) for v in t.input_shape or ())
    d.text((12, 10), f"deploy-kit bench {t.stem}", fill="black", font=title_font)
    d.text((12, 34), f"input {shape}, {t.precision}; {result.threads} CPU threads; warm-up {result.warmup}, "
                     f"{result.runs} runs; bar = median latency, whisker = p90", fill=(80, 80, 80), font=small)
    ok = [r for r in rows if r.status == "ok"]
    scale_max = max((r.p90_ms for r in ok), default=1.0) or 1.0
    span = width - left - right - 170
    for i, r in enumerate(rows):
        y = top + i * (bar_h + gap)
        d.text((12, y + 3), r.backend, fill="black" if r.status == "ok" else (150, 150, 150), font=f)
        if r.status != "ok":
            reason = r.reason if len(r.reason) <= 95 else r.reason[:92] + "..."
            d.text((left, y + 4), f"skipped: {reason}", fill=(150, 150, 150), font=small)
            continue
        w = max(2, int(span * r.median_ms / scale_max))
        colour = (70, 110, 180) if r.device == "cpu" else (80, 160, 90)
        d.rectangle([left, y, left + w, y + bar_h], fill=colour)
        x90 = left + int(span * r.p90_ms / scale_max)
        d.line([left + w, y + bar_h // 2, x90, y + bar_h // 2], fill="black", width=1)
        d.line([x90, y + 4, x90, y + bar_h - 4], fill="black", width=1)
        label = f"{r.median_ms:.2f} ms (p90 {r.p90_ms:.2f})"
        if r.ratio_vs_pytorch is not None:
            label += f"  x{r.ratio_vs_pytorch:.2f}"
        d.text((max(left + w, x90) + 8, y + 4), label, fill="black", font=small)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path)
