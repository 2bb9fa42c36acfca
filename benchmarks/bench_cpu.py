"""The CPU backends: ONNX Runtime FP32 against OpenVINO FP32 and BF16, the BF16 error, OpenVINO's cache and
ONNX Runtime's session options. Prints Markdown tables (docs/cpu.md quotes them):

  backends  NAFNet gopro-w32 (TLC, as README's first export command makes it) and Restormer
            motion-deblurring (TLC) at 256x256 and 720x1280, random weights, FP32 bundles made by
            ``deploy-kit export ... --bundle --backend none``: ms per call (median; the backends' calls
            alternate in one process, so load from other processes hits each alike) and PSNR against the
            PyTorch FP32 outputs the bundle carries. OpenVINO BF16 is "n/a" where the CPU has no BF16
            (AMX / AVX-512-BF16): OpenVINO would compile FP32 and call it BF16. Ratio BF16 / ORT FP32
            against the goal 2.5x.
  bf16      a BF16 proxy on CPUs without BF16: PyTorch CPU bfloat16 (autocast: convolutions and matrix
            products in BF16 with FP32 accumulation, as OpenVINO's BF16 CPU kernels; and the whole model
            cast to BF16, the pessimistic bound) against PyTorch FP32, tiny and full models. These are
            PyTorch's BF16 kernels, not OpenVINO's.
  cache     OpenVINO's first start (compile, cache written), second start (imported from the cache) and a
            start without a cache.
  ort       ONNX Runtime session options measured inside the runtime's pipeline (``Restorer`` on a folder
            of PNGs: decode, tile, model, blend, encode threads all active): graph optimisation level,
            intra-op threads 0/1/2, ``session.intra_op.allow_spinning`` on/off. Configurations alternate
            per round; median seconds per image.

Usage: python benchmarks/bench_cpu.py [--only backends,bf16,cache,ort] [--work DIR] [--runs N] [--runs-720p N]
       [--sizes 256,720p] [--models nafnet,restormer] [--targets nafnet:256,restormer:720p]
Exports are reused from --work when present. 720p Restormer costs tens of seconds per call on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from deploy_kit import backends  # noqa: E402
from deploy_kit.bundle import open_bundle  # noqa: E402
from deploy_kit.metrics import psnr  # noqa: E402

MODELS = {"nafnet": ["nafnet", "--variant", "gopro-w32"], "restormer": ["restormer"],
          "nafnet-tiny": ["nafnet", "--variant", "tiny"], "restormer-tiny": ["restormer", "--variant", "tiny"],
          "nafnet-demo": ["nafnet", "--variant", "demo-w16"]}
SIZES = {"256": (256, 256), "720p": (720, 1280), "64": (64, 64)}
GOAL = 2.5


def export_bundle(work: str, model: str, size: str) -> str:
    """An FP32 bundle of ``model`` at ``size`` in ``work`` (made once by the CLI, reused after)."""
    h, w = SIZES[size]
    out = os.path.join(work, f"{model}-{size}")
    found = [f for f in os.listdir(out)] if os.path.isdir(out) else []
    bundle = next((os.path.join(out, f) for f in found if f.endswith(".fp32.bundle")), None)
    if bundle:
        return bundle
    cmd = [sys.executable, "-c", "from deploy_kit.cli import main; main()", "export", *MODELS[model],
           "--height", str(h), "--width", str(w), "--bundle", "--backend", "none", "--samples", "1", "--out", out]
    print(f"exporting {model} {h}x{w} ...", file=sys.stderr, flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"export failed: {' '.join(cmd)}\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}")
    return next(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".fp32.bundle"))


def _alternate(runners: dict, x: np.ndarray, runs: int) -> dict[str, float]:
    """Median ms per call of each runner, calls alternating between them (one warm-up each first)."""
    for r in runners.values():
        r.run(x)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(runs):
        for k, r in runners.items():
            t = time.perf_counter()
            r.run(x)
            times[k].append(time.perf_counter() - t)
    return {k: 1000 * statistics.median(v) for k, v in times.items()}


def section_backends(args) -> None:
    ort, ov = backends.get(backends.ONNXRUNTIME), backends.get(backends.OPENVINO)
    has_bf16 = "bf16" in ov.precisions()
    print(f"\n## ONNX Runtime FP32 vs OpenVINO FP32 / BF16 ({ov.can_run()[1]}; {os.cpu_count()} CPUs, "
          f"default threads)\n")
    print("| model | size | runs | ORT FP32 ms | OpenVINO FP32 ms | OpenVINO BF16 ms | PSNR ORT / OV FP32 / OV BF16 dB "
          "| OV FP32 speed-up | OV BF16 speed-up (goal >= 2.5x) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for model, size in args.targets:
        bundle = open_bundle(export_bundle(args.work, model, size))
        inputs, refs = bundle.references()
        x, ref = inputs[0], refs[0][0]
        cache = tempfile.mkdtemp(prefix="ovcache-", dir=args.work)
        runners = {"ort": ort.open_runner(bundle.onnx, ort.run_options(device="cpu")),
                   "ov32": ov.open_runner(bundle.onnx, ov.run_options(precision="fp32", cache_dir=cache))}
        if has_bf16:
            runners["ovbf16"] = ov.open_runner(bundle.onnx, ov.run_options(precision="bf16", cache_dir=cache))
        got = {k: r.precision for k, r in runners.items() if hasattr(r, "precision")}
        assert got.get("ov32") == "fp32" and got.get("ovbf16", "bf16") == "bf16", got  # what compiled
        runs = args.runs_720p if size == "720p" else args.runs
        ms = _alternate(runners, x, runs)
        db = {k: psnr(ref, r.run(x)[0]) for k, r in runners.items()}
        for r in runners.values():
            r.close()
        shutil.rmtree(cache, ignore_errors=True)
        bf16_ms = f"{ms['ovbf16']:.0f}" if has_bf16 else "n/a: this CPU has no BF16"
        bf16_db = f"{db['ovbf16']:.1f}" if has_bf16 else "n/a"
        ratio = (f"{ms['ort'] / ms['ovbf16']:.2f}x ({'met' if ms['ort'] / ms['ovbf16'] >= GOAL else 'NOT met'})"
                 if has_bf16 else "n/a: no BF16 here")
        h, w = SIZES[size]
        print(f"| {model} | {h}x{w} | {runs} | {ms['ort']:.0f} | {ms['ov32']:.0f} | {bf16_ms} | "
              f"{db['ort']:.1f} / {db['ov32']:.1f} / {bf16_db} | {ms['ort'] / ms['ov32']:.2f}x | {ratio} |", flush=True)


def section_bf16(args) -> None:
    """PyTorch BF16 (autocast, and whole-model BF16) against PyTorch FP32 on each bundle's reference input."""
    import torch

    from deploy_kit.artifact import artifact_request
    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_request
    from deploy_kit.reference import reference_runner

    torch.manual_seed(0)
    print("\n## BF16 proxy: PyTorch CPU bfloat16 vs PyTorch FP32 (random weights; not OpenVINO's kernels)\n")
    print("| model | size | autocast BF16 PSNR dB | autocast max abs | whole-model BF16 PSNR dB | whole-model max abs |")
    print("|---|---|---|---|---|---|")
    for model, size in args.bf16_targets:
        bundle = open_bundle(export_bundle(args.work, model, size))
        req, _ = artifact_request(bundle.onnx)
        adapter = get_adapter(req.model)
        module = reference_runner(adapter, load_request(adapter, req).model, req).module.eval()
        x = torch.from_numpy(bundle.references()[0][0])
        with torch.no_grad():
            ref = module(x).float().numpy()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                auto = module(x).float().numpy()
            whole = module.to(torch.bfloat16)(x.to(torch.bfloat16)).float().numpy()
        h, w = SIZES[size]
        print(f"| {model} | {h}x{w} | {psnr(ref, auto):.1f} | {np.abs(ref - auto).max():.3g} | "
              f"{psnr(ref, whole):.1f} | {np.abs(ref - whole).max():.3g} |", flush=True)


