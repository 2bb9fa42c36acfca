"""PVT v1: export every official size at 224 and 512 and check FP32 parity (minutes on 2 cores).

For each size x resolution x head: export (TorchScript exporter, opset 17, positional embeddings
precomputed for that resolution) + simplify with the package's own stages, then ONNX Runtime
(CPU) vs the PyTorch eager reference (which resizes the embeddings at forward time) on real
sample photographs. Prints per row: export/simplify seconds, node count, Resize/Loop/If count
(must be 0), max |ONNX - eager| / max |eager| (gate 1e-4), worst cosine, top-1 agreement for
logits, and median CPU latency of both (same thread count). Random weights (no download).

Usage:
  python benchmarks/bench_pvt.py --quick                 # tiny only, 224 and 512, both heads
  python benchmarks/bench_pvt.py                         # tiny/small/medium/large
  python benchmarks/bench_pvt.py --sizes small --res 224,512,640 --heads cls --threads 2
  python benchmarks/bench_pvt.py --sizes v2-b0,v2-b2-li --res 224,256 --heads cls   # any variant name
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from _common import median_time  # noqa: E402 (benchmarks/ is on sys.path)




def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def bench_one(adapter, model, variant: str, res: int, head: str, args, tmp: str) -> dict:
    import onnx
    import onnxruntime as ort
    import torch

    from deploy_kit.export import export_onnx
    from deploy_kit.simplify import simplify
    from deploy_kit.specs import ExportRequest

    req = ExportRequest("pvt", variant, res, res, options=(("head", head),))
    names = adapter.output_names(req)
    xs = adapter.sample_inputs(req, args.images)
    eager = adapter.wrap(model, req, static=False)
    static = adapter.wrap(model, req, static=True)
    raw = os.path.join(tmp, f"{req.stem()}.raw.onnx")
    dst = os.path.join(tmp, f"{req.stem()}.onnx")
    t = time.perf_counter()
    info = export_onnx(static, torch.from_numpy(xs[0]), raw, input_names=["input"], output_names=names, metadata={})
    t_export = time.perf_counter() - t
    t = time.perf_counter()
    srep = simplify(raw, dst)
    t_simplify = time.perf_counter() - t
    ops = [n.op_type for n in onnx.load(dst, load_external_data=False).graph.node]
    banned = sum(op in ("Resize", "Upsample", "Loop", "If", "Scan") for op in ops) + sum(
        info.op_counts.get(op, 0) for op in ("Resize", "Upsample", "Loop", "If", "Scan")
    )

    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
    rel, cos, top1 = 0.0, 1.0, 0
    for x in xs:
        with torch.no_grad():
            ref = eager(torch.from_numpy(x))
        ref = [r.numpy() for r in (ref if isinstance(ref, tuple) else (ref,))]
        got = sess.run(names, {"input": x})
        rel = max(rel, max(float(np.abs(g - r).max() / np.abs(r).max()) for g, r in zip(got, ref)))
        cos = min(cos, min(cosine(g, r) for g, r in zip(got, ref)))
        top1 += int(head == "cls" and int(got[0].argmax()) == int(ref[0].argmax()))
    xt = torch.from_numpy(xs[0])
    with torch.inference_mode():
        t_torch = median_time(lambda: eager(xt), args.repeats)
    t_ort = median_time(lambda: sess.run(None, {"input": xs[0]}), args.repeats)
    for p in (raw, dst):
        os.remove(p)
    return dict(
        variant=variant, res=res, head=head, export=t_export, simplify=t_simplify, nodes=srep.nodes_after,
        banned=banned, rel=rel, cos=cos, top1=f"{top1}/{len(xs)}" if head == "cls" else "-",
        torch_ms=t_torch * 1e3, ort_ms=t_ort * 1e3,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny only (the CI-sized run)")
    ap.add_argument("--sizes", default="tiny,small,medium,large")
    ap.add_argument("--res", default="224,512")
    ap.add_argument("--heads", default="cls,features")
    ap.add_argument("--images", type=int, default=2, help="sample photographs per parity check")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch

    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_model

    torch.set_num_threads(args.threads)
    adapter = get_adapter("pvt")
    sizes = ["tiny"] if args.quick else args.sizes.split(",")
    gate = adapter.spec.tolerance.fp32_max_abs
    print(f"torch {torch.__version__}, threads {args.threads}, cpu count {os.cpu_count()}, random weights, "
          f"{args.images} sample photos; gate max|d|/max|ref| <= {gate:g}")
    print(f"{'variant':8s} {'res':>4s} {'head':8s} {'export s':>8s} {'simpl s':>7s} {'nodes':>5s} {'Resize/Loop/If':>14s} "
          f"{'max|d|/max|ref|':>15s} {'min cos':>9s} {'top1':>5s} {'torch ms':>8s} {'ORT ms':>7s}")
    failed = 0
    with tempfile.TemporaryDirectory(prefix="bench-pvt-") as tmp:
        for variant in sizes:
            model = load_model(adapter, variant, None).model
            for res in (int(r) for r in args.res.split(",")):
                for head in args.heads.split(","):
                    r = bench_one(adapter, model, variant, res, head, args, tmp)
                    ok = r["rel"] <= gate and r["banned"] == 0
                    failed += not ok
                    print(f"{r['variant']:8s} {r['res']:4d} {r['head']:8s} {r['export']:8.1f} {r['simplify']:7.1f} {r['nodes']:5d} "
                          f"{r['banned']:14d} {r['rel']:15.2e} {r['cos']:9.7f} {r['top1']:>5s} {r['torch_ms']:8.0f} {r['ort_ms']:7.0f}"
                          f"{'' if ok else '  FAIL'}", flush=True)
            del model
    print("all rows within the FP32 gate" if not failed else f"{failed} row(s) FAILED")
    sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
