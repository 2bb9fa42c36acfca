"""GPU check: deploy-kit on one GPU, end to end, as one report (a Markdown table and a JSON file).

    python benchmarks/gpu_check.py --json gpu_check.json [--out DIR] [--budget 480] [--skip-export] [--skip-torch]

Steps, each timed and under its own timeout; a failure is reported and the script goes on where
it can (it exits 0 when it reached the end):

1. environment: GPU, driver, CUDA runtime, Python, numpy, torch, onnxruntime, TensorRT(-RTX), ``deploy-kit env``
2. export + bundle: NAFNet demo-w16 (trained weights shipped in deploy_kit/demo), 256x256, FP16, batch 4
3. ``deploy-kit build`` and ``deploy-kit verify`` of the bundle per installed TensorRT flavour
4. engine-only throughput through EngineRunner with 1 and 2 slots (in a child process: a crash
   there is reported, not fatal)
5. end to end: ``deploy-kit run`` on a 12 MP PNG and a 1080p H.264 clip
6. PyTorch CUDA baselines of the same model (eager FP32, FP16, channels_last), if torch has CUDA

Without a GPU, steps 1-3 run on the CPU (TensorRT-RTX builds ahead of time without one) and the
GPU steps are skipped with the reason. TensorRT-RTX targets consumer/workstation compute
capabilities only (no Hopper: https://docs.nvidia.com/deeplearning/tensorrt-rtx/latest/getting-started/support-matrix.html);
step 1 says when this GPU is not among them, and the ``tensorrt`` flavour is then the one that runs.
"""

from __future__ import annotations

import argparse
import collections
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
FLAVOURS = {"tensorrt-rtx": "tensorrt_rtx", "tensorrt": "tensorrt"}
H = W = 256
BATCH = 4


class Skip(Exception):
    """A step that cannot run here (the message says why)."""


class Report:
    def __init__(self, json_path: str | None, budget: float):
        self.json_path, self.budget, self.t0 = json_path, budget, time.monotonic()
        self.steps: list[dict] = []
        self.facts: dict = {"plans": {}, "verified": {}}

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def step(self, name: str, fn, need: float = 20) -> None:
        entry = {"step": name, "status": "ok", "seconds": 0.0, "summary": "", "lines": [], "details": {}}
        print(f"\n== {name}", flush=True)
        start = time.monotonic()
        try:
            if self.left() < need:
                raise Skip(f"time budget: {self.left():.0f} s left of {self.budget:.0f}, the step needs ~{need:.0f}")
            fn(entry)
        except Skip as exc:
            entry["status"], entry["summary"] = "skipped", str(exc)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, the script goes on
            entry["status"], entry["summary"] = "failed", f"{type(exc).__name__}: {exc}"
            entry["details"]["traceback"] = traceback.format_exc(limit=6)
        entry["seconds"] = round(time.monotonic() - start, 1)
        if entry["status"] != "ok" or not entry["summary"]:
            print(f"-> {entry['status']}: {entry['summary']}", flush=True)
        self.steps.append(entry)
        self.save()

    def save(self) -> None:
        if self.json_path:
            with open(self.json_path, "w") as fh:
                json.dump({"steps": self.steps, "facts": self.facts,
                           "elapsed_s": round(time.monotonic() - self.t0, 1)}, fh, indent=1)

    def summary(self) -> str:
        rows = ["| step | status | seconds | result |", "|---|---|---|---|"]
        for s in self.steps:
            rows.append(f"| {s['step']} | {s['status']} | {s['seconds']} | {s['summary'].replace('|', '/')[:300]} |")
        return "\n".join(rows)


def say(entry: dict, line: str) -> None:
    print(line, flush=True)
    entry["lines"].append(line)