def section_cache(args) -> None:
    ov = backends.get(backends.OPENVINO)
    print("\n## OpenVINO start: first (compile + cache written), second (from the cache), no cache (s)\n")
    print("| model | size | first start s | second start s | no cache s |")
    print("|---|---|---|---|---|")
    for model, size in args.targets:
        bundle = open_bundle(export_bundle(args.work, model, size))
        cache = tempfile.mkdtemp(prefix="ovcache-", dir=args.work)
        starts = []
        for cache_dir in (cache, cache, ""):
            t = time.perf_counter()
            ov.open_runner(bundle.onnx, ov.run_options(precision="fp32", cache_dir=cache_dir)).close()
            starts.append(time.perf_counter() - t)
        shutil.rmtree(cache, ignore_errors=True)
        h, w = SIZES[size]
        print(f"| {model} | {h}x{w} | {starts[0]:.2f} | {starts[1]:.2f} | {starts[2]:.2f} |", flush=True)


def _photos(folder: str, count: int, h: int, w: int) -> list[str]:
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        yy, xx = np.mgrid[0:h, 0:w]
        img = (127 + 60 * np.sin(xx / 37.0 + i) * np.cos(yy / 23.0) + rng.normal(0, 12, (h, w))).clip(0, 255)
        path = os.path.join(folder, f"p{i}.png")
        Image.fromarray(np.repeat(img[..., None], 3, axis=2).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def section_ort(args) -> None:
    """ONNX Runtime session options inside the pipeline (Restorer on PNG files)."""
    from deploy_kit.runtime.restore import restore_images
    from deploy_kit.runtime.restorer import Restorer

    ort = backends.get(backends.ONNXRUNTIME)
    bundle = export_bundle(args.work, args.ort_model, args.ort_size)
    photos = _photos(os.path.join(args.work, "ort-photos"), args.ort_images, 720, 960)
    configs = [tuple(c) for c in args.ort_configs] or [
        ("all", 0, True), ("extended", 0, True), ("basic", 0, True),
        ("all", 1, True), ("all", 2, True), ("all", 0, False), ("all", 2, False)]
    restorers = {c: Restorer(bundle, backends.ONNXRUNTIME, run_options=ort.run_options(
        device="cpu", level=c[0], threads=c[1], spinning=c[2])) for c in configs}
    out = tempfile.mkdtemp(prefix="ort-out-", dir=args.work)
    times: dict = {c: [] for c in configs}
    for c, r in restorers.items():  # warm-up
        restore_images(r, photos[:1], out)
    for _ in range(args.ort_rounds):
        for c, r in restorers.items():
            t = time.perf_counter()
            res = restore_images(r, photos, out)
            times[c].append((time.perf_counter() - t) / len(photos))
            assert not res.failed, res.failed
    for r in restorers.values():
        r.close()
    shutil.rmtree(out, ignore_errors=True)
    base = statistics.median(times[configs[0]])
    print(f"\n## ONNX Runtime session options in the pipeline ({args.ort_model} {args.ort_size}, "
          f"{args.ort_images} PNGs of 960x720, {args.ort_rounds} rounds alternating; s per image, median)\n")
    print("| graph optimisation | intra-op threads | spinning | s / image | vs all/0/on |")
    print("|---|---|---|---|---|")
    for c in configs:
        m = statistics.median(times[c])
        print(f"| {c[0]} | {c[1] or 'default (0)'} | {'on' if c[2] else 'off'} | {m:.2f} | {m / base:.2f} |", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default="backends,bf16,cache,ort")
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "dk-bench-cpu"))
    p.add_argument("--runs", type=int, default=5, help="alternating rounds at 256x256")
    p.add_argument("--runs-720p", type=int, default=2, help="alternating rounds at 720x1280")
    p.add_argument("--models", default="nafnet,restormer")
    p.add_argument("--sizes", default="256,720p")
    p.add_argument("--targets", default="", help="model:size,... instead of --models x --sizes")
    p.add_argument("--bf16", default="nafnet-tiny:64,restormer-tiny:64,nafnet-demo:256,nafnet:256,restormer:256",
                   help="bf16 proxy targets, model:size")
    p.add_argument("--ort-model", default="nafnet-demo")
    p.add_argument("--ort-size", default="256")
    p.add_argument("--ort-images", type=int, default=2)
    p.add_argument("--ort-rounds", type=int, default=3)
    p.add_argument("--ort-configs", default="", help="level:threads:on|off,... (default: the seven of the table)")
    args = p.parse_args(argv)
    args.targets = ([tuple(t.split(":")) for t in args.targets.split(",")] if args.targets else
                    [(m, z) for m in args.models.split(",") for z in args.sizes.split(",")])
    args.bf16_targets = [tuple(t.split(":")) for t in args.bf16.split(",")]
    args.ort_configs = [(lvl, int(n), spin == "on") for lvl, n, spin in
                        (c.split(":") for c in args.ort_configs.split(",") if c)]
    os.makedirs(args.work, exist_ok=True)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    sections = {"backends": section_backends, "bf16": section_bf16, "cache": section_cache, "ort": section_ort}
    for name in args.only.split(","):
        sections[name](args)


if __name__ == "__main__":
    main()
