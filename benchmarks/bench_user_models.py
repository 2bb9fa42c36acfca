"""Your own model, measured: the architectures of examples/tiny_models.py and an outside ONNX through export.

For each: the FP16 export (graph-level range-safe pass; true-FP16 PSNR; FP32 nodes kept, by name),
the INT8 export (ONNX Runtime PSNR against the reference), and seam-check of the FP32 graph (tiled vs
full image, the default overlap). Random (the constructors' own) weights; engines not built
(``--backend none``): this is about the graphs.

    python benchmarks/bench_user_models.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples", "tiny_models.py")
CASES = [  # name, source args, size, extra flags
    ("TinySwin", ["--module", f"{EXAMPLES}:TinySwin"], 64, []),
    ("TinySwin [0, 255]", ["--module", f"{EXAMPLES}:TinySwin"], 64, ["--value-range", "255"]),
    ("TinyRRDB x4", ["--module", f"{EXAMPLES}:TinyRRDB"], 32, []),
    ("SEUNet TLC", ["--module", f"{EXAMPLES}:SEUNet"], 64, ["--tlc", "--train-size", "32"]),
    ("SEUNet global", ["--module", f"{EXAMPLES}:SEUNet"], 64, []),
]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", "from deploy_kit.cli import main; main()", *args],
                          capture_output=True, text=True)


def outside_onnx(tmp: str) -> str:
    import torch

    sys.path.insert(0, os.path.dirname(EXAMPLES))
    from tiny_models import TinyRRDB

    torch.manual_seed(0)
    path = os.path.join(tmp, "sr_x2.onnx")
    torch.onnx.export(TinyRRDB(scale=2).eval(), (torch.rand(1, 3, 32, 32),), path, dynamo=False, opset_version=17,
                      input_names=["lr"], output_names=["hr"], dynamic_axes={"lr": {2: "h", 3: "w"}, "hr": {2: "H", 3: "W"}})
    return path


def worst(report: dict, backend: str, precision: str) -> float:
    row = next(c for c in report["checks"] if c["backend"].startswith(backend) and c["precision"] == precision)
    return min(float(o["psnr"]) for o in row["outputs"])


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="dk-bench-user-") as tmp:
        cases = CASES + [("outside ONNX (RRDB x2)", [outside_onnx(tmp)], 40, [])]
        print(f"{'model':<24} {'true-FP16 dB':>12} {'FP32 kept':>9} {'range-safe sites':<26} {'INT8 dB':>8} "
              f"{'seam dB':>8}  FP32 node names")
        for i, (name, source, size, flags) in enumerate(cases):
            out = os.path.join(tmp, str(i))
            common = [*source, "--height", str(size), "--width", str(size), *flags, "--backend", "none", "--out", out]
            r16 = cli("export", *common, "--fp16")
            r8 = cli("export", *common, "--int8", "--calib-count", "16")
            if r16.returncode or r8.returncode:
                print(f"{name}: export failed: {(r16.stderr or r8.stderr).strip()[-300:]}")
                continue
            note = re.search(r"FP16 \(graph-level range-safe pass\): (\d+) sites rescaled \(([^)]*)\); kept FP32: (\d+) "
                             r"nodes \(([^)]*)\)", r16.stdout)
            fp16 = json.load(open(next(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".fp16.parity.json"))))
            int8 = json.load(open(next(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".int8.parity.json"))))
            fp32 = next(os.path.join(out, f) for f in os.listdir(out) if f.endswith(".fp32.onnx"))
            seam = cli("seam-check", fp32, "--context", "tile")
            m = re.search(r"seam ([0-9.]+) dB", seam.stdout)
            print(f"{name:<24} {worst(fp16, 'true-fp16', 'fp16'):>12.2f} {note.group(3) if note else '?':>9} "
                  f"{(note.group(1) + ' ' + note.group(2)) if note else '?':<26} {worst(int8, 'onnxruntime', 'int8'):>8.2f} "
                  f"{m.group(1) if m else 'n/a':>8}  {note.group(4) if note else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