def run(cmd: list, timeout: float) -> tuple[int, str, float]:
    """(exit code, stdout and stderr interleaved, seconds); 124 on timeout."""
    start = time.monotonic()
    try:
        p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, cwd=REPO)
        return p.returncode, p.stdout, time.monotonic() - start
    except subprocess.TimeoutExpired as exc:
        text = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr))
        return 124, text + f"\n(timed out after {timeout:.0f} s)", time.monotonic() - start
    except OSError as exc:
        return 127, str(exc), time.monotonic() - start


def cli(*args, timeout: float) -> tuple[int, str, float]:
    return run([sys.executable, "-c", "from deploy_kit.cli import main; main()", *args], timeout)


def closing_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and "%" not in ln[-6:]]  # not progress bars
    return lines[-1].strip() if lines else ""


# -- 1 --------------------------------------------------------------------------------------------
def environment(rep: Report, entry: dict) -> None:
    import numpy as np

    from deploy_kit.runtime import cuda

    ok, why = cuda.gpu_available()
    rep.facts.update(gpu=ok, gpu_reason=why)
    if shutil.which("nvidia-smi"):
        code, text, _ = run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], 30)
        say(entry, f"nvidia-smi: {text.strip() if code == 0 else f'failed ({code}): {text.strip()[:200]}'}")
    else:
        say(entry, "nvidia-smi: not found")
    info = cuda.device_info()
    say(entry, f"GPU usable: {ok}{'' if ok else ' - ' + why}; device: {info}")
    lib = cuda._cudart()
    say(entry, f"CUDA versions {cuda.versions()}, libcudart {lib._name if lib is not None else 'not found'}")
    say(entry, f"Python {sys.version.split()[0]}, numpy {np.__version__}")
    code, text, _ = run([sys.executable, "-c", "import json, torch; print(json.dumps({'torch': torch.__version__, "
                         "'cuda_available': torch.cuda.is_available(), 'torch_cuda': torch.version.cuda}))"], 90)
    torch_info = json.loads(text.strip().splitlines()[-1]) if code == 0 else {"torch": f"unavailable ({text.strip()[-160:]})"}
    rep.facts["torch_cuda"] = bool(torch_info.get("cuda_available"))
    say(entry, f"torch: {torch_info}")
    try:
        import onnxruntime as ort

        say(entry, f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}")
    except Exception as exc:  # noqa: BLE001
        say(entry, f"onnxruntime: not importable ({exc})")
    installed = []
    for name, module in FLAVOURS.items():
        try:
            trt = importlib.import_module(module)
        except Exception as exc:  # noqa: BLE001
            say(entry, f"{module}: not importable ({type(exc).__name__}: {str(exc)[:120]})")
            continue
        installed.append(name)
        say(entry, f"{module} {trt.__version__}")
        if hasattr(trt, "ComputeCapability") and info:
            targets = [k for k in trt.ComputeCapability.__members__ if k.startswith("SM")]
            sm = "SM" + info["compute_capability"].replace(".", "")
            rep.facts["rtx_targets_gpu"] = sm in targets
            if sm not in targets:
                say(entry, f"WARNING: {module} {trt.__version__} targets {', '.join(targets)}; this GPU is "
                           f"{sm}: TensorRT-RTX engines are not expected to run here")
    rep.facts["flavours"] = installed
    code, text, _ = cli("env", timeout=90)
    entry["lines"] += ["deploy-kit env:"] + text.rstrip().splitlines()
    print("deploy-kit env:\n" + text.rstrip(), flush=True)
    gpu = f"yes: {info['name']}" if ok and info else "no"
    entry["summary"] = f"GPU {gpu}; TensorRT flavours: {', '.join(installed) or 'none'}"


