"""Quality table: what each precision costs, in the two numbers a user cares about.

For every ONNX (fp32 / fp16 / int8 of one export), on held-out (degraded, clean) pairs, with
onnxruntime on the CPU:

* ``psnr_vs_fp32``: output PSNR against the FP32 ONNX output on the same input (the parity
  number; raw outputs, no clipping, data range 1);
* ``restoration_psnr``: PSNR of the output, clipped to [0, 1] as a saved image would be, against
  the clean target (the task number), with ``input_psnr`` (degraded input vs target) for scale;
  a super-resolution model's targets are S times its input (``downscale:S`` pairs), and its
  ``input_psnr`` is that of the input enlarged to the target by bicubic interpolation (the usual
  baseline);
* ``restoration_drop``: FP32 restoration PSNR minus this precision's (positive = worse).

All values are means of per-pair PSNR (dB).

The graphs run without ONNX Runtime's graph optimisations, so an INT8 graph's QuantizeLinear /
DequantizeLinear pairs run as written (exact Q/DQ arithmetic, as TensorRT's int32 accumulation
computes it) instead of being fused into ONNX Runtime's own int8 kernels. On x86-64 CPUs with AVX2
but without VNNI those kernels multiply with VPMADDUBSW, which saturates
(https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html, "When and why do I
need to try U8U8?"): measured on the demo NAFNet, 0.47 dB of restoration lost on an AVX2-only
EPYC against 0.005 dB for the Q/DQ arithmetic itself. The table judges the graph, not the CPU that
happens to check it; the parity rows still run ONNX Runtime's int8 kernels.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..compare import run_samples
from ..data.degrade import resize_bicubic
from ..errors import UsageError
from ..metrics import psnr
from ..runners.ort import OrtRunner


def _outputs(path: str, pairs, input_name: str, threads: int) -> list[np.ndarray]:
    """First output of ``path`` for each pair's degraded input (ONNX Runtime CPU, unoptimised: see the
    module's docstring); a graph of batch N > 1 gets the inputs N at a time
    (:func:`deploy_kit.compare.run_samples`)."""
    with OrtRunner(path, threads=threads, input_name=input_name, optimize=False) as runner:
        return [outs[0] for outs in run_samples(runner, [x for x, _ in pairs])]


def quality_table(
    onnx_by_precision: dict[str, str],
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    input_name: str = "input",
    threads: int = 0,
) -> dict:
    """Measure every precision against FP32 and against the clean targets.

    Args:
        onnx_by_precision: precision name → ONNX path; must contain ``"fp32"`` (the reference).
        pairs: (degraded input, clean target), float32 in [0, 1]: inputs (1, C, H, W), targets
            (1, C, S*H, S*W) for a model of output scale S (1: restoration)
            (:func:`deploy_kit.precision.calibration.eval_pairs`); graphs of a static batch N > 1
            take them N at a time.
        input_name: the models' input name.
        threads: onnxruntime intra-op threads (0 = onnxruntime's default).

    Returns:
        ``{precision: {"psnr_vs_fp32", "restoration_psnr", "restoration_drop", "input_psnr",
        "min_psnr_vs_fp32", "pairs"}}`` in the order given (fp32 first), PSNRs in dB.

    Raises:
        UsageError: no ``fp32`` entry, no pairs, a model without ``input_name``, or outputs of another
            size than the targets (a super-resolution model measured on pairs without its downscale).
    """
    if "fp32" not in onnx_by_precision:
        raise UsageError("quality_table needs the fp32 ONNX as the reference (key 'fp32')")
    if not pairs:
        raise UsageError("quality_table needs at least one (input, target) pair")
    order = ["fp32"] + [p for p in onnx_by_precision if p != "fp32"]
    refs = _outputs(onnx_by_precision["fp32"], pairs, input_name, threads)
    out_hw, in_hw, target_hw = refs[0].shape[2:], pairs[0][0].shape[2:], pairs[0][1].shape[2:]
    if out_hw != target_hw:
        raise UsageError(f"the model outputs {out_hw[0]}x{out_hw[1]} for {in_hw[0]}x{in_hw[1]} inputs but the clean "
                         f"targets are {target_hw[0]}x{target_hw[1]}; a model of output scale S needs pairs degraded "
                         "with downscale:S")
    input_psnr = float(np.mean([psnr(_as_target(x, y), y) for x, y in pairs]))
    table: dict[str, dict] = {}
    for prec in order:
        if prec == "fp32":
            outs = refs
        else:
            outs = _outputs(onnx_by_precision[prec], pairs, input_name, threads)
        vs_ref = [psnr(o, r) for o, r in zip(outs, refs)]
        task = [psnr(np.clip(o, 0.0, 1.0), y) for o, (_, y) in zip(outs, pairs)]
        table[prec] = {
            "psnr_vs_fp32": _mean(vs_ref),
            "min_psnr_vs_fp32": float(min(vs_ref)),
            "restoration_psnr": _mean(task),
            "input_psnr": input_psnr,
            "pairs": len(pairs),
        }
    base = table["fp32"]["restoration_psnr"]
    for row in table.values():
        row["restoration_drop"] = base - row["restoration_psnr"]
    return table


def _as_target(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The input ``x`` (1, C, H, W) at the target ``y``'s size: itself, or enlarged by bicubic interpolation."""
    if x.shape == y.shape:
        return x
    up = resize_bicubic(x[0].transpose(1, 2, 0), y.shape[2], y.shape[3])
    return np.clip(up, 0.0, 1.0).transpose(2, 0, 1)[None]


def _mean(values: Sequence[float]) -> float:
    """Mean of per-pair PSNR (inf when any pair is bit-identical, e.g. FP32 against itself)."""
    return float(np.mean(values))


def format_quality_table(table: dict) -> str:
    """Aligned text table of :func:`quality_table`'s result."""
    head = ("precision", "PSNR vs FP32", "min vs FP32", "restoration PSNR", "drop", "input PSNR")
    rows = [head]
    for prec, r in table.items():
        rows.append((
            prec,
            _fmt(r["psnr_vs_fp32"]),
            _fmt(r["min_psnr_vs_fp32"]),
            _fmt(r["restoration_psnr"]),
            f"{r['restoration_drop']:+.3f}",
            _fmt(r["input_psnr"]),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = []
    for k, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    n = next(iter(table.values()))["pairs"] if table else 0
    lines.append(f"(dB, mean over {n} held-out pairs; drop = FP32 restoration PSNR - this one)")
    return "\n".join(lines)


def _fmt(v: float) -> str:
    return "inf" if math.isinf(v) else f"{v:.2f}"
