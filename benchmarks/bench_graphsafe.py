"""Graph-level range-safe FP16 pass vs the hand-written rewrites, on the built-in families.

For each model (trained demo checkpoints where they ship, deploy_kit/demo/) the FP32 ONNX is
exported twice with the pipeline's own steps (deploy_kit/pipeline/graph.py stage_export + simplify):

* hand-written: the normal export form (models/rangesafe.py scales chosen from the inputs),
  then ``convert_fp16`` with the model's FP32 islands — what ``deploy-kit export MODEL --fp16``
  writes;
* plain: the same export form with the rewrites switched off (``set_range_safe(module, False)``),
  then :func:`deploy_kit.precision.graphsafe.convert_fp16_safe` (graph-level pass, FP16, islands
  only if the true-FP16 check stays below 50 dB).

Every FP16 graph is judged by the true-FP16 check (deploy_kit/precision/truefp16.py) against its
own FP32 ONNX on ONNX Runtime: worst-output PSNR, data range 1 for images, the reference's range
for features and logits. "plain all FP16" is the plain graph converted with neither pass nor
islands: below the hand-written route only where FP16 really overflows. Cases: each model's
default sample inputs; the same inputs with contrast x256 around 0.5 (PSNR over the reference's
range, as the output range grows too); Restormer at 512x512, where its q/k sums of squares run
over 262 144 pixels.

    python benchmarks/bench_graphsafe.py                 # 1-2 min on 2 CPU cores
    python benchmarks/bench_graphsafe.py --size 128 --large 512 --pvt-size 224 --contrast 256
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
DEMO = os.path.join(os.path.dirname(HERE), "deploy_kit", "demo")


def export_fp32(adapter, model, req, xs, path: str, hand_written: bool) -> None:
    """The FP32 ONNX as the pipeline exports it; ``hand_written=False`` switches the rewrites off."""
    import torch

    from deploy_kit.export import export_onnx
    from deploy_kit.models.rangesafe import apply_scales, record_ranges, set_range_safe
    from deploy_kit.reference import reference_runner
    from deploy_kit.simplify import simplify

    exportable = adapter.wrap(model, req, static=True)
    if hand_written:
        runner = reference_runner(adapter, model, req)
        with record_ranges(runner.module) as ranges:
            runner.run_many(xs)
        apply_scales(exportable, dict(ranges))
    else:
        set_range_safe(exportable, False)
    raw = path + ".raw.onnx"
    export_onnx(exportable, torch.from_numpy(xs[0]), raw, input_names=adapter.input_names(req),
                output_names=adapter.output_names(req), metadata={"precision": "fp32"})
    simplify(raw, path)
    os.remove(raw)


def measure(name: str, model_name: str, variant: str, weights: str | None, size: int, contrast: float | None,
            tmp: str) -> dict:
    """One table row: both routes on the model's sample inputs (contrast-stretched when ``contrast``)."""
    from deploy_kit.models.checkpoint import load_model
    from deploy_kit.models.registry import get_adapter
    from deploy_kit.precision.fp16 import convert_fp16
    from deploy_kit.precision.graphsafe import convert_fp16_safe
    from deploy_kit.precision.truefp16 import psnr_of, true_fp16_check
    from deploy_kit.request import resolve_request

    req = resolve_request(model_name, variant=variant, weights=weights, height=size, width=size, precision="fp16")
    adapter = get_adapter(model_name)
    model = load_model(adapter, req.variant, weights, req.seed).model
    kind = adapter.output_kind(req)
    xs = adapter.sample_inputs(req, count=2)
    label = "default"
    if contrast is not None:  # the output range grows with the input's: PSNR over the reference's range
        xs = [((x - 0.5) * contrast + 0.5).astype(np.float32) for x in xs]
        kind, label = ("features" if kind == "image" else kind), f"contrast x{contrast:g}"
    stem = os.path.join(tmp, f"{model_name}-{size}-{label.split()[0]}")
    t0 = time.time()
    export_fp32(adapter, model, req, xs, stem + ".hand.fp32.onnx", True)
    rep = convert_fp16(stem + ".hand.fp32.onnx", stem + ".hand.fp16.onnx", adapter.fp32_islands(req))
    hand = psnr_of(true_fp16_check(stem + ".hand.fp32.onnx", xs, fp16_path=stem + ".hand.fp16.onnx", kind=kind))
    export_fp32(adapter, model, req, xs, stem + ".plain.fp32.onnx", False)
    plain = psnr_of(true_fp16_check(stem + ".plain.fp32.onnx", xs, kind=kind))
    res = convert_fp16_safe(stem + ".plain.fp32.onnx", xs, stem + ".graph.fp16.onnx", target_psnr=50.0, kind=kind)
    patterns: dict[str, int] = {}
    for s in res.sites:
        patterns[s.pattern] = patterns.get(s.pattern, 0) + 1
    print(f"  {name} {size} {label}: {time.time() - t0:.0f} s", file=sys.stderr)
    return dict(model=f"{name} {size}x{size}", inputs=label, kind=kind, plain=plain, hand=hand,
                hand_kept=len(rep.kept_fp32), sites=", ".join(f"{v} {k}" for k, v in sorted(patterns.items())) or "none",
                before=res.psnr_before, after=res.psnr_after, kept=len(res.kept_fp32), kept_names=res.kept_fp32)