# -- 2 --------------------------------------------------------------------------------------------
def export(rep: Report, out: str, entry: dict) -> None:
    import deploy_kit.demo

    weights = os.path.join(os.path.dirname(deploy_kit.demo.__file__), "nafnet-demo-w16-noise25.pth")
    args = ["export", "nafnet", "--variant", "demo-w16", "--weights", weights, "--height", H, "--width", W, "--fp16",
            "--bundle", "--batch", BATCH, "--backend", "tensorrt-rtx", "--out", out]
    code, text, dt = cli(*args, timeout=min(300, rep.left() - 10))
    if code != 0 and "--batch" in text and ("No such option" in text or "no such option" in text):
        say(entry, "--batch was rejected: retrying without it (batch 1)")
        i = args.index("--batch")
        del args[i:i + 2]
        code, text, dt = cli(*args, timeout=min(300, rep.left() - 10))
    bundles = sorted(p for p in os.listdir(out) if p.endswith(".bundle")) if os.path.isdir(out) else []
    if not bundles:  # the engine stage failed before the bundle was written: bundle without an engine
        say(entry, f"export exited {code} without a bundle; retrying with --backend none")
        entry["details"]["first_output_tail"] = text[-3000:]
        args[args.index("--backend") + 1] = "none"
        code, text, dt = cli(*args, timeout=min(300, rep.left() - 10))
        bundles = sorted(p for p in os.listdir(out) if p.endswith(".bundle")) if os.path.isdir(out) else []
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if ln.startswith("Parity against")), len(lines))
    for ln in lines[start:]:
        if not ln.strip():
            break
        say(entry, ln)
    entry["details"]["output_tail"] = text[-3000:]
    if not bundles:
        raise RuntimeError(f"export exited {code}, no bundle: {closing_line(text)}")
    rep.facts["bundle"] = os.path.join(out, bundles[-1])
    entry["summary"] = f"exit {code} in {dt:.0f} s; bundle {bundles[-1]}"


# -- 3 --------------------------------------------------------------------------------------------
def plan_for(bundle: str, flavour: str) -> str | None:
    found = []
    for f in os.listdir(bundle):
        if f.endswith(".plan") and os.path.isfile(os.path.join(bundle, f + ".json")):
            with open(os.path.join(bundle, f + ".json")) as fh:
                if json.load(fh).get("backend", {}).get("name") == flavour:
                    found.append(os.path.join(bundle, f))
    return max(found, key=os.path.getmtime) if found else None


def build_verify(rep: Report, entry: dict) -> None:
    bundle = rep.facts.get("bundle")
    if not bundle:
        raise Skip("no bundle (step 2)")
    results = []
    for flavour in [f for f in FLAVOURS if f in rep.facts.get("flavours", [])]:
        code, text, dt = cli("build", bundle, "--backend", flavour, timeout=min(300, rep.left() - 10))
        say(entry, f"build {flavour}: exit {code} in {dt:.1f} s: {closing_line(text)}")
        plan = plan_for(bundle, flavour) if code == 0 else None
        if plan:
            rep.facts["plans"][flavour] = plan
        if not rep.facts.get("gpu"):
            results.append(f"{flavour} built ({code}), verify skipped: no GPU")
            continue
        if not plan:
            results.append(f"{flavour} build failed ({code})")
            entry["details"][f"build_{flavour}"] = text[-3000:]
            continue
        code, text, dt = cli("verify", bundle, "--backend", flavour, timeout=min(180, rep.left() - 10))
        say(entry, f"verify {flavour}: exit {code} in {dt:.1f} s")
        for ln in text.rstrip().splitlines():
            say(entry, "  " + ln)
        rep.facts["verified"][flavour] = code == 0
        results.append(f"{flavour} verify {'pass' if code == 0 else f'exit {code}'}")
    entry["summary"] = "; ".join(results) or "no TensorRT flavour installed"


