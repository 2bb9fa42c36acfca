"""NAFNet figures quoted in notes (full-size variants; minutes on a 2-core CPU).

Prints:
  1. export + simplify seconds for gopro-w64 at 256x256;
  2. ONNX Runtime / PyTorch eager CPU latency ratio for gopro-w32 at 256x256, same thread count
     (goal <= 0.8);
  3. TLC / no-TLC ONNX Runtime latency ratio at 720x1280 for gopro-w32 (goal <= 1.15).

Usage: python benchmarks/bench_nafnet.py [--threads 2] [--repeats 5] [--only 1,2,3] [--big-size 720x1280]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

from _common import median_time, ort_session  # noqa: E402 (benchmarks/ is on sys.path)




def export_simplified(variant: str, h: int, w: int, tlc: bool, out_dir: str) -> tuple[str, float, float]:
    import torch

    from deploy_kit.export import export_onnx
    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_model
    from deploy_kit.simplify import simplify
    from deploy_kit.specs import ExportRequest, TLCConfig

    adapter = get_adapter("nafnet")
    model = load_model(adapter, variant, None).model
    req = ExportRequest("nafnet", variant, h, w, tlc=TLCConfig() if tlc else None)
    raw = os.path.join(out_dir, f"{variant}-{h}x{w}-{tlc}.raw.onnx")
    dst = raw.replace(".raw.onnx", ".onnx")
    t = time.perf_counter()
    export_onnx(adapter.wrap(model, req, static=True), torch.rand(1, 3, h, w), raw,
                input_names=["input"], output_names=["output"], metadata={})
    t_export = time.perf_counter() - t
    t = time.perf_counter()
    simplify(raw, dst)
    return dst, t_export, time.perf_counter() - t




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", default="1,2,3")
    ap.add_argument("--big-size", default="720x1280")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    only = {int(x) for x in args.only.split(",")}
    bh, bw = (int(v) for v in args.big_size.split("x"))
    print(f"torch {torch.__version__}, threads {args.threads}, cpu count {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        if 1 in only:
            _, te, ts = export_simplified("gopro-w64", 256, 256, True, tmp)
            print(f"[1] gopro-w64 256x256 export {te:.1f} s + simplify {ts:.1f} s = {te + ts:.1f} s")
        if 2 in only:
            from deploy_kit.models import get_adapter
            from deploy_kit.models.checkpoint import load_model
            from deploy_kit.specs import ExportRequest

            path, _, _ = export_simplified("gopro-w32", 256, 256, False, tmp)
            adapter = get_adapter("nafnet")
            model = adapter.wrap(load_model(adapter, "gopro-w32", None).model, ExportRequest("nafnet", "gopro-w32", 256, 256), static=True)
            x = np.random.rand(1, 3, 256, 256).astype(np.float32)
            xt = torch.from_numpy(x)
            sess = ort_session(path, args.threads)
            with torch.inference_mode():
                t_torch = median_time(lambda: model(xt), args.repeats)
            t_ort = median_time(lambda: sess.run(None, {"input": x}), args.repeats)
            print(f"[2] gopro-w32 256x256: torch eager {t_torch * 1e3:.0f} ms, ORT {t_ort * 1e3:.0f} ms, "
                  f"ratio ORT/torch {t_ort / t_torch:.2f} (goal <= 0.8)")
        if 3 in only:
            x = np.random.rand(1, 3, bh, bw).astype(np.float32)
            times = {}
            for tlc in (False, True):
                path, _, _ = export_simplified("gopro-w32", bh, bw, tlc, tmp)
                sess = ort_session(path, args.threads)
                times[tlc] = median_time(lambda: sess.run(None, {"input": x}), max(3, args.repeats // 2))
                del sess
            print(f"[3] gopro-w32 {bh}x{bw} ORT: no-TLC {times[False]:.2f} s, TLC {times[True]:.2f} s, "
                  f"ratio {times[True] / times[False]:.3f} (goal <= 1.15)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
