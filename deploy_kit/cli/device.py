"""The device commands: ``run``, ``verify``, ``build`` and ``env``.

They run on the target (a Jetson, a GPU server) with only the core installed, so each is a thin shell over
the device half (:mod:`deploy_kit.runtime`, :mod:`deploy_kit.verify`, :mod:`deploy_kit.engine`,
:mod:`deploy_kit.doctor`) and never imports the build half, with one door: ``verify`` of an ONNX or a
plan (not a bundle) rebuilds the PyTorch reference, so that branch imports
:func:`deploy_kit.artifact.verify_artifact` inside the command body, after checking that the export
extra is installed (``.importlinter`` names this one import; tests/integration/test_device_modules.py
checks what each command loads). Library modules are imported inside the command bodies: ``--help``
loads none of them.
"""

from __future__ import annotations

import os
import sys

import click

from .. import backends
from ..errors import UsageError


@click.command()
@click.argument("target", type=click.Path())
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Output folder (file names and formats kept; its journal .deploy-kit-journal.jsonl records what is done).")
@click.option("--backend", type=click.Choice(backends.choices()), default="auto", show_default=True, help="Bundles: a built engine whose runtime works here, else OpenVINO on an x86-64 CPU where it is installed (FP32/FP16 bundles), else ONNX Runtime (docs/cpu.md).")
@click.option("--overlap", type=int, help="Tile overlap in pixels (default: the runtime's measured default, at most a quarter of the engine size).")
@click.option("--max-pixels", type=int, default=None, help="Refuse images whose header claims more pixels than this (decompression bombs). Default: Pillow's limit, 178956970.")
@click.option("--codec", default="libx264", show_default=True, help="Videos: FFmpeg encoder of the output (libx264 = H.264; e.g. libx265, mpeg4).")
@click.option("--crf", type=int, default=None, help="Videos: constant rate factor (lower = better quality, bigger file). Default: 18 for x264/x265/VP9/AV1 and NVENC (its constant-quality level), none for encoders without one (ffv1, mpeg4).")
@click.option("--preset", default=None, help="Videos: x264/x265 encoder preset, ultrafast ... veryslow (faster = bigger file at the same --crf). Default: the encoder's (medium).")
@click.option("--context", "context", default="tile", show_default=True, metavar="tile|sync[:N]", help="Global-context models (NAFNet without TLC, global Restormer): 'tile' normalises each tile by its own statistics; 'sync:N' sums them over the whole image in N passes (default 2) through the bundle's sync graph, so tiles match the full image (docs/tiling-and-context.md).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None, help="With a named CPU backend that takes it (--backend openvino): the inference precision; auto = BF16 where the CPU has AMX/AVX-512-BF16, FP16 on ARM with FP16, else FP32 (docs/cpu.md).")
@click.option("--force", is_flag=True, help="Ignore the journal: restore every input again (the journal starts afresh).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="auto", default=None, metavar="[ADDRESS]", help="Run on a Ray cluster: ADDRESS of 'ray start --head' (write --ray=ADDRESS), or no value: RAY_ADDRESS, else the cluster started on this machine, else a new local one (docs/cluster.md). Needs pip install 'deploy-kit[ray]'.")
def run(target, inputs, out_dir, backend, overlap, max_pixels, codec, crf, preset, context, precision, force,
        ray_address) -> None:
    """Restore images and videos of any size with TARGET (a bundle, or a .plan with its manifest).

    \b
    INPUTS are image files, video files and folders (their images and videos, not recursive).
    Images: gray, RGB and RGBA, 8 and 16 bit; each output is written in its input's format and
      depth (alpha kept).
    Videos (.mp4 .mov .mkv .avi .webm ...; needs PyAV: pip install 'deploy-kit[video]'): the
      same frame count, size and frame rate, --codec/--crf/--preset, audio copied as is.
    A broken image or video is reported and skipped, and leaves no output file; the run ends with
      a summary and exit code 1. An image whose header claims more than --max-pixels, or a --preset
      the encoder lacks, stops the run before any work (exit 2); an encoder that cannot be opened
      (--codec) stops it at the first video (exit 2).
    Resumable (docs/jobs.md): the --out folder keeps a journal of what is done (input by content
      hash, bundle sha256, options); running the same command again restores only what is not done,
      and redoes, saying why, what a changed bundle, option or input affects. A run stopped at any
      moment (even kill -9) leaves only complete outputs. --force restores everything again.
    Frames are tiled through the fixed-size engine (N tiles per call for a batched engine) with
    overlapping, blended tiles; decoding, the model, blending and encoding run concurrently.
    """
    if ray_address is not None:
        from .._deps import require

        require("ray")  # before any work: one line naming pip install 'deploy-kit[ray]' (exit 2)
    from ..runtime.imageio import DEFAULT_MAX_PIXELS, image_header
    from ..runtime.job import JobOptions, run_job
    from ..runtime.restore import collect_inputs
    from ..runtime.tiling import GLOBAL_CONTEXT_NOTE
    from ..runtime.video import default_crf, is_video_path

    if max_pixels is not None and max_pixels < 1:
        raise UsageError(f"--max-pixels must be positive; got {max_pixels}")
    if crf is not None and (crf < 0 or crf > 51):
        raise UsageError(f"--crf must be between 0 and 51; got {crf}")
    if preset is not None:
        from ..runtime.video import check_preset

        try:
            check_preset(codec, preset)  # before any work, not at the first video
        except ValueError as exc:
            raise UsageError(f"--preset: {exc}") from None
    run_options = None
    if precision is not None:  # the named backend makes its own options, refusing a flag it does not take
        if backend == backends.AUTO:
            raise UsageError("--precision applies to a named backend that takes it; add --backend (see --help)")
        run_options = backends.get(backend).run_options(precision=precision)
    restorer = None
    if ray_address is None:  # a bad or tampered target is reported first; on Ray, each node opens it
        from ..runtime.restorer import Restorer

        restorer = Restorer(target, backend, overlap=overlap, context=context, run_options=run_options)
    try:
        try:
            files = collect_inputs(inputs)
        except FileNotFoundError as exc:
            raise UsageError(f"input not found: {exc.args[0]}") from None
        if not files:
            raise UsageError("no images or videos found in the given inputs (png, jpg, tif, bmp, webp, mp4, mov, mkv, ...)")
        for f in files:
            if os.path.abspath(os.path.join(out_dir, os.path.basename(f))) == os.path.abspath(f):
                raise UsageError(f"--out would overwrite the input {f}; choose another folder")
        videos = [f for f in files if is_video_path(f)]
        images = [f for f in files if f not in videos]
        limit = max_pixels or DEFAULT_MAX_PIXELS
        for f in images:  # decompression bombs stop the run before any work; broken files are skipped later
            try:
                h, w = image_header(f)
            except (OSError, ValueError):
                continue
            if h * w > limit:
                raise UsageError(f"{f}: {w}x{h} = {w * h} pixels is more than the limit of {limit} (--max-pixels); "
                                 "raise --max-pixels if the image is genuine")
        if restorer is not None:
            th, tw = restorer.tile
            click.echo(f"run: {restorer.note}; {len(images)} images, {len(videos)} videos; tiles of {th}x{tw}, "
                       f"{restorer.batch} per call, overlap {restorer.overlap}", err=True)
            if restorer.manifest.global_context and restorer.context == "tile":
                hint = "; this bundle has a sync graph: --context sync makes tiles match the full image" \
                    if restorer.manifest.sync_onnx else ""
                click.echo(f"note: {GLOBAL_CONTEXT_NOTE}{hint}", err=True)
        else:
            click.echo(f"run: on Ray ({ray_address}); {len(images)} images, {len(videos)} videos", err=True)
        opts = JobOptions(target=target, backend=backend, overlap=overlap, context=context, codec=codec,
                          crf=default_crf(codec) if crf is None else crf,
                          preset=preset, max_pixels=limit, force=force, precision=precision)
        result = run_job(opts, files, out_dir, ray_address=ray_address, echo=click.echo, restorer=restorer,
                         progress=lambda label, total, show_pos=False: click.progressbar(
                             length=total, label=label, file=sys.stderr, show_pos=show_pos))
        if result.failed:
            click.echo(f"{len(result.failed)} of {len(files)} inputs failed:", err=True)
            for line in result.failed:
                click.echo(f"  {line}", err=True)
            sys.exit(1)
    finally:
        if restorer is not None:
            restorer.close()


@click.command()
@click.argument("artifact", type=click.Path())
@click.option("--backend", type=click.Choice(backends.choices()), default="auto", show_default=True, help="Bundles: what runs the reference inputs; auto = a built engine whose runtime works here, else OpenVINO on an x86-64 CPU where it is installed (FP32/FP16 bundles), else ONNX Runtime.")
@click.option("--samples", type=int, default=2, show_default=True, help="ONNX/plan artifacts: sample images (bundles carry their own).")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None, help="Bundles, with a named CPU backend that takes it (OpenVINO): the inference precision; auto = BF16 where the CPU has AMX/AVX-512-BF16, FP16 on ARM with FP16, else FP32. The row is gated at the lossier of this and the bundle's precision.")
def verify(artifact, backend, samples, precision) -> None:
    """Parity of ARTIFACT against the PyTorch FP32 reference: exit 0 pass, 1 fail, 2 bad input.

    \b
    ARTIFACT is one of:
      a bundle folder    on the device, no torch: the reference inputs and PyTorch outputs
                         travel in the bundle; runs the built engine (or a CPU runner)
      an .onnx / .plan   on the build machine: the reference is rebuilt from the metadata
    """
    from ..manifest import target_kind

    if not os.path.exists(artifact):
        raise UsageError(f"artifact not found: {artifact}")
    if target_kind(artifact) == "bundle":
        from ..verify import verify_bundle

        run_options = None
        if precision is not None:  # the named backend makes its own options, refusing a flag it does not take
            if backend == backends.AUTO:
                raise UsageError("--precision applies to a named backend that takes it; add --backend (see --help)")
            run_options = backends.get(backend).run_options(precision=precision)
        report, note = verify_bundle(artifact, backend, run_options)
        click.echo(f"verify: {note}", err=True)
    else:
        if os.path.isdir(artifact):
            raise UsageError(f"{artifact} is a folder but not a deploy-kit bundle (no manifest.json)")
        if backend != "auto" or precision is not None:
            raise UsageError("--backend and --precision apply to bundles; an .onnx runs on ONNX Runtime, a .plan on its own runtime")
        from .._deps import require_export

        require_export()
        from ..artifact import verify_artifact  # the build half: the one import .importlinter allows here

        report = verify_artifact(artifact, samples=samples)
    click.echo(report.table())
    failures = report.failures()
    if failures:
        click.echo("PARITY FAILED: " + " | ".join(failures), err=True)
        sys.exit(1)
    click.echo("parity: all gates passed" if any(c.status == "pass" for c in report.checks) else "parity: nothing could be run here")


@click.command()
@click.argument("target", type=click.Path())
@click.option("--backend", type=click.Choice([backends.AUTO, *backends.names(engines=True)]), default="auto", show_default=True, help="tensorrt on the device (JetPack, desktop); tensorrt-rtx builds ahead of time, even without a GPU; auto = tensorrt if installed, else tensorrt-rtx.")
@click.option("--dla-core", type=int, help="Jetson DLA core (tensorrt backend): layers DLA cannot run fall back to the GPU; the run lists which.")
@click.option("--compute-capability", "compute_capabilities", multiple=True, help="TensorRT-RTX target; repeatable.")
@click.option("--timing-cache", type=click.Path(dir_okay=False), help="TensorRT timing cache file (read if present, written after the build).")
@click.option("--out", "out_path", type=click.Path(dir_okay=False), help="Plan path (default: next to the ONNX, or inside the bundle).")
def build(target, backend, dla_core, compute_capabilities, timing_cache, out_path) -> None:
    """Build a strongly typed engine from TARGET: a bundle (on the device) or an ONNX written by deploy-kit.

    The engine is written with a .json manifest beside it. Needs no torch: on a Jetson the core
    install plus JetPack's TensorRT is enough. Same builder as 'export'.
    """
    from ..engine import build_engine

    if not os.path.exists(target):
        raise UsageError(f"not found: {target}")
    if backend == "auto":
        chosen = backends.default_builder(prefer_device=True)
        if chosen is None:
            raise UsageError("no engine backend is installed: pip install 'deploy-kit[tensorrt]' (or [rtx]); JetPack brings TensorRT")
        backend = chosen.name
    if dla_core is not None and backend != backends.TENSORRT:
        raise UsageError("--dla-core needs --backend tensorrt (DLA exists on Jetson TensorRT only)")
    # the backend's typed options: a bad value or a flag it does not take is one line, before any work
    options = backends.get(backend).build_options(dla_core=dla_core, compute_capability=compute_capabilities,
                                                  timing_cache=timing_cache)
    res = build_engine(target, backend, out_path=out_path, options=options,
                       progress=lambda text: click.echo(text, err=True))
    from ..fsutil import human_size

    click.echo(f"engine: {res.plan} ({human_size(res.size)}, {res.seconds:.1f} s); manifest: {res.plan}.json")
    if os.path.isfile(res.plan + ".json"):  # say at once when this machine cannot run what it built
        from ..manifest import read_typed

        ok, why = backends.get(backend).can_run_artifact(read_typed(res.plan + ".json"))
        if not ok:
            click.echo(f"note: it cannot run on this machine: {why.replace('BUNDLE', target)}", err=True)
    dla = res.details.get("dla_layers")
    if dla is not None:
        click.echo(f"DLA core {dla_core}: {len(dla['dla'])} layers on DLA, {len(dla['gpu'])} on the GPU")
        for name in dla["gpu"][:40]:
            click.echo(f"  GPU fallback: {name}")


@click.command()
@click.argument("target", required=False, type=click.Path())
@click.option("--dla-core", type=int, help="Check that this device has DLA core N (what build --dla-core N needs).")
def env(target, dla_core) -> None:
    """The device doctor: what this Python sees, which backends can build and run here (and run TARGET,
    a bundle folder or a .plan with its .json sidecar), and a "trap:" line with the fix for each known
    installation trap (numpy 2 with a numpy-1 cv2, a pip OpenCV hiding JetPack's, a Jetson venv
    without system site-packages, a DLA core the device lacks, TensorRT newer than the driver's CUDA).
    """
    from .. import doctor

    if dla_core is not None and dla_core < 0:
        raise UsageError(f"--dla-core must be 0 or more; got {dla_core}")
    described, checks = doctor.check_target(target) if target else (None, [])
    requests = [("--dla-core", dla_core)] if dla_core is not None else []
    requests += [(c.label, c.dla_core) for c in checks if c.dla_core is not None]
    facts = doctor.gather()
    lines = doctor.machine_lines(facts) + ["packages:"] + doctor.package_lines() + doctor.backend_lines()
    if described:
        lines += doctor.target_lines(described, checks)
    lines += doctor.traps(facts, requests) or ["traps: none found"]
    click.echo("\n".join(lines))