# -- 4 --------------------------------------------------------------------------------------------
def engine_bench_child(plan: str, module: str, name: str, warmup: int = 5, runs: int = 30) -> dict:
    """Runs in a child process: EngineRunner throughput with 1 and 2 slots, and a pipelining check."""
    import numpy as np

    from deploy_kit.runtime.session import EngineRunner

    trt = importlib.import_module(module)
    out = {}
    for slots in (1, 2):
        t = time.perf_counter()
        with EngineRunner(plan, trt, name=name, slots=slots) as r:
            opened = time.perf_counter() - t
            rng = np.random.default_rng(0)
            xs = [rng.random(r.input_shape, dtype=np.float32) for _ in range(4)]
            expected = [r.run(x) for x in xs]
            pending, got = collections.deque(), []
            for x in xs:  # slots in flight must give what sequential runs give
                pending.append(r.submit(x))
                if len(pending) == slots:
                    got.append([a.copy() for a in pending.popleft().wait()])
            got += [[a.copy() for a in p.wait()] for p in pending]
            diff = max(float(np.max(np.abs(a - b))) for e, g in zip(expected, got) for a, b in zip(e, g))
            stamps, submit_s, pending = [], [], collections.deque()
            for i in range(warmup + runs):
                t = time.perf_counter()
                pending.append(r.submit(xs[i % len(xs)]))
                submit_s.append(time.perf_counter() - t)
                if len(pending) == slots:  # the oldest pass must end before its slot is reused
                    pending.popleft().wait()
                    stamps.append(time.perf_counter())
            while pending:
                pending.popleft().wait()
                stamps.append(time.perf_counter())
            gaps = [b - a for a, b in zip(stamps, stamps[1:])][warmup:]
            n, _, h, w = r.input_shape
            med = statistics.median(gaps)
            out[f"slots={slots}"] = {"input_shape": list(r.input_shape), "open_s": round(opened, 2),
                                     "median_ms": round(med * 1e3, 3),
                                     "p90_ms": round(sorted(gaps)[int(0.9 * (len(gaps) - 1))] * 1e3, 3),
                                     "MP_per_s": round(n * h * w / 1e6 / med, 1), "batches": len(gaps),
                                     "submit_median_ms": round(statistics.median(submit_s[warmup:]) * 1e3, 3),
                                     "pipelined_vs_run_max_abs_diff": diff}
    return out


def engine_throughput(rep: Report, entry: dict) -> None:
    if not rep.facts.get("gpu"):
        raise Skip(f"no GPU: {rep.facts.get('gpu_reason')}")
    if not rep.facts["plans"]:
        raise Skip("no engine was built (step 3)")
    results = []
    for flavour, plan in rep.facts["plans"].items():
        code, text, dt = run([sys.executable, os.path.abspath(__file__), "--engine-bench", plan, FLAVOURS[flavour], flavour],
                             min(150, rep.left() - 10))
        line = next((ln for ln in reversed(text.splitlines()) if ln.startswith("RESULT ")), None)
        if code != 0 or line is None:
            say(entry, f"{flavour}: child exited {code} in {dt:.0f} s: {text.strip()[-800:]}")
            results.append(f"{flavour} failed ({code})")
            continue
        data = json.loads(line[len("RESULT "):])
        entry["details"][flavour] = data
        for key, d in data.items():
            say(entry, f"{flavour} {key}: {d['MP_per_s']} MP/s, median {d['median_ms']} ms per batch of {d['input_shape'][0]} "
                       f"(p90 {d['p90_ms']}, submit {d['submit_median_ms']} ms, open {d['open_s']} s, "
                       f"pipelined-vs-run max diff {d['pipelined_vs_run_max_abs_diff']:.3g})")
        results.append(f"{flavour}: " + ", ".join(f"{k} {d['MP_per_s']} MP/s" for k, d in data.items()))
    entry["summary"] = "; ".join(results)
    if not any("MP/s" in r for r in results):
        entry["status"] = "failed"


