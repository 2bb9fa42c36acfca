"""sha256 of the graphs ``deploy-kit export`` writes for a fixed set of tiny requests.

A refactoring that intends no graph change must leave every line of this script's output the same:
run it before and after, and diff the two outputs. It exports with ``--backend none --stop-after
precision`` (no engine, which is not byte-reproducible), fixed seeds and random weights.

    python benchmarks/graph_hashes.py > before.txt      # ... change the code ...
    python benchmarks/graph_hashes.py > after.txt && diff before.txt after.txt
"""

from __future__ import annotations

import glob
import hashlib
import os
import subprocess
import sys
import tempfile

CASES = [
    ["nafnet", "--variant", "tiny", "--height", "64", "--width", "64", "--train-size", "32"],
    ["nafnet", "--variant", "tiny", "--height", "64", "--width", "64", "--train-size", "32", "--fp16"],
    ["nafnet", "--variant", "tiny-notlc", "--height", "64", "--width", "64", "--int8", "--calib-count", "8"],
    ["restormer", "--variant", "tiny", "--height", "64", "--width", "64", "--train-size", "32", "--fp16"],
    ["restormer", "--variant", "tiny", "--height", "64", "--width", "64", "--no-tlc", "--int8", "--calib-count", "8"],
    ["pvt", "--variant", "test-tiny", "--height", "64", "--width", "64", "--fp16"],
]


def main() -> int:
    for case in CASES:
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-c", "from deploy_kit.cli import main; main()", "export", *case, "--backend", "none",
                   "--stop-after", "precision", "--samples", "1", "--out", out]
            run = subprocess.run(cmd, capture_output=True, text=True)
            if run.returncode not in (0, 1):
                print(f"{' '.join(case)}: exit {run.returncode}: {run.stderr.strip()[-300:]}")
                continue
            for path in sorted(glob.glob(os.path.join(out, "*.onnx"))):
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                print(f"{digest[:16]}  {os.path.basename(path)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
