"""The ``deploy-kit`` command line. Heavy packages are imported inside command bodies only.

Errors caused by the user print one line on stderr and exit 2 (``--debug`` shows the
traceback); a failed parity gate exits 1.
"""

from __future__ import annotations

import os
import sys
import time

import click

from . import __version__
from .errors import DeployKitError, UsageError

DEFAULT_OUT = "deploy-kit-out"


class _State:
    debug = False


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="deploy-kit")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def cli(debug: bool) -> None:
    """Export NAFNet, Restormer and PVT to verified TensorRT engines.

    \b
    Typical use:
      deploy-kit list-models
      deploy-kit export nafnet --fp16                  # ONNX -> FP16 -> engine -> parity
      deploy-kit export restormer --fp16 --height 720 --width 1280
      deploy-kit verify deploy-kit-out/<artifact>.onnx
    """
    _State.debug = debug


@cli.command("list-models")
@click.option("--all", "show_all", is_flag=True, help="Also list the tiny test variants.")
def list_models(show_all: bool) -> None:
    """List models and their variants (no torch import)."""
    from .models.registry import get_spec, model_names

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


@cli.command()
@click.argument("model")
@click.option("--variant", help="Model variant (see list-models). Default: read from --weights, else the model's default.")
@click.option("--weights", type=click.Path(dir_okay=False), help="Official checkpoint (.pth). Without it the model is randomly initialised (and the run says so).")
@click.option("--height", type=int, help="Fixed input height (default: the model's default size).")
@click.option("--width", type=int, help="Fixed input width (default: the model's default size).")
@click.option("--tlc/--no-tlc", default=None, help="Test-time Local Converter (default: as upstream for the variant, e.g. on for GoPro/REDS NAFNet and motion-deblurring Restormer).")
@click.option("--train-size", type=int, help="TLC training patch size (default 256; TLC kernel = 1.5 x train feature size).")
@click.option("--fp16", "fp16", is_flag=True, help="FP16 graph with FP32 islands at overflow sites.")
@click.option("--int8", "int8", is_flag=True, help="INT8 explicit Q/DQ from a calibration set (see --calib).")
@click.option("--calib", help="INT8 calibration set: directory, glob, or manifest (default: the package-shipped set).")
@click.option("--calib-count", type=int, default=32, show_default=True, help="Number of calibration crops.")
@click.option("--calib-method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax", show_default=True)
@click.option("--int8-remainder", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True, help="Precision of the non-quantized remainder of an INT8 graph.")
@click.option("--degradation", help="How parity, calibration and quality images are degraded before they enter the model, as in deployment: 'noise:25', 'blur:9', 'blur:9+noise:5', or 'none' for clean photos (default: the variant's task, see list-models).")
@click.option("--head", type=click.Choice(["cls", "features"]), help="PVT output: class logits or the four stage feature maps (default cls).")
@click.option("--backend", type=click.Choice(["auto", "tensorrt-rtx", "tensorrt", "none"]), default="auto", show_default=True, help="Engine backend; auto = tensorrt-rtx if installed, else tensorrt, else none.")
@click.option("--compute-capability", "compute_capabilities", multiple=True, help="TensorRT-RTX target (sm75, sm80, sm86, sm89, sm120); repeatable.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="TensorRT timing cache file (tensorrt backend; RTX uses a runtime cache instead).")
@click.option("--stop-after", type=click.Choice(["onnx", "simplified", "precision", "engine"]), help="Stop the chain after this stage.")
@click.option("--samples", type=int, default=2, show_default=True, help="Sample images used for parity.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for random weights, input degradation noise and calibration crops.")
@click.option("--out", "out_dir", default=DEFAULT_OUT, show_default=True, type=click.Path(file_okay=False), help="Output directory.")
def export(model, variant, weights, height, width, tlc, train_size, fp16, int8, calib, calib_count, calib_method,
           int8_remainder, degradation, head, backend, compute_capabilities, timing_cache, stop_after, samples, seed, out_dir) -> None:
    """Export MODEL (nafnet | restormer | pvt) through the whole chain.

    ONNX at a fixed size (TLC unrolled to static ops) -> simplified -> FP16/INT8 -> engine ->
    parity against the PyTorch FP32 reference. Writes {model}-{variant}-{H}x{W}[...].{precision}.onnx,
    the .plan with its .json manifest, and a parity report (JSON, Markdown, heatmap PNG).
    Exit code 0 when every parity gate passes, 1 when one fails, 2 for bad input.
    """
    from .models.registry import get_spec
    from .pipeline import Int8Settings, validate_request
    from .specs import ExportRequest, TLCConfig

    spec = get_spec(model)
    if fp16 and int8:
        raise UsageError("--fp16 and --int8 are mutually exclusive; pick one")
    precision = "fp16" if fp16 else "int8" if int8 else "fp32"
    if not int8 and calib:
        raise UsageError("--calib only applies with --int8")
    if degradation is not None:
        from .precision.calibration import parse_degradation

        parse_degradation(degradation)  # a bad spec stops here, with one line
    if calib_count < 1:
        raise UsageError(f"--calib-count must be at least 1; got {calib_count}")
    if samples < 1:
        raise UsageError(f"--samples must be at least 1; got {samples}")
    if variant is not None:
        spec.variant(variant)  # unknown variant: one line listing the known ones
    if weights is not None and not os.path.isfile(weights):
        raise UsageError(f"weights file not found: {weights}")
    h = spec.default_size[0] if height is None else height
    w = spec.default_size[1] if width is None else width
    options = []
    for key, values in spec.options:
        given = {"head": head}.get(key)
        options.append((key, given or values[0]))
    if head is not None and not any(k == "head" for k, _ in spec.options):
        raise UsageError(f"--head does not apply to {model}")

    if tlc and not spec.supports_tlc:
        raise UsageError(f"{model} has no TLC form; drop --tlc")
    if train_size is not None:
        if not spec.supports_tlc:
            raise UsageError(f"--train-size only applies to models with TLC; {model} has none")
        if tlc is False:
            raise UsageError("--train-size only applies with TLC; drop --no-tlc or --train-size")
        if train_size < 16:
            raise UsageError(f"--train-size must be at least 16; got {train_size}")

    if variant is None and weights is not None:
        # the checkpoint decides the variant (and with it the TLC default)
        from .models import get_adapter
        from .models.checkpoint import match_variant, read_state_dict

        variant = match_variant(spec, get_adapter(model).detect_hparams(read_state_dict(weights))).name
    vname = variant or spec.default_variant
    tlc_default = next((v.tlc_default for v in spec.variants if v.name == vname), False)
    use_tlc = spec.supports_tlc and (tlc if tlc is not None else tlc_default)
    tlc_cfg = TLCConfig.from_train_size(train_size or 256) if use_tlc else None
    req = ExportRequest(model, vname, h, w, precision, tlc_cfg, weights, tuple(options), seed, degradation=degradation)
    validate_request(req)
    chosen_backend = _resolve_backend(backend)
    build_options = {"compute_capabilities": compute_capabilities, "timing_cache": timing_cache}
    _run_and_summarise(req, out_dir, chosen_backend, stop_after, samples,
                       Int8Settings(calib, calib_count, calib_method, int8_remainder), build_options)


def _resolve_backend(name: str) -> str | None:
    from ._deps import available

    if name == "none":
        return None
    if name != "auto":
        return name
    if available("tensorrt_rtx"):
        return "tensorrt-rtx"
    if available("tensorrt"):
        return "tensorrt"
    click.echo("note: no engine backend installed (pip install 'deploy-kit[rtx]'); stopping before the engine", err=True)
    return None


def _run_and_summarise(req, out_dir, backend, stop_after, samples, int8, build_options) -> None:
    from .fsutil import human_size
    from .pipeline import run_export

    started = time.perf_counter()
    step = {"n": 0, "t": 0.0}

    def progress(event: str, text: str) -> None:
        if event == "start":
            step["n"] += 1
            step["t"] = time.perf_counter()
            click.echo(f"[{step['n']}] {text} ...", err=True)
        elif event == "done":
            click.echo(f"    done in {time.perf_counter() - step['t']:.1f} s - {text}", err=True)

    res = run_export(req, out_dir=out_dir, backend=backend, stop_after=stop_after, samples=samples,
                     int8=int8, build_options=build_options, progress=progress)
    click.echo("")
    click.echo(f"deploy-kit {req.model} {res.request.variant} {req.height}x{req.width} {req.precision}"
               f"{' TLC' if req.tlc else ''} - {time.perf_counter() - started:.1f} s")
    for note in res.notes:
        click.echo("  note: " + note.replace("\n", "\n        "))
    click.echo("\nArtifacts:")
    for label, path in res.artifacts:
        size = human_size(os.path.getsize(path)) if os.path.exists(path) else "?"
        click.echo(f"  {label:<28} {path}  ({size})")
    click.echo("\nParity against the PyTorch FP32 reference:")
    click.echo("  " + res.report.table().replace("\n", "\n  "))
    click.echo("\nNext:")
    for s in res.next_steps:
        click.echo(f"  {s}")
    failures = res.report.failures()
    if failures:
        click.echo("\nPARITY FAILED: " + " | ".join(failures), err=True)
        sys.exit(1)
    click.echo("\nparity: all gates passed")


@cli.command()
@click.argument("onnx_path", type=click.Path(dir_okay=False))
@click.option("--backend", type=click.Choice(["tensorrt-rtx", "tensorrt"]), default="tensorrt-rtx", show_default=True)
@click.option("--compute-capability", "compute_capabilities", multiple=True, help="TensorRT-RTX target; repeatable.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="TensorRT timing cache file.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Plan path (default: next to the ONNX).")
def build(onnx_path, backend, compute_capabilities, timing_cache, out_path) -> None:
    """Build a strongly typed engine from an ONNX file written by deploy-kit (or any static ONNX)."""
    from .engine import get_backend
    from .export import read_metadata
    from .fsutil import human_size, write_text

    if not os.path.isfile(onnx_path):
        raise UsageError(f"ONNX file not found: {onnx_path}")
    meta = _read_onnx_metadata(onnx_path, read_metadata)
    eng = get_backend(backend)
    base = onnx_path[:-5] if onnx_path.endswith(".onnx") else onnx_path
    plan = out_path or f"{base}.{eng.major()}.plan"
    click.echo(f"building {plan} with {eng.name} {eng.version()} ...", err=True)
    res = eng.build(onnx_path, plan, compute_capabilities=compute_capabilities, timing_cache=timing_cache)
    import json

    write_text(plan + ".json", json.dumps({**meta, "onnx": os.path.basename(onnx_path), "plan": os.path.basename(plan),
                                           "backend": {"name": eng.name, "version": res.version, **res.details},
                                           "build_seconds": round(res.seconds, 2)}, indent=2, default=str))
    click.echo(f"engine: {plan} ({human_size(res.size)}, {res.seconds:.1f} s); manifest: {plan}.json")


def _read_onnx_metadata(path, reader):
    try:
        return reader(path)
    except Exception as exc:  # noqa: BLE001 - a corrupt file is a user error here
        raise UsageError(f"{path} is not a readable ONNX file ({type(exc).__name__})") from exc


@cli.command()
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--samples", type=int, default=2, show_default=True)
def verify(artifact, samples) -> None:
    """Re-run parity for ARTIFACT (a deploy-kit .onnx, or a .plan with its .json manifest).

    The model, variant, size, TLC settings and weights are read from the artifact's metadata.
    Engines run only where a GPU runtime exists; otherwise that check is reported as skipped.
    """
    from .verify import verify_artifact

    if not os.path.isfile(artifact):
        raise UsageError(f"artifact not found: {artifact}")
    report = verify_artifact(artifact, samples=samples)
    click.echo(report.table())
    failures = report.failures()
    if failures:
        click.echo("PARITY FAILED: " + " | ".join(failures), err=True)
        sys.exit(1)
    click.echo("parity: all gates passed" if any(c.status == "pass" for c in report.checks) else "parity: nothing could be run here")


@cli.command()
@click.argument("engine", type=click.Path(dir_okay=False))
@click.argument("images", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", default=".", type=click.Path(file_okay=False), show_default=True)
def run(engine, images, out_dir) -> None:
    """Run ENGINE on IMAGE files (needs a CUDA GPU and the engine's TensorRT runtime)."""
    import numpy as np

    from .runtime import EngineSession, load_manifest, postprocess, preprocess
    from .runtime.cuda import gpu_available

    for p in (engine, *images):
        if not os.path.isfile(p):
            raise UsageError(f"file not found: {p}")
    ok, why = gpu_available()
    if not ok:
        raise UsageError(f"cannot run an engine here: {why}")
    manifest = load_manifest(engine)
    _, ch, h, w = manifest["input_shape"]
    from PIL import Image

    sess = EngineSession(engine, manifest["backend"]["name"])
    try:
        for p in images:
            img = np.asarray(Image.open(p).convert("RGB"))
            if img.shape[:2] != (h, w):
                raise UsageError(f"{p} is {img.shape[1]}x{img.shape[0]}; this engine takes {w}x{h}")
            out = sess.run({"input": preprocess(img, ch)})
            first = next(iter(out.values()))
            dst = os.path.join(out_dir, os.path.splitext(os.path.basename(p))[0] + ".out.png")
            Image.fromarray(postprocess(first)).save(dst)
            click.echo(dst)
    finally:
        sess.close()


@cli.command()
def env() -> None:
    """Show versions of the packages deploy-kit uses and whether a GPU runtime is present."""
    import importlib.metadata as md

    from .runtime.cuda import gpu_available

    click.echo(f"deploy-kit {__version__}, Python {sys.version.split()[0]}")
    for dist in ("torch", "onnx", "onnxruntime", "onnxsim", "onnxslim", "onnxconverter-common",
                 "tensorrt-rtx-cu13", "tensorrt", "tensorrt-cu13", "polygraphy", "click", "numpy"):
        try:
            click.echo(f"  {dist:<22} {md.version(dist)}")
        except md.PackageNotFoundError:
            click.echo(f"  {dist:<22} not installed")
    ok, why = gpu_available()
    click.echo(f"  GPU runtime            {'yes' if ok else 'no - ' + why}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line + exit 2."""
    try:
        cli.main(args=argv, prog_name="deploy-kit", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        if _State.debug:
            raise
        hint = f" (see 'deploy-kit {exc.ctx.command_path.split(' ', 1)[1]} --help')" if exc.ctx and " " in exc.ctx.command_path else " (see 'deploy-kit --help')"
        click.echo(f"error: {exc.format_message()}{hint}", err=True)
        sys.exit(2)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(2)
    except DeployKitError as exc:
        if _State.debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