# -- 5 --------------------------------------------------------------------------------------------
def make_media(out: str, entry: dict) -> tuple[str, str | None]:
    import numpy as np

    rng = np.random.default_rng(0)

    def scene(h, w, shift=0):
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        x += shift
        img = np.stack([0.5 + 0.4 * np.sin(x / 97 + y / 211), 0.5 + 0.4 * np.cos(y / 131),
                        0.5 + 0.3 * np.sin((x + y) / 173)], axis=-1)
        img[((x - w / 2) ** 2 + (y - h / 2) ** 2) < (h / 4) ** 2] *= 0.6
        noisy = img + rng.normal(0, 25 / 255, img.shape).astype(np.float32)
        return (np.clip(noisy, 0, 1) * 255 + 0.5).astype(np.uint8)

    photo = os.path.join(out, "photo.png")
    from deploy_kit.runtime import imageio

    arr = scene(3000, 4000)
    if hasattr(imageio, "encode_image") and hasattr(imageio, "ImageInfo"):  # the runtime's own PNG writer
        imageio.encode_image(photo, arr, imageio.ImageInfo(format="PNG", colour=3, alpha=False, bits=8))
    else:
        from PIL import Image

        Image.fromarray(arr).save(photo, compress_level=1)
    say(entry, f"photo: {photo} 4000x3000 ({os.path.getsize(photo) / 1e6:.1f} MB)")
    try:
        import av
    except ImportError as exc:
        say(entry, f"video: skipped, PyAV not importable ({exc})")
        return photo, None
    clip = os.path.join(out, "clip.mp4")
    codec = next((c for c in ("libx264", "h264", "libopenh264") if c in av.codecs_available), None)
    if codec is None:
        say(entry, "video: skipped, this PyAV has no H.264 encoder")
        return photo, None
    with av.open(clip, "w") as container:
        stream = container.add_stream(codec, rate=30)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        base = scene(1080, 1920 + 240)
        for i in range(60):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, 4 * i:4 * i + 1920]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    say(entry, f"video: {clip} 1920x1080, 60 frames, {codec} ({os.path.getsize(clip) / 1e6:.1f} MB)")
    return photo, clip


def end_to_end(rep: Report, out: str, entry: dict) -> None:
    if not rep.facts.get("gpu"):
        raise Skip(f"no GPU: {rep.facts.get('gpu_reason')}")
    flavours = [f for f, ok in rep.facts["verified"].items() if ok]
    if not flavours:
        raise Skip("no engine passed verify (step 3)")
    photo, clip = make_media(out, entry)
    results = []
    for flavour in flavours:
        for src, pixels, frames in ((photo, 12e6, None), (clip, 1920 * 1080 * 60, 60)):
            if src is None or rep.left() < 40:
                continue
            dst = os.path.join(out, f"restored-{flavour}")
            code, text, dt = cli("run", rep.facts["bundle"], src, "--out", dst, "--backend", flavour,
                                 timeout=min(240, rep.left() - 10))
            rate = f"{pixels / 1e6 / dt:.1f} MP/s" + (f", {frames / dt:.1f} frames/s" if frames else "")
            say(entry, f"run {flavour} {os.path.basename(src)}: exit {code}, {dt:.1f} s wall ({rate}, process start "
                       f"and engine load included); its closing line: {closing_line(text)}")
            if code != 0:
                entry["details"][f"{flavour}_{os.path.basename(src)}"] = text[-3000:]
            results.append(f"{flavour} {os.path.basename(src)}: " + (rate if code == 0 else f"exit {code}"))
    entry["summary"] = "; ".join(results)
    if not any("MP/s" in r for r in results):
        entry["status"] = "failed"


