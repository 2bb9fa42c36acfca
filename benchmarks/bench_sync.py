"""Synchronised statistics: PSNR against the full-image output vs the number of passes, and the time each costs.

The case: a 256x256 bundle of a global-context demo model (NAFNet demo-w16 without TLC, trained on
noise 25; Restormer demo-d12 with global attention, trained on blur 9), tiled over a large degraded
photo by deploy-kit's own runtime (``Restorer``, ONNX Runtime CPU, the bundle's FP32 graphs), against
the eager PyTorch output of the same checkpoint on the whole image. ``tile`` is today's tiling (each
tile its own statistics); ``sync:N`` runs the tiles N times, feeding back whole-image statistics.

Reproduce::

    python benchmarks/bench_sync.py                      # both demos, 1000x1500
    python benchmarks/bench_sync.py --models nafnet --size 1000x1500 --passes 1,2,3,4

Measured: see the table printed by the run, quoted in docs/tiling-and-context.md.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

DEMOS = {
    "nafnet": ("deploy_kit/demo/nafnet-demo-w16-noise25.pth", "noise:25"),
    "restormer": ("deploy_kit/demo/restormer-demo-d12-blur9.pth", "blur:9"),
}


def _size(text: str) -> tuple[int, int]:
    h, _, w = text.partition("x")
    return int(h), int(w)


def bundle_for(model: str, weights: str, out: str) -> str:
    """Export the demo without TLC at 256x256, FP32, no engine, with its bundle (sync graph inside)."""
    from deploy_kit.pipeline import run_export
    from deploy_kit.request import resolve_request

    req = resolve_request(model, weights=os.path.join(REPO, weights), height=256, width=256, tlc=False)
    res = run_export(req, out_dir=out, backend=None, bundle=True)
    return res.bundle


def full_image(model: str, weights: str, x: np.ndarray) -> tuple[np.ndarray, float]:
    """The eager PyTorch output on the whole image, and its time."""
    import torch

    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_request
    from deploy_kit.request import resolve_request

    req = resolve_request(model, weights=os.path.join(REPO, weights), height=x.shape[1], width=x.shape[2], tlc=False)
    adapter = get_adapter(model)
    module = adapter.wrap(load_request(adapter, req).model, req, static=False)
    t0 = time.perf_counter()
    with torch.no_grad():
        y = module(torch.from_numpy(x[None]))[0].numpy()
    return np.clip(y, 0, 1), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="nafnet,restormer")
    ap.add_argument("--size", type=_size, default=(1000, 1500), help="photo HxW (default 1000x1500)")
    ap.add_argument("--passes", default="1,2,3,4", help="sync passes to measure (1 = the plain tiles' statistics)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per mode (the fastest is reported)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch

    from deploy_kit.backends import OrtRunOptions
    from deploy_kit.data.samples import sample_images
    from deploy_kit.metrics import psnr
    from deploy_kit.runtime.restorer import Restorer

    torch.set_num_threads(args.threads)
    h, w = args.size
    passes = [int(p) for p in args.passes.split(",")]
    with tempfile.TemporaryDirectory(prefix="dk-bench-sync-") as tmp:
        for model in args.models.split(","):
            weights, degradation = DEMOS[model]
            bundle = bundle_for(model, weights, os.path.join(tmp, model))
            x = sample_images(1, 3, h, w, degradation, 0)[0][0]
            ref, ref_s = full_image(model, weights, x)
            frame = np.ascontiguousarray(x.transpose(1, 2, 0))
            print(f"\n{model} demo, 256x256 FP32 bundle (ONNX Runtime CPU, {args.threads} threads), {h}x{w} photo + "
                  f"{degradation}; full-image PyTorch reference {ref_s:.1f} s", flush=True)
            print(f"{'mode':<8} {'PSNR vs full dB':>16} {'max abs':>9} {'time s':>8} {'x tile':>7}")
            base = None
            for mode in ["tile"] + [f"sync:{p}" for p in passes]:
                with Restorer(bundle, "onnxruntime", context=mode, run_options=OrtRunOptions(threads=args.threads)) as r:
                    times, out = [], None
                    for _ in range(args.repeats):
                        t0 = time.perf_counter()
                        out = r.restore(frame)
                        times.append(time.perf_counter() - t0)
                t = min(times)  # the least disturbed run: this machine's per-call time varies up to 2x between runs
                base = base or t
                y = out.transpose(2, 0, 1)
                print(f"{mode:<8} {psnr(y, ref):>16.2f} {float(np.abs(y - ref).max()):>9.2e} {t:>8.2f} {t / base:>7.2f}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
