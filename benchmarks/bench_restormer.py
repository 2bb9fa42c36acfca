"""Restormer / Restormer-Local figures (CPU; full size takes many minutes on 2 cores).

Prints one table with:
  a. peak RSS (ru_maxrss) and time of the TLC ONNX export at 720x1280, measured in a child
     process so the figure is the export's own (model build + trace + ONNX write);
  b. ONNX Runtime latency ratio Restormer-Local / global Restormer at 512x512 (goal <= 1.5;
     at 512x512 every level has 2 x 2 overlapping windows);
  c. ONNX Runtime / PyTorch eager latency ratio at 256x256, same thread count.

Random weights (seeded): latency and memory do not depend on the values.

Usage:
  python benchmarks/bench_restormer.py            # full motion-deblurring (dim 48, [4,6,6,8])
  python benchmarks/bench_restormer.py --quick    # reduced width/depth (dim 16, one block per
                                                  # level): same window layout, minutes less
Options: --threads N (default 2), --repeats N, --only a,b,c, --rss-size 720x1280
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from _common import median_time, ort_session  # noqa: E402 (benchmarks/ is on sys.path)

# reduced variant for --quick: width and depth cut, topology/heads/FFN factor/LN as official.
# Attention-core and conv costs both scale ~ width^2, so the TLC/global ratio is roughly kept.
REDUCED = dict(
    inp_channels=3, out_channels=3, dim=16, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
    heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias",
    dual_pixel_task=False,
)


def variant_for(quick: bool):
    from deploy_kit.models import get_adapter
    from deploy_kit.specs import Variant

    adapter = get_adapter("restormer")
    if quick:
        return adapter, Variant.make("reduced-d16", REDUCED)
    return adapter, adapter.spec.variant("motion-deblurring")


def build(quick: bool, seed: int = 0):
    adapter, variant = variant_for(quick)
    model = adapter.build(variant)
    adapter.randomize_(model, seed)
    return adapter, variant, model


def export(module, example, path: str) -> str:
    """Export with deploy_kit.export.export_onnx when present, else torch.onnx.export directly."""
    import torch

    try:
        from deploy_kit.export import export_onnx
    except ImportError:
        export_onnx = None
    if export_onnx is not None:
        export_onnx(module, example, path, input_names=["input"], output_names=["output"], metadata={})
        return "deploy_kit.export.export_onnx"
    with torch.no_grad():
        torch.onnx.export(module, (example,), path, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["output"])
    return "torch.onnx.export"






# ---------------------------------------------------------------------------------------
def child_export(args) -> None:
    """Runs in the child process: build, wrap (static TLC), export; print JSON (last line)."""
    import torch

    from deploy_kit.specs import ExportRequest, TLCConfig

    torch.set_num_threads(args.threads)
    h, w = args.rss_size
    adapter, variant, model = build(args.quick)
    rss_model = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    req = ExportRequest("restormer", variant.name, h, w, tlc=TLCConfig())
    net = adapter.wrap(model, req, static=True)
    with tempfile.TemporaryDirectory(prefix="bench-rst-") as tmp:
        path = os.path.join(tmp, "rst.onnx")
        t = time.perf_counter()
        how = export(net, torch.rand(1, 3, h, w), path)
        secs = time.perf_counter() - t
        size = os.path.getsize(path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(peak_kb=peak, model_kb=rss_model, secs=secs, onnx_bytes=size, how=how)))


def bench_rss(args) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child-export", "--threads", str(args.threads),
           "--rss-size", f"{args.rss_size[0]}x{args.rss_size[1]}"] + (["--quick"] if args.quick else [])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"export child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_tlc_ratio(args, tmp: str) -> dict:
    import numpy as np
    import torch

    from deploy_kit.specs import ExportRequest, TLCConfig

    adapter, variant, model = build(args.quick)
    h = w = 512
    x = torch.rand(1, 3, h, w)
    feed = {"input": x.numpy()}
    out = {}
    for label, tlc in (("global", None), ("local", TLCConfig())):
        req = ExportRequest("restormer", variant.name, h, w, tlc=tlc)
        path = os.path.join(tmp, f"rst-{label}-512.onnx")
        export(adapter.wrap(model, req, static=True), x, path)
        sess = ort_session(path, args.threads)
        out[label] = median_time(lambda: sess.run(None, feed), args.repeats)
        out[f"{label}_y"] = sess.run(None, feed)[0]
    with torch.no_grad():
        ref = adapter.wrap(model, ExportRequest("restormer", variant.name, h, w, tlc=TLCConfig()), static=False)(x)
    out["local_vs_eager_max_abs"] = float(np.abs(out.pop("local_y") - ref.numpy()).max())
    out["local_vs_global_max_abs"] = float(np.abs(out.pop("global_y") - ref.numpy()).max())
    return out


def bench_ort_vs_torch(args, tmp: str) -> dict:
    import torch

    from deploy_kit.specs import ExportRequest

    torch.set_num_threads(args.threads)
    adapter, variant, model = build(args.quick)
    h = w = 256
    x = torch.rand(1, 3, h, w)
    req = ExportRequest("restormer", variant.name, h, w, tlc=None)
    net = adapter.wrap(model, req, static=True)
    path = os.path.join(tmp, "rst-256.onnx")
    export(net, x, path)
    sess = ort_session(path, args.threads)
    feed = {"input": x.numpy()}

    def eager():
        with torch.no_grad():
            net(x)

    t_torch = median_time(eager, args.repeats)
    t_ort = median_time(lambda: sess.run(None, feed), args.repeats)
    return dict(torch=t_torch, ort=t_ort)


def parse_size(s: str) -> tuple[int, int]:
    h, w = s.lower().split("x")
    return int(h), int(w)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="reduced variant (dim 16, one block per level)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--only", default="a,b,c", help="subset of a,b,c")
    p.add_argument("--rss-size", type=parse_size, default=(720, 1280))
    p.add_argument("--child-export", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child_export:
        child_export(args)
        return

    import torch

    torch.set_num_threads(args.threads)
    _, variant = variant_for(args.quick)
    kw = variant.kwargs()
    what = (f"{'REDUCED ' if args.quick else ''}{variant.name}: dim {kw['dim']}, blocks {kw['num_blocks']}, "
            f"refinement {kw['num_refinement_blocks']}, heads {kw['heads']}")
    print(f"Restormer benchmark - {what}; {args.threads} threads, median of {args.repeats}, "
          f"torch {torch.__version__}, CPU")
    rows: list[tuple[str, str, str]] = []
    only = set(args.only.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-rst-") as tmp:
        if "a" in only:
            r = bench_rss(args)
            h, w = args.rss_size
            rows.append((f"a. TLC export {h}x{w}: peak RSS", f"{r['peak_kb'] / 1024:.0f} MiB",
                         f"model built: {r['model_kb'] / 1024:.0f} MiB; {r['secs']:.1f} s; "
                         f"ONNX {r['onnx_bytes'] / 2**20:.1f} MiB; via {r['how']}"))
        if "b" in only:
            r = bench_tlc_ratio(args, tmp)
            ratio = r["local"] / r["global"]
            rows.append(("b. ORT local/global 512x512", f"{ratio:.2f}x",
                         f"local {r['local'] * 1e3:.0f} ms, global {r['global'] * 1e3:.0f} ms; goal <= 1.5 "
                         f"({'met' if ratio <= 1.5 else 'NOT met'}); ORT-vs-eager TLC max abs "
                         f"{r['local_vs_eager_max_abs']:.1e}"))
        if "c" in only:
            r = bench_ort_vs_torch(args, tmp)
            rows.append(("c. ORT/torch eager 256x256", f"{r['ort'] / r['torch']:.2f}x",
                         f"ORT {r['ort'] * 1e3:.0f} ms, torch {r['torch'] * 1e3:.0f} ms"))
    width = max(len(r[0]) for r in rows)
    print(f"{'measure':{width}s}  {'value':>9s}  detail")
    for name, val, detail in rows:
        print(f"{name:{width}s}  {val:>9s}  {detail}")


if __name__ == "__main__":
    main()
