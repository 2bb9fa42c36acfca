"""The build machine's commands: ``export``, ``bundle``, ``seam-check``, ``debug-precision``, ``bench``,
``triton`` and ``list-models``.

Thin shells over the library (:mod:`deploy_kit.pipeline`, :mod:`deploy_kit.bundle_writer`,
:mod:`deploy_kit.seamcheck`, :mod:`deploy_kit.precision.debug`, :mod:`deploy_kit.bench`,
:mod:`deploy_kit.serving.triton`, :mod:`deploy_kit.models.registry`): they check the flags, call one
function and print its result. Heavy packages, and every library module, are imported inside the
command bodies, so ``--help`` stays light (tests/test_imports.py).
"""

from __future__ import annotations

import os
import sys
import time

import click

from .. import backends
from ..errors import UsageError

DEFAULT_OUT = "deploy-kit-out"


def _model_options(scope: str):
    """The options that pick a model and its input (export, bench): variant, weights, size, TLC.

    Args:
        scope: a prefix for every help text (e.g. "Model targets: " where the command also takes files).
    """

    def text(t: str) -> str:
        return scope + t if scope else t[:1].upper() + t[1:]

    options = [
        click.option("--variant", help=text("model variant (see list-models). Default: read from --weights, else the model's default.")),
        click.option("--weights", type=click.Path(dir_okay=False), help=text("official checkpoint (.pth). Without it the model is randomly initialised (and the run says so).")),
        click.option("--height", type=int, help=text("fixed input height (default: the model's default size).")),
        click.option("--width", type=int, help=text("fixed input width (default: the model's default size).")),
        click.option("--tlc/--no-tlc", default=None, help=text("Test-time Local Converter (default: as upstream for the variant, e.g. on for GoPro/REDS NAFNet and motion-deblurring Restormer).")),
    ]

    def apply(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


@click.command("list-models")
@click.option("--all", "show_all", is_flag=True, help="Also list the tiny test variants.")
def list_models(show_all: bool) -> None:
    """List models and their variants (no torch import)."""
    from ..models.registry import get_spec, model_names

    for name in model_names():
        spec = get_spec(name)
        click.echo(f"{name}: {spec.summary}")
        click.echo(f"  licence: {spec.licence}; default size {spec.default_size[0]}x{spec.default_size[1]}")
        for v in spec.variants:
            if v.tiny and not show_all:
                continue
            mark = "*" if v.name == spec.default_variant else " "
            tags = [t for t in ("TLC on" if v.tlc_default and spec.supports_tlc else "", v.get_extra("degradation") or "") if t]
            click.echo(f"  {mark} {v.name:<26} {v.summary}{' [' + ', '.join(tags) + ']' if tags else ''}")
        for key, values in spec.options:
            click.echo(f"    --{key}: {' | '.join(values)} (default {values[0]})")


@click.command()
@click.argument("model", required=False)
@_model_options("")
@click.option("--module", "module_ref", metavar="FILE.py:NAME", help="Your own nn.Module instead of MODEL: a class or factory function in a Python file (or package.module:NAME). Importing the file RUNS it, as 'python FILE.py' would: only export code you trust. --weights then takes its checkpoint (strict key match).")
@click.option("--init-args", metavar="JSON", help="--module: keyword arguments for NAME, as a JSON object, e.g. '{\"scale\": 4}'.")
@click.option("--channels", type=int, help="Your model: input channels (default: inferred from the first convolution or the ONNX input).")
@click.option("--scale", type=int, help="Your model: output size / input size, e.g. 4 for x4 super-resolution (default: inferred by a probe run; it must agree).")
@click.option("--pad-multiple", type=int, help="Your model: height and width must be multiples of this (default: inferred by probe runs for --module, 1 for ONNX).")
@click.option("--value-range", type=click.Choice(["1", "255"]), default="1", show_default=True, help="--module: the value range the model expects ([0, 1] or [0, 255]); the graph's own input and output stay [0, 1].")
@click.option("--train-size", type=int, help="TLC training patch size (default 256; TLC kernel = 1.5 x train feature size).")
@click.option("--fp16", "fp16", is_flag=True, help="FP16 graph, end to end (range-safe rewrites at overflow sites; parity adds a true-FP16 row).")
@click.option("--int8", "int8", is_flag=True, help="INT8 explicit Q/DQ from a calibration set (see --calib).")
@click.option("--calib", help="INT8 calibration set: directory, glob, or manifest (default: the package-shipped set).")
@click.option("--calib-count", type=int, default=32, show_default=True, help="Number of calibration crops.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True)
@click.option("--int8-remainder", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True, help="Precision of the non-quantized remainder of an INT8 graph.")
@click.option("--degradation", help="How parity, calibration and quality images are degraded before they enter the model, as in deployment: 'noise:25', 'blur:9', 'blur:9+noise:5', 'downscale:4' (bicubic, for a x4 super-resolution model), or 'none' for clean photos (default: the variant's task, see list-models; downscale:S for your own xS model).")
@click.option("--head", type=click.Choice(["cls", "features"]), help="PVT output: class logits or the four stage feature maps (default cls).")
@click.option("--backend", type=click.Choice([backends.AUTO, *backends.names(engines=True), "none"]), default="auto", show_default=True, help="Engine backend; auto = tensorrt-rtx if installed (it builds without a GPU), else tensorrt, else none.")
@click.option("--compute-capability", "compute_capabilities", multiple=True, help="TensorRT-RTX target (sm75, sm86, sm89, sm120, sm121); repeatable. A100/H100/H200 (sm80/sm90) are no TensorRT-RTX target: use --backend tensorrt there.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="TensorRT timing cache file (tensorrt backend; RTX uses a runtime cache instead).")
@click.option("--stop-after", type=click.Choice(["simplified", "precision", "engine"]), help="Stop the chain after this stage: simplified (the FP32 ONNX and its parity), precision (the FP16/INT8 ONNX and its checks) or engine.")
@click.option("--samples", type=int, default=2, show_default=True, help="Sample images used for parity.")
@click.option("--batch", type=int, default=1, show_default=True, help="Static batch N of the graph and engine: input (N, C, H, W), N images (tiles) per pass. Parity stacks the samples N at a time; names gain -b{N} when N > 1.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random weights, input degradation noise and calibration crops.")
@click.option("--bundle", "bundle", is_flag=True, help="Also write <stem>.bundle/ for the device: the precision ONNX, manifest, reference inputs/outputs, build.sh (see 'deploy-kit bundle --help').")
@click.option("--out", "out_dir", default=DEFAULT_OUT, show_default=True, type=click.Path(file_okay=False), help="Output directory.")
def export(model, variant, weights, height, width, tlc, module_ref, init_args, channels, scale, pad_multiple,
           value_range, train_size, fp16, int8, calib, calib_count, calib_method,
           int8_remainder, degradation, head, backend, compute_capabilities, timing_cache, stop_after, samples, batch, seed, bundle,
           out_dir) -> None:
    """Export MODEL (nafnet | restormer | pvt), your own module (--module FILE.py:NAME) or
    your own ONNX file (MODEL = model.onnx) through the whole chain.

    ONNX at a fixed size (TLC unrolled to static ops) -> simplified -> FP16/INT8 -> engine ->
    parity against the PyTorch FP32 reference (for an ONNX file: that graph in ONNX Runtime FP32).
    Writes {model}-{variant}-{H}x{W}[...].{precision}.onnx ({name}-{H}x{W}... for your own model),
    the .plan with its .json manifest, and a parity report (JSON, Markdown, heatmap PNG); a
    global-context model (batch 1) also gets <stem>.<precision>.sync.onnx for 'run --context sync'.
    Exit code 0 when every parity gate passes, 1 when one fails, 2 for bad input.
    """
    from .._deps import require_export

    require_export()
    from ..precision.int8 import Int8Options
    from ..request import resolve_request

    if fp16 and int8:
        raise UsageError("--fp16 and --int8 are mutually exclusive; pick one")
    if not int8 and calib:
        raise UsageError("--calib only applies with --int8")
    if int8:
        from ..precision.calibration import MIN_IMAGES

        if calib_count < MIN_IMAGES:  # before minutes of export work, not at the INT8 stage
            raise UsageError(f"--calib-count must be at least {MIN_IMAGES}; got {calib_count}")
    if samples < 1:
        raise UsageError(f"--samples must be at least 1; got {samples}")
    precision = "fp16" if fp16 else "int8" if int8 else "fp32"
    user = module_ref is not None or (model is not None and model.lower().endswith(".onnx"))
    if module_ref is not None and model is not None:
        raise UsageError(f"give MODEL ({model}) or --module, not both")
    if model is None and module_ref is None:
        raise UsageError("give MODEL (nafnet | restormer | pvt | FILE.onnx) or --module FILE.py:NAME")
    if user:
        for flag, value in (("--variant", variant), ("--head", head)):
            if value is not None:
                raise UsageError(f"{flag} applies to the built-in models, not to your own")
        from ..request import resolve_user_request

        req = resolve_user_request(module_ref or model, module=module_ref is not None, init_args=init_args,
                                   weights=weights, height=height, width=width, channels=channels, scale=scale,
                                   pad_multiple=pad_multiple, value_range=float(value_range), tlc=tlc,
                                   train_size=train_size, precision=precision, degradation=degradation, seed=seed,
                                   batch=batch)
        click.echo(f"your model: {req.source.describe()} (flags, or inferred by probe runs; pass the flag to override)",
                   err=True)
    else:
        for flag, value in (("--init-args", init_args), ("--channels", channels), ("--scale", scale),
                            ("--pad-multiple", pad_multiple), ("--value-range", None if value_range == "1" else value_range)):
            if value is not None:
                raise UsageError(f"{flag} applies to your own model (--module or an .onnx file), not to {model}")
        req = resolve_request(model, variant=variant, weights=weights, height=height, width=width, tlc=tlc,
                              train_size=train_size, precision=precision,
                              degradation=degradation, options={"head": head}, seed=seed, batch=batch)
    chosen_backend = _resolve_backend(backend)
    # the chosen engine backend's typed options; a flag it does not take is one line, before any work
    build_options = backends.get(chosen_backend).build_options(
        compute_capability=compute_capabilities, timing_cache=timing_cache) if chosen_backend else None
    _run_and_summarise(req, out_dir, chosen_backend, stop_after, samples,
                       Int8Options(calib=calib, calib_count=calib_count, method=calib_method, remainder=int8_remainder),
                       build_options, bundle)


def _resolve_backend(name: str) -> str | None:
    if name == "none":
        return None
    if name != "auto":
        return name
    chosen = backends.default_builder()
    if chosen is None:
        click.echo("note: no engine backend installed (pip install 'deploy-kit[rtx]'); stopping before the engine", err=True)
    return chosen.name if chosen else None


def _run_and_summarise(req, out_dir, backend, stop_after, samples, int8, build_options, bundle=False) -> None:
    from ..fsutil import disk_size, human_size
    from ..pipeline import run_export

    started = time.perf_counter()
    step = {"n": 0, "t": 0.0}

    def progress(event: str, text: str) -> None:
        if event == "start":
            step["n"] += 1
            step["t"] = time.perf_counter()
            click.echo(f"[{step['n']}] {text} ...", err=True)
        elif event == "done":
            click.echo(f"    done in {time.perf_counter() - step['t']:.1f} s - {text}", err=True)
        elif event == "detail":
            click.echo(f"    {text}", err=True)

    res = run_export(req, out_dir=out_dir, backend=backend, stop_after=stop_after, samples=samples,
                     int8=int8, build_options=build_options, progress=progress, bundle=bundle)
    click.echo("")
    peak = "" if res.peak_rss_mib is None else f", peak RSS {human_size(int(res.peak_rss_mib * 2**20))} (with child processes)"
    click.echo(f"deploy-kit {req.model} {res.request.variant} {req.height}x{req.width} {req.precision}"
               f"{' TLC' if req.tlc else ''}{f' batch {req.batch}' if req.batch > 1 else ''} - "
               f"{time.perf_counter() - started:.1f} s{peak}")
    for note in res.notes:
        click.echo("  note: " + note.replace("\n", "\n        "))
    click.echo("\nArtifacts:")
    for label, path in res.artifacts:
        size = human_size(disk_size(path)) if os.path.exists(path) else "?"
        click.echo(f"  {label:<28} {path}  ({size})")
    click.echo(f"\nParity against the reference ({res.report.reference}):")
    click.echo("  " + res.report.table().replace("\n", "\n  "))
    click.echo("\nNext:")
    for s in res.next_steps:
        click.echo(f"  {s}")
    failures = res.report.failures()
    if failures:
        click.echo("\nPARITY FAILED: " + " | ".join(failures), err=True)
        sys.exit(1)
    click.echo("\nparity: all gates passed")


@click.command()
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Bundle folder (default: <artifact stem>.bundle next to it).")
@click.option("--samples", type=int, default=2, show_default=True, help="Reference inputs (sample photos, degraded as the model's task).")
def bundle(artifact, out_dir, samples) -> None:
    """Write a device bundle from a deploy-kit ONNX (FP16, INT8 or FP32): the graph to build on the
    target, one manifest (sha256 of every file), reference inputs with their PyTorch FP32 outputs,
    build.sh (trtexec, TensorRT 10/11, GPU or DLA) and a README. Needs the export extra (torch)."""
    from .._deps import require_export
    from ..bundle_writer import bundle_artifact

    require_export()
    if not os.path.isfile(artifact):
        raise UsageError(f"artifact not found: {artifact}")
    if samples < 1:
        raise UsageError(f"--samples must be at least 1; got {samples}")
    info = bundle_artifact(artifact, out_dir, samples)
    click.echo(f"bundle: {info.line()}")
    click.echo(f"next, on the device: deploy-kit build {info.path} --backend tensorrt && deploy-kit verify {info.path}")


@click.command("seam-check")
@click.argument("onnx_path", type=click.Path(dir_okay=False))
@click.option("--overlap", type=int, multiple=True, help="Tile overlap in pixels; repeatable for a table (default: the runtime's DEFAULT_OVERLAP).")
@click.option("--weights", type=click.Path(dir_okay=False), help="Checkpoint to use instead of the path recorded in the ONNX.")
@click.option("--height", type=int, help="Photo height (default 3.5 x the engine height).")
@click.option("--width", type=int, help="Photo width (default 3.75 x the engine width).")
@click.option("--image", type=click.Path(dir_okay=False), help="Photo to tile instead of the bundled sample (used as is, not degraded).")
@click.option("--border", type=int, default=0, show_default=True, help="Extra reflect padding around the photo before tiling.")
@click.option("--min-seam-psnr", type=float, help="Exit 1 when the seam PSNR of any run is below this (dB).")
@click.option("--context", "contexts", multiple=True, metavar="tile|sync[:N]", help="Tiling modes to measure, repeatable (default: tile, and sync:2 and sync:3 when the sync graph <stem>.sync.onnx is beside the ONNX).")
@click.option("--backend", type=click.Choice(backends.names(engines=False)), default=backends.ONNXRUNTIME, show_default=True, help="Graph runner that runs the tiles (ONNX Runtime on the CPU, or OpenVINO's CPU plugin at its auto precision).")
def seam_check_cmd(onnx_path, overlap, weights, height, width, image, border, min_seam_psnr, contexts, backend) -> None:
    """Tile ONNX_PATH (a fixed-size deploy-kit ONNX) over a larger photo and compare with the
    full-image PyTorch FP32 output: overall PSNR, PSNR around tile boundaries (seam) and
    elsewhere, the worst boundary and the times. The tiles run on --backend (default ONNX
    Runtime on the CPU). A global-context model is measured both ways: tiles with their own
    statistics, and synchronised (sync:N).
    """
    from .._deps import require_export

    require_export()
    from ..seamcheck import SeamChecker

    if not os.path.isfile(onnx_path):
        raise UsageError(f"ONNX file not found: {onnx_path}")
    for v, name in ((height, "--height"), (width, "--width")):
        if v is not None and v < 1:
            raise UsageError(f"{name} must be positive; got {v}")
    if border < 0:
        raise UsageError(f"--border must be >= 0; got {border}")
    if image is not None and not os.path.isfile(image):
        raise UsageError(f"image not found: {image}")
    from ..runtime.context import parse_context

    for c in contexts:
        parse_context(c)  # a bad value: one line before the reference is computed
    # a backend that cannot run here: one line from SeamChecker, before the reference is computed
    checker = SeamChecker(onnx_path, weights, height, width, image, backend=backend)
    try:
        from ..runtime.tiling import DEFAULT_OVERLAP

        overlaps = overlap or (min(DEFAULT_OVERLAP, min(checker.tile) // 4),)
        for o in overlaps:
            if o < 0 or o >= min(checker.tile):
                raise UsageError(f"--overlap must be in [0, {min(checker.tile) - 1}] for a {checker.tile[0]}x{checker.tile[1]} engine; got {o}")
        click.echo(f"photo: {checker.photo}; reference: {checker.reference} full image ({checker.reference_s:.2f} s); "
                   f"tiles on {checker.runs_on}")
        if checker.sync_note and not contexts:
            click.echo(f"sync contexts not measured: {checker.sync_note}")
        modes = contexts or (("tile", "sync:2", "sync:3") if checker.sync_runner is not None else ("tile",))
        results = [checker.measure(o, border, context=c) for c in modes for o in overlaps]
    finally:
        checker.close()
    for r in results:
        click.echo(r.line())
    if min_seam_psnr is not None:
        bad = [r for r in results if not r.seam_psnr >= min_seam_psnr]
        if bad:
            click.echo("SEAM CHECK FAILED: " + " | ".join(f"overlap {r.overlap}: seam {r.seam_psnr:.2f} dB < {min_seam_psnr}" for r in bad), err=True)
            sys.exit(1)


@click.command("debug-precision")
@click.argument("onnx_path", type=click.Path(dir_okay=False))
@click.option("--target-psnr", type=float, default=50.0, show_default=True, help="PSNR (dB) the FP16 graph must reach on the true-FP16 check.")
@click.option("--samples", type=int, default=2, show_default=True, help="Sample photos at the graph's input shape.")
@click.option("--inputs", "inputs_npz", type=click.Path(dir_okay=False), help="Inputs as an .npz (arrays of the graph's input shape) instead of sample photos.")
@click.option("--max-evals", type=int, default=40, show_default=True, help="Most true-FP16 evaluations the search may run.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="FP16 graph to write (default <stem>.fp16-debug.onnx; the JSON report beside it).")
def debug_precision_cmd(onnx_path, target_psnr, samples, inputs_npz, max_evals, out_path) -> None:
    """Find a small set of nodes of ONNX_PATH (an FP32 ONNX) to keep FP32 so that the FP16 graph
    reaches --target-psnr on the true-FP16 check (every FP16 tensor rounded, reductions summed in
    FP16; reference: the FP32 ONNX on ONNX Runtime). Exit 0 when met, 1 when not, 2 bad input.
    """
    from .._deps import require_export

    require_export()
    from ..precision.debug import debug_precision

    res = debug_precision(onnx_path, target_psnr=target_psnr, samples=samples, max_evals=max_evals,
                          out_path=out_path, inputs_npz=inputs_npz, log=None)
    for line in res.lines():
        click.echo(line)
    click.echo(f"wrote {res.output} and its .json report")
    if not res.met:
        click.echo(f"DEBUG-PRECISION: target {target_psnr:g} dB not met (best {res.psnr:.2f} dB)", err=True)
        sys.exit(1)


@click.command("bench")
@click.argument("target")
@_model_options("Model targets: ")
@click.option("--precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True, help="Model targets: precision of the exported graph that ONNX Runtime and the engine run (PyTorch stays FP32).")
@click.option("--torch-module", type=click.Choice(["eager", "static"]), default="eager", show_default=True, help="Model targets: the PyTorch module timed (the baseline of every ratio): the upstream model as a user would run it (eager; TLC as upstream computes it) or deploy-kit's export form (static: TLC unrolled, range-safe norms, LayerNorm affines folded into the next conv).")
@click.option("--runs", type=int, default=20, show_default=True, help="Timed runs per backend (median and p90 over these).")
@click.option("--warmup", type=int, default=3, show_default=True, help="Untimed runs per backend first.")
@click.option("--threads", type=int, help="Intra-op threads of every CPU backend (torch and ONNX Runtime); default: os.cpu_count().")
@click.option("--out", "out_dir", default=DEFAULT_OUT, show_default=True, type=click.Path(file_okay=False), help="Output directory (JSON and plot; the model export happens in a temporary folder inside it).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="JSON report path (default <out>/bench-<stem>.json).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="PNG latency plot (default: next to the JSON, .png).")
def bench_cmd(target, variant, weights, height, width, tlc, precision, torch_module, runs, warmup, threads, out_dir,
              json_path, plot_path) -> None:
    """Latency (median, p90), throughput (MP/s) and peak memory of TARGET on every backend here.

    \b
    TARGET is one of:
      a model name       nafnet | restormer | pvt (with --variant, --height, ...): exported to ONNX
                         first; rows for PyTorch eager FP32 (the baseline of every ratio), and on a
                         CUDA GPU PyTorch FP16 / channels_last / torch.compile
      an .onnx, a .plan (with its .json manifest) or a bundle folder
    Then ONNX Runtime (CPU, CUDA EP) and the TensorRT-RTX / TensorRT engine. Each backend runs in
    its own process (its peak RSS is its own); a backend that cannot run here is listed with why.
    Writes a JSON report and a PNG plot.
    """
    if runs < 1:
        raise UsageError(f"--runs must be at least 1; got {runs}")
    if warmup < 0:
        raise UsageError(f"--warmup must be 0 or more; got {warmup}")
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be at least 1; got {threads}")
    from ..bench import artifact_target, model_target, run_bench, write_json, write_plot

    model_flags = {"--variant": variant, "--weights": weights, "--height": height, "--width": width, "--tlc/--no-tlc": tlc,
                   "--precision": None if precision == "fp32" else precision,
                   "--torch-module": None if torch_module == "eager" else torch_module}
    looks_like_path = os.path.exists(target) or target.endswith((".onnx", ".plan", ".bundle", os.sep)) or os.sep in target
    if looks_like_path:
        given = [k for k, v in model_flags.items() if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} to model targets only; "
                             f"{target} is an artifact")
        bench_target = artifact_target(target)
    else:
        from .._deps import require_export
        from ..models.registry import get_spec
        from ..request import resolve_request

        get_spec(target)  # an unknown model: one line before the export chain is checked
        require_export()
        req = resolve_request(target, variant=variant, weights=weights, height=height, width=width, tlc=tlc,
                              precision=precision)
        bench_target = model_target(req, torch_module)
    json_path = json_path or os.path.join(out_dir, f"bench-{bench_target.stem}.json")
    plot_path = plot_path or (json_path[: -len(".json")] if json_path.endswith(".json") else json_path) + ".png"
    result = run_bench(bench_target, out_dir=out_dir, runs=runs, warmup=warmup, threads=threads,
                       progress=lambda text: click.echo(text, err=True))
    write_json(result, json_path)
    write_plot(result, plot_path)
    shape = "x".join(str(v) for v in bench_target.input_shape)
    click.echo("")
    click.echo(f"deploy-kit bench {bench_target.stem}: input {shape}, {bench_target.precision} graph; "
               f"{result.threads} threads for every CPU backend (torch intra-op, ONNX Runtime intra-op); "
               f"warm-up {warmup}, {runs} timed runs")
    for note in result.notes:
        click.echo(f"  note: {note}")
    click.echo(result.table())
    base = next((r for r in result.rows if r.backend == "pytorch" and r.status == "ok"), None)
    if base is not None:
        for r in result.rows:
            if r.status == "ok" and r.backend != "pytorch":
                click.echo(f"{r.backend}/pytorch latency ratio: {r.ratio_vs_pytorch:.2f} "
                           f"({1 / r.ratio_vs_pytorch:.2f}x the speed of PyTorch eager FP32 on the CPU)")
    click.echo(f"wrote {json_path} and {plot_path}")


@click.command("triton")
@click.argument("source", type=click.Path())
@click.option("--repo", required=True, type=click.Path(file_okay=False), help="Triton model repository folder (created if missing; other models in it are left alone).")
@click.option("--name", help="Base model name (default: the bundle's graph name, e.g. nafnet-tiny-64x64-tlc-fp16).")
@click.option("--instances", type=int, default=1, show_default=True, help="instance_group count of each model: GPU instances of the plan, CPU instances of the others.")
@click.option("--threads", type=int, default=0, show_default=True, help="ONNX Runtime intra-op threads per instance (NAME_onnx, and NAME_tiled's tiles with --tiles-through in-process); 0 = ONNX Runtime's default, every core.")
@click.option("--tiles-through", type=click.Choice(["auto", "plan", "onnx", "in-process"]), default="auto", show_default=True, help="How NAME_tiled runs each tile: plan / onnx = a request to NAME / NAME_onnx inside the server (BLS); auto = plan when the repository has one, else onnx; in-process = deploy-kit's ONNX Runtime runner in the python backend process (CPU nodes, or a server without the onnxruntime backend).")
@click.option("--overlap", type=int, help="Tile overlap of NAME_tiled in pixels (default: as 'deploy-kit run').")
@click.option("--cpu-backend", type=click.Choice(backends.names(engines=False)), default=backends.ONNXRUNTIME, show_default=True, help="With --tiles-through in-process: the CPU runner of NAME_tiled's tiles (openvino: docs/cpu.md; it must be installed in the python backend's Python).")
@click.option("--context", "context", default="tile", show_default=True, metavar="tile|sync[:N]", help="NAME_tiled's context mode for global-context models: 'tile' normalises each tile by its own statistics; 'sync:N' runs N passes (default 2) through the bundle's sync graph on ONNX Runtime in the python backend, so tiles match the full image (config parameter 'context').")
def triton_cmd(source, repo, name, instances, threads, tiles_through, overlap, cpu_backend, context) -> None:
    """Write Triton Inference Server models for SOURCE (a bundle, or a TensorRT plan built inside one).

    \b
    Into --repo:
      NAME/        platform tensorrt_plan, 1/model.plan: the engine's exact I/O (needs a plan
                   built with --backend tensorrt; TensorRT-RTX plans are left out)
      NAME_onnx/   platform onnxruntime_onnx, 1/model.onnx: the same graph for CPU nodes
      NAME_tiled/  backend python: images of any size (N, C, H, W), tiled and blended by
                   deploy-kit's runtime, as 'deploy-kit run' does
    Every value comes from the manifest and the graph. NAME_tiled needs deploy-kit installed in
    the Python that runs Triton's python backend.
    """
    from ..serving.triton import write_repository

    info = write_repository(source, repo, name=name, instances=instances, threads=threads, tiles_through=tiles_through,
                            overlap=overlap, context=context, cpu_backend=cpu_backend)
    for model in info.models:
        click.echo(f"model: {model.path} ({model.kind}; {model.note})")
    for note in info.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"serve: tritonserver --model-repository={info.repo}   (docs/triton.md: the container command)")