# -- 6 --------------------------------------------------------------------------------------------
TORCH_CHILD = r"""
import json, statistics, sys, time, torch
sys.path.insert(0, REPO)
from deploy_kit.models import get_adapter
from deploy_kit.models.checkpoint import load_model
import deploy_kit.demo, os
w = os.path.join(os.path.dirname(deploy_kit.demo.__file__), "nafnet-demo-w16-noise25.pth")
model = load_model(get_adapter("nafnet"), "demo-w16", w).model.cuda().eval()
x = torch.rand(BATCH, 3, H, W, device="cuda")
def bench(fn, warmup=5, runs=25):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        t = time.perf_counter(); fn(); torch.cuda.synchronize(); times.append(time.perf_counter() - t)
    med = statistics.median(times)
    return {"median_ms": round(med * 1e3, 3), "MP_per_s": round(BATCH * H * W / 1e6 / med, 1)}
res = {}
with torch.inference_mode():
    res["eager fp32"] = bench(lambda: model(x))
    with torch.autocast("cuda", dtype=torch.float16):
        res["eager fp16 (autocast)"] = bench(lambda: model(x))
    half, xh = model.half(), x.half()
    res["eager fp16 (.half())"] = bench(lambda: half(xh))
    cl, xcl = half.to(memory_format=torch.channels_last), xh.to(memory_format=torch.channels_last)
    res["eager fp16 channels_last"] = bench(lambda: cl(xcl))
    cl32, xcl32 = model.float().to(memory_format=torch.channels_last), x.to(memory_format=torch.channels_last)
    res["eager fp32 channels_last"] = bench(lambda: cl32(xcl32))
print("RESULT " + json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "rows": res}))
"""


def torch_baselines(rep: Report, entry: dict) -> None:
    if not rep.facts.get("torch_cuda"):
        raise Skip("torch.cuda is not available")
    code = f"REPO, BATCH, H, W = {REPO!r}, {BATCH}, {H}, {W}\n" + TORCH_CHILD
    rc, text, dt = run([sys.executable, "-c", code], min(180, rep.left() - 5))
    line = next((ln for ln in reversed(text.splitlines()) if ln.startswith("RESULT ")), None)
    if rc != 0 or line is None:
        raise RuntimeError(f"child exited {rc}: {text.strip()[-600:]}")
    data = json.loads(line[len("RESULT "):])
    entry["details"] = data
    for k, v in data["rows"].items():
        say(entry, f"{k}: {v['MP_per_s']} MP/s (median {v['median_ms']} ms per batch of {BATCH} at {H}x{W})")
    entry["summary"] = "; ".join(f"{k} {v['MP_per_s']} MP/s" for k, v in data["rows"].items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the report as JSON here (rewritten after every step)")
    ap.add_argument("--out", help="work folder (default: a new temporary one)")
    ap.add_argument("--budget", type=float, default=480, help="seconds for the whole run (default 480)")
    ap.add_argument("--skip-export", action="store_true", help="stop after step 1 (environment)")
    ap.add_argument("--skip-torch", action="store_true", help="skip the PyTorch baselines")
    ap.add_argument("--engine-bench", nargs=3, metavar=("PLAN", "MODULE", "NAME"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine_bench:
        print("RESULT " + json.dumps(engine_bench_child(*args.engine_bench)), flush=True)
        return 0
    out = args.out or tempfile.mkdtemp(prefix="gpu_check_")
    os.makedirs(out, exist_ok=True)
    rep = Report(args.json, args.budget)
    rep.facts["out"] = out
    rep.step("1 environment", lambda e: environment(rep, e), need=0)
    if args.skip_export:
        rep.facts["skipped"] = "--skip-export: steps 2-6 not run"
    else:
        rep.step("2 export + bundle", lambda e: export(rep, os.path.join(out, "export"), e), need=60)
        rep.step("3 build + verify", lambda e: build_verify(rep, e), need=30)
        rep.step("4 engine throughput", lambda e: engine_throughput(rep, e), need=30)
        rep.step("5 end to end", lambda e: end_to_end(rep, out, e), need=60)
        if not args.skip_torch:
            rep.step("6 PyTorch baselines", lambda e: torch_baselines(rep, e), need=45)
    print(f"\n## deploy-kit GPU check ({time.monotonic() - rep.t0:.0f} s, work folder {out})\n")
    print(rep.summary())
    rep.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
