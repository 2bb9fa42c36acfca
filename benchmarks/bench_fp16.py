"""FP16 graph census and accuracy for exported artifacts (docs/precision.md).

For each export folder given: FP32 nodes and Casts in the FP16 graph (Casts at the graph I/O
counted apart), FP16 PSNR (or cosine) against the FP32 graph on ONNX Runtime (fused CPU kernels)
and on the true-FP16 check (deploy_kit/precision/truefp16.py), on the artifact's own sample inputs.

    python benchmarks/bench_fp16.py OUT_DIR [OUT_DIR ...]
"""

from __future__ import annotations

import glob
import os
import sys

import numpy as np
import onnx

from deploy_kit import metrics


def census(path: str) -> tuple[int, int, int]:
    """(FP32 compute nodes, Casts inside the graph, Casts at the graph I/O) of an FP16 graph."""
    m = onnx.shape_inference.infer_shapes(onnx.load(path, load_external_data=False))
    g = m.graph
    ins, outs = {i.name for i in g.input}, {o.name for o in g.output}
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(g.value_info) + list(g.input) + list(g.output)}
    inits = {i.name: i.data_type for i in g.initializer}
    casts = [n for n in g.node if n.op_type == "Cast"]
    io = [n for n in casts if n.input[0] in ins or n.output[0] in outs]
    fp32_nodes = 0
    for n in g.node:
        if n.op_type in ("Cast", "Constant", "Shape", "Reshape", "Transpose", "Slice", "Concat", "Gather", "Unsqueeze", "Squeeze"):
            continue
        dtypes = {types.get(t, inits.get(t)) for t in n.input if t}
        if onnx.TensorProto.FLOAT in dtypes and n.input[0] not in ins:
            fp32_nodes += 1
    return fp32_nodes, len(casts) - len(io), len(io)


def psnr(ref, out, data_range=None) -> float:
    """PSNR of ``out`` against ``ref``; data range: given, else the reference's own peak-to-peak."""
    ref = np.asarray(ref, np.float64)
    return metrics.psnr(out, ref, data_range or float(ref.max() - ref.min()) or 1.0)


def main(dirs: list[str]) -> None:
    from deploy_kit.data.samples import sample_images
    from deploy_kit.onnxmeta import read_metadata
    from deploy_kit.precision.truefp16 import true_fp16_outputs
    from deploy_kit.runners.ort import OrtRunner

    print("| artifact | FP32 compute nodes | Casts inside / at I/O | FP16 PSNR ORT dB | FP16 PSNR true-FP16 dB |")
    print("|---|---|---|---|---|")
    for d in dirs:
        fp16 = sorted(glob.glob(os.path.join(d, "*.fp16.onnx")))[0]
        fp32 = fp16.replace(".fp16.onnx", ".fp32.onnx")
        meta = read_metadata(fp32)
        _, ch, h, w = meta["input_shape"]
        deg = meta.get("degradation", "none")
        xs = sample_images(1, ch, h, w, None if deg == "none" else deg, int(meta.get("seed", 0)))
        with OrtRunner(fp32) as r:
            ref = r.run_many(xs)
        with OrtRunner(fp16) as r:
            ort = r.run_many(xs)
        true16 = true_fp16_outputs(fp16, xs, fp16_path=fp16)
        image = meta.get("output_kind", "image") == "image"
        p_ort = min(psnr(a, b, 1.0 if image else None) for ra, oa in zip(ref, ort) for a, b in zip(ra, oa))
        p_true = min(psnr(a, b, 1.0 if image else None) for ra, oa in zip(ref, true16) for a, b in zip(ra, oa))
        n32, inner, io = census(fp16)
        print(f"| {os.path.basename(fp16)} | {n32} | {inner} / {io} | {p_ort:.2f} | {p_true:.2f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