def fmt(v: float) -> str:
    return f"{v:.2f}" if np.isfinite(v) else ("inf" if v > 0 else "-inf (inf/NaN)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=128, help="NAFNet/Restormer export size (square)")
    ap.add_argument("--large", type=int, default=512, help="Restormer's second size (0: skip)")
    ap.add_argument("--pvt-size", type=int, default=224)
    ap.add_argument("--pvt-variant", default="v2-b0")
    ap.add_argument("--contrast", type=float, default=256.0)
    args = ap.parse_args(argv)
    nafnet = ("NAFNet demo-w16 (trained)", "nafnet", "demo-w16", os.path.join(DEMO, "nafnet-demo-w16-noise25.pth"))
    restormer = ("Restormer demo-d12 (trained)", "restormer", "demo-d12", os.path.join(DEMO, "restormer-demo-d12-blur9.pth"))
    pvt = (f"PVT {args.pvt_variant} (random)", "pvt", args.pvt_variant, None)
    runs = [(nafnet, args.size, None), (nafnet, args.size, args.contrast), (restormer, args.size, None),
            (restormer, args.size, args.contrast)] + ([(restormer, args.large, None)] if args.large else []) + [
            (pvt, args.pvt_size, None), (pvt, args.pvt_size, args.contrast)]
    with tempfile.TemporaryDirectory(prefix="dk-bench-graphsafe-") as tmp:
        rows = [measure(*m, size, contrast, tmp) for m, size, contrast in runs]
    print("true-FP16 PSNR dB, worst output over 2 sample inputs, each FP16 graph against its own FP32 ONNX "
          "(image: data range 1; features/logits: the reference's range); FP32 kept = nodes left FP32")
    head = ("model", "inputs", "PSNR", "plain all FP16", "hand-written", "FP32 kept", "graph-level sites",
            "graph-level", "FP32 kept", "graph - hand")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        delta = r["after"] - r["hand"] if np.isfinite(r["after"]) and np.isfinite(r["hand"]) else float("nan")
        print(f"| {r['model']} | {r['inputs']} | {r['kind']} | {fmt(r['plain'])} | {fmt(r['hand'])} | {r['hand_kept']} | "
              f"{r['sites']} | {fmt(r['after'])} | {r['kept']} | {delta:+.2f} |")
    for r in rows:
        if r["plain"] >= r["hand"] - 0.5:
            print(f"note: {r['model']}, {r['inputs']} inputs: no FP16 overflow that matters in the plain graph "
                  f"(all FP16 {fmt(r['plain'])} dB, hand-written {fmt(r['hand'])} dB)")
        if r["kept"]:
            print(f"note: {r['model']}, {r['inputs']}: graph-level kept FP32 {', '.join(r['kept_names'])}")


if __name__ == "__main__":
    main()
