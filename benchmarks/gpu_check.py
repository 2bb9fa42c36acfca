"""GPU check: deploy-kit on one GPU, end to end, as one report (a Markdown table and a JSON file).

    python benchmarks/gpu_check.py --json gpu_check.json [--out DIR] [--budget 480] [--standin]
                                   [--skip-export] [--skip-torch]

Step 1 (environment: GPU, driver, CUDA runtime, Python, numpy, torch, CuPy, onnxruntime,
TensorRT(-RTX), ``deploy-kit env``) always runs. Then one of two paths; each step is timed and
under its own timeout, a failure is reported and the script goes on where it can (it exits 0 when
it reached the end); a step that cannot run here is a row "skipped" with the reason, never a pass.

TensorRT path (a TensorRT flavour is importable, and no ``--standin``):

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

No-TensorRT path (the default when no TensorRT flavour is importable; ``--standin`` forces it):
deploy-kit's REAL EngineSession / EngineRunner / Restorer (pinned buffers, streams, events, slots)
run a STAND-IN engine, benchmarks/_standin.py: a CuPy kernel of known cost and known output behind
the part of the ``tensorrt`` API that EngineSession calls. It is not TensorRT and no figure of it
is a TensorRT figure; every row says "stand-in". Its checks run in one child process:

S1. outputs: 1 and 2 slots in flight equal sequential runs and a CPU reference, bit for bit
S2. throughput with 1 and 2 slots (a 2 ms kernel on 4x3x256x256 batches), beside the kernel's own time
S3. CUDA allocations in the steady state: every call through ``deploy_kit.runners.cuda`` counted over
    50 passes and over Restorer frames after the first; allocations, frees and stream/event creations must be 0
S4. CPU time (``time.thread_time``) of a thread waiting on a 200 ms pass through deploy-kit's event,
    beside CuPy events with default flags and with blocking sync (measured, not assumed)
S5. Restorer on 720x1280 frames with 1 and 2 slots, serial and pipelined, equal to the CPU reference
P1, P2. PyTorch CUDA baselines a user would pick instead of an engine, at 720x1280, random weights:
    NAFNet-w32 (``nafnet gopro-w32``) and Restormer (``restormer motion-deblurring``), the upstream
    module called on the whole frame: eager FP32, eager FP16, channels_last FP16, torch.compile FP16
    (``deploy_kit.bench.TORCH_CUDA_MODES``); MP/s at the median of 20 synchronised runs after warm-up,
    fewer when the budget demands (the row says how many). Each model in a child process.

Without a GPU, or without CuPy or a CUDA torch, those rows are "skipped" with the reason.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from types import SimpleNamespace

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

import _standin  # noqa: E402 - benchmarks/ is on the path only from here

FLAVOURS = {"tensorrt-rtx": "tensorrt_rtx", "tensorrt": "tensorrt"}
H = W = 256
BATCH = 4
STANDIN = "stand-in (not TensorRT)"  # the runner name of the stand-in engine, in every row it appears


class Skip(Exception):
    """A step that cannot run here (the message says why)."""


class Report:
    """The steps run so far: a Markdown table (:meth:`summary`) and a JSON file rewritten after each step.

    A step's entry may carry ``rows``: sub-rows (``{"name", "status", "result"}``) printed under it.
    """

    def __init__(self, json_path: str | None, budget: float):
        self.json_path, self.budget, self.t0 = json_path, budget, time.monotonic()
        self.steps: list[dict] = []
        self.facts: dict = {"plans": {}, "verified": {}}

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.t0)

    def step(self, name: str, fn, need: float = 20) -> None:
        entry = {"step": name, "status": "ok", "seconds": 0.0, "summary": "", "lines": [], "details": {}, "rows": []}
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
                json.dump({"header": self.header(), "steps": self.steps, "facts": self.facts,
                           "elapsed_s": round(time.monotonic() - self.t0, 1)}, fh, indent=1)

    def header(self) -> str:
        """One line: the GPU, its driver and the versions the figures were taken with (from step 1)."""
        env = self.facts.get("env", {})
        keys = ("gpu", "driver", "cuda", "python", "numpy", "torch", "cupy", "onnxruntime", "tensorrt", "path")
        return "; ".join(f"{k}: {env[k]}" for k in keys if env.get(k)) or "environment not probed"

    def summary(self) -> str:
        """The Markdown table: one row per step, its sub-rows under it."""
        def cell(text) -> str:
            return str(text).replace("|", "/").replace("\n", " ")[:300]

        rows = ["| step | status | seconds | result |", "|---|---|---|---|"]
        for s in self.steps:
            rows.append(f"| {cell(s['step'])} | {s['status']} | {s['seconds']} | {cell(s['summary'])} |")
            for r in s.get("rows", []):
                rows.append(f"| &nbsp;&nbsp;{cell(r['name'])} | {r['status']} | {r.get('seconds', '')} | {cell(r['result'])} |")
        return "\n".join(rows)


def timing_stats(seconds: list[float], pixels: int) -> dict:
    """Statistics of timed runs (seconds each) over ``pixels`` pixels per run.

    Args:
        seconds: one duration per run (at least one).
        pixels: pixels one run processes (batch x height x width).

    Returns:
        ``runs``, ``median_ms``, ``p10_ms``, ``p90_ms``, ``min_ms`` and ``MP_per_s`` (at the median).

    Raises:
        ValueError: no runs.
    """
    if not seconds:
        raise ValueError("no timed runs")
    s = sorted(seconds)

    def q(p: float) -> float:  # nearest-rank on the sorted runs
        return s[min(len(s) - 1, int(round(p * (len(s) - 1))))]

    med = statistics.median(s)
    return {"runs": len(s), "median_ms": round(med * 1e3, 3), "p10_ms": round(q(0.1) * 1e3, 3),
            "p90_ms": round(q(0.9) * 1e3, 3), "min_ms": round(s[0] * 1e3, 3),
            "MP_per_s": round(pixels / 1e6 / med, 2) if med > 0 else float("inf")}


def thread_cpu(fn) -> tuple[float, float]:
    """Run ``fn()`` in a new thread; (CPU seconds of that thread, its wall seconds).

    Raises:
        whatever ``fn`` raised.
    """
    out: dict = {}

    def body():
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            out["error"] = exc
        out["cpu"], out["wall"] = time.thread_time() - cpu, time.perf_counter() - wall

    t = threading.Thread(target=body, name="gpu-check-waiter")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]
    return out["cpu"], out["wall"]


# CUDA calls that allocate or free memory, or make or destroy a stream or an event
ALLOC_CALLS = frozenset({"cudaMalloc", "cudaMallocHost", "cudaHostAlloc", "cudaMallocAsync", "cudaMallocManaged",
                         "cudaMallocPitch", "cudaHostRegister", "cudaFree", "cudaFreeHost", "cudaFreeAsync",
                         "cudaHostUnregister", "cudaStreamCreate", "cudaStreamCreateWithFlags",
                         "cudaStreamCreateWithPriority", "cudaStreamDestroy", "cudaEventCreate",
                         "cudaEventCreateWithFlags", "cudaEventDestroy"})


@contextlib.contextmanager
def counting_cuda_calls(cuda_mod):
    """Count, by function name, every CUDA runtime call deploy-kit makes through ``cuda_mod._call``
    (deploy_kit/runners/cuda.py: every call of that module goes through it) while the block runs.

    Yields:
        a Counter, filled as the calls happen; ``cuda_mod._call`` is restored on exit.

    Raises:
        RuntimeError: ``cuda_mod`` has no ``_call`` to count through.
    """
    original = getattr(cuda_mod, "_call", None)
    if original is None:
        raise RuntimeError(f"{cuda_mod.__name__} has no _call: its CUDA calls cannot be counted")
    counts: collections.Counter = collections.Counter()

    def counted(fn, *args):
        counts[fn] += 1
        return original(fn, *args)

    cuda_mod._call = counted
    try:
        yield counts
    finally:
        cuda_mod._call = original


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

    from deploy_kit.runners import cuda

    env = rep.facts.setdefault("env", {})
    ok, why = cuda.gpu_available()
    rep.facts.update(gpu=ok, gpu_reason=why)
    if shutil.which("nvidia-smi"):
        code, text, _ = run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], 30)
        say(entry, f"nvidia-smi: {text.strip() if code == 0 else f'failed ({code}): {text.strip()[:200]}'}")
        if code == 0 and "," in text:
            env["driver"] = text.strip().splitlines()[0].rsplit(",", 1)[1].strip()
    else:
        say(entry, "nvidia-smi: not found")
    info = cuda.device_info()
    say(entry, f"GPU usable: {ok}{'' if ok else ' - ' + why}; device: {info}")
    env["gpu"] = (f"{info['name']} (compute capability {info['compute_capability']})" if ok and info
                  else f"none ({why})")
    lib = cuda._cudart()
    versions = cuda.versions()
    say(entry, f"CUDA versions {versions}, libcudart {lib._name if lib is not None else 'not found'}")
    if versions:
        env["cuda"] = f"runtime {versions.get('runtime')} (deploy-kit's libcudart), driver supports {versions.get('driver')}"
    say(entry, f"Python {sys.version.split()[0]}, numpy {np.__version__}")
    env["python"], env["numpy"] = sys.version.split()[0], np.__version__
    code, text, _ = run([sys.executable, "-c", "import json, torch; print(json.dumps({'torch': torch.__version__, "
                         "'cuda_available': torch.cuda.is_available(), 'torch_cuda': torch.version.cuda, "
                         "'cudnn': torch.backends.cudnn.version() if torch.cuda.is_available() else None}))"], 90)
    try:
        torch_info = json.loads(text.strip().splitlines()[-1]) if code == 0 else None
    except (ValueError, IndexError):
        torch_info = None
    torch_info = torch_info or {"torch": f"unavailable ({text.strip()[-160:]})"}
    rep.facts["torch_cuda"] = bool(torch_info.get("cuda_available"))
    rep.facts["torch_reason"] = ("" if rep.facts["torch_cuda"] else
                                 f"torch.cuda is not available (torch {torch_info.get('torch')}, built for CUDA "
                                 f"{torch_info.get('torch_cuda')})")
    env["torch"] = (f"{torch_info.get('torch')} (CUDA {torch_info.get('torch_cuda')}, cuDNN {torch_info.get('cudnn')}, "
                    f"torch.cuda available: {bool(torch_info.get('cuda_available'))})")
    say(entry, f"torch: {torch_info}")
    try:
        import cupy

        env["cupy"] = f"{cupy.__version__} (CUDA runtime {cuda_version_text(cupy.cuda.runtime.runtimeGetVersion())})"
        rep.facts["cupy_reason"] = ""
    except Exception as exc:  # noqa: BLE001 - a broken CuPy install counts as missing, with its reason
        rep.facts["cupy_reason"] = (f"CuPy is not importable ({type(exc).__name__}: {str(exc)[:120]}); the stand-in's "
                                    "kernel is a CuPy RawKernel (pip install cupy-cuda12x, or cupy-cuda13x)")
        env["cupy"] = "not importable"
    say(entry, f"CuPy: {env['cupy']}")
    try:
        import onnxruntime as ort

        say(entry, f"onnxruntime {ort.__version__}, providers {ort.get_available_providers()}")
        env["onnxruntime"] = ort.__version__
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
        env.setdefault("tensorrt_versions", []).append(f"{module} {trt.__version__}")
        if hasattr(trt, "ComputeCapability") and info:
            targets = [k for k in trt.ComputeCapability.__members__ if k.startswith("SM")]
            sm = "SM" + info["compute_capability"].replace(".", "")
            rep.facts["rtx_targets_gpu"] = sm in targets
            if sm not in targets:
                say(entry, f"WARNING: {module} {trt.__version__} targets {', '.join(targets)}; this GPU is "
                           f"{sm}: TensorRT-RTX engines are not expected to run here")
    rep.facts["flavours"] = installed
    env["tensorrt"] = ", ".join(env.pop("tensorrt_versions", [])) or "none importable"
    code, text, _ = cli("env", timeout=90)
    entry["lines"] += ["deploy-kit env:"] + text.rstrip().splitlines()
    print("deploy-kit env:\n" + text.rstrip(), flush=True)
    gpu = f"yes: {info['name']}" if ok and info else "no"
    entry["summary"] = f"GPU {gpu}; TensorRT flavours: {', '.join(installed) or 'none'}; CuPy {env['cupy']}"


def cuda_version_text(v: int) -> str:
    """12080 -> "12.8" (CUDA's integer version)."""
    return f"{v // 1000}.{v % 1000 // 10}" if v else "none"


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
def pipelined(r, xs: list) -> list:
    """Outputs of each input in ``xs`` through runner ``r`` with ``r.slots`` passes in flight (each
    pass's outputs copied when it is collected, before its slot is reused)."""
    pending, got = collections.deque(), []
    for x in xs:
        pending.append(r.submit(x))
        if len(pending) == r.slots:
            got.append([a.copy() for a in pending.popleft().wait()])
    got += [[a.copy() for a in p.wait()] for p in pending]
    return got


def slot_bench(r, warmup: int = 5, runs: int = 30) -> dict:
    """An open EngineRunner: its slots in flight against sequential runs (max abs difference), then
    its throughput with ``r.slots`` passes in flight (the gaps between collected passes)."""
    import numpy as np

    rng = np.random.default_rng(0)
    xs = [rng.random(r.input_shape, dtype=np.float32) for _ in range(4)]
    expected = [r.run(x) for x in xs]
    got = pipelined(r, xs)  # slots in flight must give what sequential runs give
    diff = max(float(np.max(np.abs(a - b))) for e, g in zip(expected, got) for a, b in zip(e, g))
    stamps, submit_s, pending = [], [], collections.deque()
    for i in range(warmup + runs):
        t = time.perf_counter()
        pending.append(r.submit(xs[i % len(xs)]))
        submit_s.append(time.perf_counter() - t)
        if len(pending) == r.slots:  # the oldest pass must end before its slot is reused
            pending.popleft().wait()
            stamps.append(time.perf_counter())
    while pending:
        pending.popleft().wait()
        stamps.append(time.perf_counter())
    gaps = [b - a for a, b in zip(stamps, stamps[1:])][warmup:]
    n, _, h, w = r.input_shape
    stats = timing_stats(gaps, n * h * w)
    return {"input_shape": list(r.input_shape), "median_ms": stats["median_ms"], "p90_ms": stats["p90_ms"],
            "MP_per_s": stats["MP_per_s"], "batches": len(gaps),
            "submit_median_ms": round(statistics.median(submit_s[warmup:]) * 1e3, 3),
            "pipelined_vs_run_max_abs_diff": diff}


def engine_bench_child(plan: str, module, name: str, warmup: int = 5, runs: int = 30) -> dict:
    """Runs in a child process: EngineRunner throughput with 1 and 2 slots, and a pipelining check.

    ``module``: the runtime module, or its import name (``tensorrt``, ``tensorrt_rtx``).
    """
    from deploy_kit.runners.session import EngineRunner

    trt = importlib.import_module(module) if isinstance(module, str) else module
    out = {}
    for slots in (1, 2):
        t = time.perf_counter()
        with EngineRunner(plan, trt, name=name, slots=slots) as r:
            opened = time.perf_counter() - t
            out[f"slots={slots}"] = {**slot_bench(r, warmup, runs), "open_s": round(opened, 2)}
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


# -- the no-TensorRT path: a stand-in engine (benchmarks/_standin.py, NOT TensorRT) through deploy-kit's real runner
STANDIN_TILE = (4, 3, 256, 256)  # one call: 4 tiles of 256x256, as a batch-4 export takes them
STANDIN_MS = 2.0  # the stand-in kernel's cost per call
STANDIN_LONG_MS = 200.0  # the pass a thread waits on (S4)
FRAME = (720, 1280)  # the Restorer's frames (S5) and the PyTorch baselines' input


def standin_context(work: str, kernel, cuda_mod=None, *, tile=STANDIN_TILE, kernel_ms: float = STANDIN_MS,
                    long_ms: float = STANDIN_LONG_MS, frame=FRAME, frames: int = 3, runs: int = 60,
                    steady: int = 50) -> SimpleNamespace:
    """What the stand-in checks run on: the stand-in module over ``kernel``, its plans (written into
    ``work``), the CUDA module whose calls are counted (deploy_kit.runners.cuda unless given) and the sizes."""
    from deploy_kit.runners import cuda

    os.makedirs(work, exist_ok=True)
    return SimpleNamespace(
        kernel=kernel, trt=_standin.module(kernel), cuda=cuda_mod or cuda,
        plan=_standin.write_plan(os.path.join(work, "tile.standin.json"), tile, kernel_ms=kernel_ms),
        long_plan=_standin.write_plan(os.path.join(work, "long.standin.json"), (1, 3, 64, 64), kernel_ms=long_ms),
        kernel_ms=kernel_ms, long_ms=long_ms, frame=tuple(frame), frames=frames, runs=runs, steady=steady)


def _inputs(shape, count: int, seed: int) -> list:
    import numpy as np

    rng = np.random.default_rng(seed)
    return [rng.random(tuple(shape), dtype=np.float32) for _ in range(count)]


def check_outputs(ctx) -> dict:
    """S1: outputs with 1 and 2 slots in flight equal sequential runs and the CPU reference, bit for bit."""
    import numpy as np

    from deploy_kit.runners.session import EngineRunner

    ref = _standin.ReferenceRunner(_standin.load_plan(ctx.plan))
    xs = _inputs(ref.input_shape, 5, seed=1)
    expected = [ref.run(x)[0] for x in xs]
    details, bad = {}, []
    for slots in (1, 2):
        with EngineRunner(ctx.plan, ctx.trt, name=STANDIN, slots=slots) as r:
            seq = [r.run(x)[0] for x in xs]
            flight = [o[0] for o in pipelined(r, xs)]
        same_seq = all(np.array_equal(a, b) for a, b in zip(seq, expected))
        same_flight = all(np.array_equal(a, b) for a, b in zip(flight, seq))
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(seq + flight, expected + expected))
        details[f"slots={slots}"] = {"sequential_equals_reference": same_seq, "in_flight_equals_sequential": same_flight,
                                     "max_abs_diff_vs_reference": diff}
        if not (same_seq and same_flight):
            bad.append(f"slots={slots} (max abs diff {diff:.3g})")
    shape = "x".join(map(str, ref.input_shape))
    if bad:
        return {"status": "failed", "details": details,
                "summary": f"outputs differ from the CPU reference with {', '.join(bad)}"}
    return {"status": "ok", "details": details,
            "summary": f"{len(xs)} batches of {shape}: with 1 and 2 slots, passes in flight = sequential passes = "
                       "CPU reference, bit for bit"}


def check_throughput(ctx) -> dict:
    """S2: throughput with 1 and 2 slots, beside the kernel's own time."""
    from deploy_kit.runners.session import EngineRunner

    data = {}
    for slots in (1, 2):
        t = time.perf_counter()
        with EngineRunner(ctx.plan, ctx.trt, name=STANDIN, slots=slots) as r:
            opened = time.perf_counter() - t
            data[f"slots={slots}"] = {**slot_bench(r, 5, ctx.runs), "open_s": round(opened, 3)}
    kernel = ctx.kernel.measure_ms(_standin.load_plan(ctx.plan))
    one, two = data["slots=1"], data["slots=2"]
    details = {**data, "kernel": kernel, "kernel_nominal_ms": ctx.kernel_ms}
    gain = one["median_ms"] / two["median_ms"] if two["median_ms"] else float("inf")
    text = (f"1 slot {one['MP_per_s']} MP/s ({one['median_ms']} ms per batch of {one['input_shape'][0]}), "
            f"2 slots {two['MP_per_s']} MP/s ({two['median_ms']} ms): x{gain:.2f}")
    if kernel:
        text += (f"; the kernel alone {kernel['kernel_ms']} ms (nominal {ctx.kernel_ms}), two kernels on two streams "
                 f"{kernel['two_streams_ms']} ms")
    diffs = [d["pipelined_vs_run_max_abs_diff"] for d in data.values()]
    if any(diffs):
        return {"status": "failed", "details": details, "summary": f"passes in flight differ from runs ({max(diffs):.3g}); {text}"}
    if two["median_ms"] > 1.1 * one["median_ms"]:
        text += " (2 slots SLOWER than 1)"
    return {"status": "ok", "details": details, "summary": text}


def check_no_alloc(ctx) -> dict:
    """S3: no CUDA allocation (nor stream/event creation) in the steady state, counted through deploy-kit's
    CUDA module: ``ctx.steady`` passes with 2 slots, then Restorer frames after the first of their size."""
    import numpy as np

    from deploy_kit.manifest import Manifest
    from deploy_kit.runtime.restorer import Restorer
    from deploy_kit.runners.session import EngineRunner

    with counting_cuda_calls(ctx.cuda) as opening:
        runner = EngineRunner(ctx.plan, ctx.trt, name=STANDIN, slots=2)
    try:
        xs = _inputs(runner.input_shape, 2, seed=3)
        for x in xs * 2:  # first uses happen outside the window
            runner.submit(x).wait()
        pool0 = ctx.kernel.pool_bytes()
        with counting_cuda_calls(ctx.cuda) as steady:
            pipelined(runner, [xs[i % 2] for i in range(ctx.steady)])
        pool1 = ctx.kernel.pool_bytes()
        restorer = Restorer(runner=runner, manifest=Manifest.for_runner(runner.input_shape),
                            overlap=min(16, min(runner.input_shape[2:]) // 4))
        rng = np.random.default_rng(4)
        frames = [(rng.random((*ctx.frame, 3)) * 255).astype(np.uint8) for _ in range(3)]
        restorer.restore(frames[0])  # the first frame of a size makes its tiling and accumulator
        with counting_cuda_calls(ctx.cuda) as restoring:
            restorer.restore(frames[1])
            list(restorer.restore_stream(iter(frames[1:])))
    finally:
        runner.close()

    def allocs(counts):
        return {k: v for k, v in sorted(counts.items()) if k in ALLOC_CALLS}

    opened = allocs(opening)
    details = {"opening": dict(opening), "steady_passes": ctx.steady, "steady": dict(steady),
               "restorer_frames": 3, "restorer": dict(restoring), "standin_cupy_pool_bytes": [pool0, pool1]}
    problems = []
    for label, counts in (("passes", steady), ("Restorer frames", restoring)):
        if allocs(counts):
            problems.append(f"{label}: {allocs(counts)}")
        if not sum(counts.values()):
            problems.append(f"{label}: the counter saw no CUDA call at all (is deploy_kit.runners.cuda._call still the path?)")
    if not opened:
        problems.append("no allocation counted while opening the runner: the counter does not see deploy-kit's calls")
    if problems:
        return {"status": "failed", "details": details, "summary": "; ".join(problems)}
    top = ", ".join(f"{k} {v}" for k, v in steady.most_common(3))
    text = (f"0 allocations, frees or stream/event creations in {ctx.steady} passes with 2 slots and in 3 Restorer "
            f"frames {ctx.frame[0]}x{ctx.frame[1]} after the first; the counter saw {sum(steady.values())} CUDA calls "
            f"in the passes ({top}) and {sum(opened.values())} allocations while opening ({opened})")
    if pool0 is not None:
        text += f"; the stand-in's own CuPy pool: {pool0} -> {pool1} bytes"
    return {"status": "ok", "details": details, "summary": text}


def check_wait_cpu(ctx) -> dict:
    """S4: CPU time of a thread waiting on a long pass through deploy-kit's event, beside CuPy events
    with default flags and with blocking sync (what each measures: nothing is assumed)."""
    import numpy as np

    from deploy_kit.runners.session import EngineSession

    with EngineSession(ctx.long_plan, ctx.trt, slots=1) as s:
        feeds = {s.inputs[0]: np.zeros(s.shapes[s.inputs[0]], np.float32)}
        s.run(feeds)  # the first pass: nothing is left to set up
        t = time.perf_counter()
        slot = s.submit(feeds)
        submit_s = time.perf_counter() - t
        waits = {"deploy-kit EngineSession.wait (its cuda.Event)": thread_cpu(lambda: s.wait(slot))}
    reference_wait = getattr(ctx.kernel, "reference_wait", None)
    if reference_wait is not None:
        waits["CuPy event, default flags"] = thread_cpu(reference_wait(ctx.long_ms, blocking=False))
        waits["CuPy event, cudaEventBlockingSync"] = thread_cpu(reference_wait(ctx.long_ms, blocking=True))

    def how(cpu: float, wall: float) -> str:
        share = cpu / wall if wall > 0 else 0.0
        kind = "the thread slept" if share < 0.2 else "the thread spun or yielded" if share > 0.8 else "partly spinning"
        return f"{cpu * 1e3:.1f} ms CPU over {wall * 1e3:.1f} ms wall ({100 * share:.0f} %: {kind})"

    details = {k: {"cpu_ms": round(c * 1e3, 2), "wall_ms": round(w * 1e3, 2)} for k, (c, w) in waits.items()}
    details["submit_ms"] = round(submit_s * 1e3, 3)
    details["kernel_nominal_ms"] = ctx.long_ms
    text = "; ".join(f"{k}: {how(c, w)}" for k, (c, w) in waits.items())
    text += f"; submit returned in {submit_s * 1e3:.2f} ms"
    wall = next(iter(waits.values()))[1]
    if getattr(ctx.kernel, "asynchronous", False) and wall < 0.5 * ctx.long_ms / 1e3:
        return {"status": "failed", "details": details,
                "summary": f"the wait lasted {wall * 1e3:.1f} ms, under half the {ctx.long_ms:.0f} ms pass: submit did "
                           f"not return before the pass ended; {text}"}
    return {"status": "ok", "details": details, "summary": f"a {ctx.long_ms:.0f} ms pass: {text}"}


def check_restorer(ctx) -> dict:
    """S5: Restorer.restore and restore_stream with 1 and 2 slots equal a Restorer over the CPU reference,
    byte for byte, on frames of ``ctx.frame``; restore_stream's MP/s."""
    import numpy as np

    from deploy_kit.manifest import Manifest
    from deploy_kit.runtime.restorer import Restorer
    from deploy_kit.runners.session import EngineRunner

    plan = _standin.load_plan(ctx.plan)
    ref_runner = _standin.ReferenceRunner(plan)
    manifest = Manifest.for_runner(ref_runner.input_shape)
    overlap = min(16, min(ref_runner.input_shape[2:]) // 4)
    rng = np.random.default_rng(2)
    h, w = ctx.frame
    frames = [(rng.random((h, w, 3)) * 255).astype(np.uint8) for _ in range(ctx.frames)]
    with Restorer(runner=ref_runner, manifest=manifest, overlap=overlap) as ref:
        expected = [ref.restore(f) for f in frames]
        calls = ref.grid(h, w).calls
    details, bad, rates = {"calls_per_frame": calls, "overlap": overlap}, [], []
    for slots in (1, 2):
        with Restorer(runner=EngineRunner(ctx.plan, ctx.trt, name=STANDIN, slots=slots), manifest=manifest,
                      overlap=overlap) as r:
            serial = [r.restore(f) for f in frames]
            t = time.perf_counter()
            streamed = list(r.restore_stream(iter(frames)))
            dt = time.perf_counter() - t
        same_serial = all(a.tobytes() == b.tobytes() for a, b in zip(serial, expected))
        same_stream = len(streamed) == len(frames) and all(a.tobytes() == b.tobytes() for a, b in zip(streamed, expected))
        mps = round(len(frames) * h * w / 1e6 / dt, 2)
        rates.append(f"{mps} MP/s ({slots} slot{'s' if slots > 1 else ''})")
        details[f"slots={slots}"] = {"restore_equals_reference": same_serial, "stream_equals_reference": same_stream,
                                     "stream_s": round(dt, 3), "stream_MP_per_s": mps}
        if not (same_serial and same_stream):
            bad.append(f"slots={slots} (restore {'=' if same_serial else '!='}, restore_stream "
                       f"{'=' if same_stream else '!='})")
    where = f"{len(frames)} frames {h}x{w}, {calls} calls of {'x'.join(map(str, ref_runner.input_shape))} per frame"
    if bad:
        return {"status": "failed", "details": details, "summary": f"{where}: differs from the CPU reference with {'; '.join(bad)}"}
    return {"status": "ok", "details": details,
            "summary": f"{where}, overlap {overlap}: restore and restore_stream with 1 and 2 slots = the CPU reference, "
                       f"byte for byte; restore_stream {', '.join(rates)} (host tiling and blending included)"}


STANDIN_CHECKS = (
    ("S1", "outputs, 1 and 2 slots = sequential = CPU reference", check_outputs),
    ("S2", "throughput, 1 vs 2 slots", check_throughput),
    ("S3", "CUDA allocations in the steady state", check_no_alloc),
    ("S4", f"CPU time of a thread waiting on a {STANDIN_LONG_MS:.0f} ms pass", check_wait_cpu),
    ("S5", "Restorer 720p, 1 and 2 slots = CPU reference", check_restorer),
)


def run_check(fn, ctx) -> dict:
    """One check: its dict (status, summary, details) and seconds; an exception is a failed check."""
    t = time.monotonic()
    try:
        res = fn(ctx)
    except Exception as exc:  # noqa: BLE001 - reported as the check's failure
        res = {"status": "failed", "summary": f"{type(exc).__name__}: {exc}",
               "details": {"traceback": traceback.format_exc(limit=8)}}
    res["seconds"] = round(time.monotonic() - t, 2)
    return res


def standin_child(work: str) -> None:
    """Runs in a child process: the stand-in checks on this GPU, one ``RESULT`` line each as it ends."""
    def emit(cid, res):
        print("RESULT " + json.dumps({"check": cid, **res}), flush=True)

    try:
        kernel = _standin.CupyKernel()
    except Exception as exc:  # noqa: BLE001 - every check is then reported failed, with the reason
        for cid, _, _ in STANDIN_CHECKS:
            emit(cid, {"status": "failed", "summary": f"the stand-in's CuPy kernel could not be made: "
                                                      f"{type(exc).__name__}: {str(exc)[:300]}", "details": {}})
        return
    print("INFO " + json.dumps(kernel.info), flush=True)
    ctx = standin_context(work, kernel)
    for cid, _, fn in STANDIN_CHECKS:
        print(f"START {cid}", flush=True)
        emit(cid, run_check(fn, ctx))


def standin_results(rep: Report, out: str) -> dict:
    """The stand-in child's results by check id (it runs once, on the first stand-in step).

    Raises:
        Skip: no GPU, or no CuPy (the same reason for every stand-in step).
    """
    if "standin" in rep.facts:
        return rep.facts["standin"]
    if not rep.facts.get("gpu"):
        reason = f"no GPU: {rep.facts.get('gpu_reason')}"
    else:
        reason = rep.facts.get("cupy_reason", "")
    if reason:
        rep.facts["standin"] = {"skip": reason}
        return rep.facts["standin"]
    work = os.path.join(out, "standin")
    code, text, dt = run([sys.executable, os.path.abspath(__file__), "--standin-child", work], min(240, rep.left() - 10))
    results, running, info = {}, None, None
    for ln in text.splitlines():
        if ln.startswith("RESULT "):
            d = json.loads(ln[len("RESULT "):])
            results[d["check"]] = d
            running = None
        elif ln.startswith("START "):
            running = ln[len("START "):].strip()
        elif ln.startswith("INFO "):
            info = json.loads(ln[len("INFO "):])
    rep.facts["standin"] = {"exit": code, "seconds": round(dt, 1), "results": results, "running": running,
                            "kernel": info, "tail": text[-1500:]}
    return rep.facts["standin"]


def standin_step(rep: Report, out: str, cid: str, entry: dict) -> None:
    res = standin_results(rep, out)
    if "skip" in res:
        raise Skip(res["skip"])
    r = res["results"].get(cid)
    if r is None:
        during = f" during check {cid}" if res.get("running") == cid else f" before check {cid} reported"
        raise RuntimeError(f"the stand-in child exited {res['exit']}{during} "
                           f"({'timed out' if res['exit'] == 124 else 'crashed or stopped'}): {res['tail'][-400:]}")
    entry["status"], entry["summary"], entry["details"] = r["status"], r["summary"], r.get("details", {})
    entry["details"]["check_seconds"] = r.get("seconds")
    if cid == STANDIN_CHECKS[0][0] and res.get("kernel"):
        say(entry, f"stand-in kernel (not TensorRT): {res['kernel']}")
    say(entry, r["summary"])


# -- PyTorch CUDA baselines at 720p (the no-TensorRT path) ---------------------------------------
TORCH_MODELS = (("P1", "nafnet", "gopro-w32", "NAFNet-w32"), ("P2", "restormer", "motion-deblurring", "Restormer"))
COMPILE_NEEDS_S = {"nafnet": 60, "restormer": 100}  # a rough torch.compile time; below it the row is skipped
TORCH_RUNS, TORCH_WARMUP, TORCH_MIN_RUNS = 20, 3, 5


def mode_label(dtype: str, channels_last: bool, compile_: bool) -> str:
    return (f"{'torch.compile' if compile_ else 'eager'} {'FP16' if dtype == 'float16' else 'FP32'}"
            f"{' channels_last' if channels_last else ''}")


def runs_for(per_run_s: float, share_s: float, want: int = TORCH_RUNS, least: int = TORCH_MIN_RUNS) -> int:
    """Timed runs that fit ``share_s`` at ``per_run_s`` each: ``want``, or fewer (never under ``least``)."""
    if per_run_s <= 0 or per_run_s * want <= share_s:
        return want
    return max(least, min(want, int(share_s / per_run_s)))


def torch_child(model: str, variant: str, allowance_s: float) -> None:
    """Runs in a child process: one model at 720x1280 in each of deploy-kit bench's CUDA modes, one
    ``RESULT`` line per mode as it ends (timed runs take what ``allowance_s`` leaves them)."""
    import copy

    import torch

    from deploy_kit.bench import TORCH_CUDA_MODES
    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_model

    deadline = time.monotonic() + allowance_s
    h, w = FRAME
    torch.backends.cudnn.benchmark = True  # what a user tuning a fixed-size model sets
    loaded = load_model(get_adapter(model), variant, None, seed=0)
    base = loaded.model.eval()
    print("MODES " + json.dumps([m[0] for m in TORCH_CUDA_MODES]), flush=True)
    print("META " + json.dumps({
        "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
        "device": torch.cuda.get_device_name(0), "weights": loaded.note, "input": [1, 3, h, w],
        "cudnn_benchmark": True, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
        "module": "the upstream module on the whole frame (no TLC), input and output on the GPU (no host copies)"}),
        flush=True)
    x32 = torch.rand((1, 3, h, w), generator=torch.Generator().manual_seed(0)).cuda()
    modes = list(TORCH_CUDA_MODES)
    for i, (name, dtype, cl, comp) in enumerate(modes):
        print(f"START {name}", flush=True)
        row = {"mode": name, "label": mode_label(dtype, cl, comp), "status": "ok"}
        left = deadline - time.monotonic()
        if comp and left < COMPILE_NEEDS_S[model]:
            row.update(status="skipped", reason=f"time budget: {left:.0f} s left of this model's {allowance_s:.0f} s, "
                                                f"torch.compile needs ~{COMPILE_NEEDS_S[model]} s")
            print("RESULT " + json.dumps(row), flush=True)
            continue
        m = fn = y = None
        try:
            dt = getattr(torch, dtype)
            fmt = torch.channels_last if cl else torch.contiguous_format
            m = copy.deepcopy(base).to("cuda", dt).to(memory_format=fmt)
            fn = torch.compile(m) if comp else m
            x = x32.to(dt).contiguous(memory_format=fmt)
            torch.cuda.reset_peak_memory_stats()
            with torch.inference_mode():
                t = time.perf_counter()
                y = fn(x)
                torch.cuda.synchronize()
                first = time.perf_counter() - t
                warm = []
                for _ in range(TORCH_WARMUP):
                    t = time.perf_counter()
                    y = fn(x)
                    torch.cuda.synchronize()
                    warm.append(time.perf_counter() - t)
                later = modes[i + 1:]
                reserve = COMPILE_NEEDS_S[model] if any(c for *_, c in later) else 0
                share = (deadline - time.monotonic() - reserve) / (1 + sum(1 for *_, c in later if not c))
                n = runs_for(min(warm), share)
                times = []
                for _ in range(n):
                    t = time.perf_counter()
                    y = fn(x)
                    torch.cuda.synchronize()
                    times.append(time.perf_counter() - t)
            row.update(first_call_s=round(first, 2), warmup=TORCH_WARMUP + 1, **timing_stats(times, h * w),
                       finite=bool(torch.isfinite(y).all()),
                       peak_mib=round(torch.cuda.max_memory_allocated() / 2**20),
                       fewer_runs=(f"{n} of {TORCH_RUNS}: time budget" if n < TORCH_RUNS else ""))
        except Exception as exc:  # noqa: BLE001 - the row says why; the next mode still runs
            row.update(status="failed", reason=f"{type(exc).__name__}: {str(exc)[:300]}")
        finally:
            del m, fn, y
            torch.cuda.empty_cache()
        print("RESULT " + json.dumps(row), flush=True)


def torch_rows(text: str, code: int) -> tuple[dict | None, list[dict]]:
    """The torch child's META and one sub-row per mode it announced (a mode it never reported: failed or
    skipped with the reason)."""
    meta, modes, done, running = None, [], {}, None
    for ln in text.splitlines():
        if ln.startswith("META "):
            meta = json.loads(ln[len("META "):])
        elif ln.startswith("MODES "):
            modes = json.loads(ln[len("MODES "):])
        elif ln.startswith("START "):
            running = ln[len("START "):].strip()
        elif ln.startswith("RESULT "):
            d = json.loads(ln[len("RESULT "):])
            done[d["mode"]] = d
            running = None
    ended = "timed out" if code == 124 else f"exited {code}"
    rows = []
    for mode in modes:
        d = done.get(mode)
        if d is None:
            rows.append({"name": mode, "status": "failed" if mode == running else "skipped",
                         "result": f"the child {ended} during this mode" if mode == running else
                                   f"not reached: the child {ended}"})
        elif d["status"] != "ok":
            rows.append({"name": f"{mode}: {d['label']}", "status": d["status"], "result": d.get("reason", "")})
        else:
            note = f", {d['fewer_runs']}" if d.get("fewer_runs") else ""
            note += "" if d.get("finite", True) else ", output NOT finite (random weights)"
            rows.append({"name": f"{mode}: {d['label']}", "status": "ok", "MP_per_s": d["MP_per_s"],
                         "result": f"{d['MP_per_s']} MP/s, median {d['median_ms']} ms over {d['runs']} runs "
                                   f"(p90 {d['p90_ms']}); first call {d['first_call_s']} s, peak {d['peak_mib']} MiB{note}"})
    return meta, rows


def torch_720(rep: Report, model: str, variant: str, label: str, allowance: float, entry: dict) -> None:
    if not rep.facts.get("torch_cuda"):
        raise Skip(rep.facts.get("torch_reason") or "torch.cuda is not available")
    allowance = max(20.0, allowance)
    code, text, dt = run([sys.executable, os.path.abspath(__file__), "--torch-child", model, variant, f"{allowance:.0f}"],
                         allowance + 40)
    meta, rows = torch_rows(text, code)
    if meta is None:
        raise RuntimeError(f"child exited {code} in {dt:.0f} s before measuring: {text.strip()[-600:]}")
    entry["details"] = {"meta": meta, "child_exit": code}
    entry["rows"] = rows
    say(entry, f"{label} ({model} {variant}, {meta['weights']}), 1x3x{FRAME[0]}x{FRAME[1]}, {meta['device']}, torch "
               f"{meta['torch']}: {meta['module']}; cudnn.benchmark on, cuDNN TF32 {meta['cudnn_allow_tf32']}, "
               f"matmul TF32 {meta['matmul_allow_tf32']}")
    for r in rows:
        say(entry, f"  {r['name']}: {r['status']}: {r['result']}")
    ok = [r for r in rows if r["status"] == "ok"]
    entry["summary"] = "; ".join(f"{r['name'].split(': ', 1)[-1]} {r['MP_per_s']} MP/s" for r in ok) or "no mode measured"
    if code != 0:
        entry["summary"] += f" (child {'timed out' if code == 124 else f'exited {code}'})"
    if not ok:
        entry["status"] = "failed" if any(r["status"] == "failed" for r in rows) else "skipped"


def skipped(reason: str):
    """A step function that only says why it did not run."""
    def fn(entry: dict) -> None:
        raise Skip(reason)

    return fn


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="also write the report as JSON here (rewritten after every step)")
    ap.add_argument("--out", help="work folder (default: a new temporary one)")
    ap.add_argument("--budget", type=float, default=480, help="seconds for the whole run (default 480)")
    ap.add_argument("--standin", action="store_true",
                    help="run only the no-TensorRT path (a stand-in engine, not TensorRT, through deploy-kit's real "
                         "runner, and the PyTorch baselines), even where TensorRT is installed; without TensorRT "
                         "it is the default")
    ap.add_argument("--skip-export", action="store_true", help="stop after step 1 (environment)")
    ap.add_argument("--skip-torch", action="store_true", help="skip the PyTorch baselines")
    ap.add_argument("--engine-bench", nargs=3, metavar=("PLAN", "MODULE", "NAME"), help=argparse.SUPPRESS)
    ap.add_argument("--standin-child", metavar="WORK", help=argparse.SUPPRESS)
    ap.add_argument("--torch-child", nargs=3, metavar=("MODEL", "VARIANT", "SECONDS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine_bench:
        print("RESULT " + json.dumps(engine_bench_child(*args.engine_bench)), flush=True)
        return 0
    if args.standin_child:
        standin_child(args.standin_child)
        return 0
    if args.torch_child:
        model, variant, seconds = args.torch_child
        torch_child(model, variant, float(seconds))
        return 0
    out = args.out or tempfile.mkdtemp(prefix="gpu_check_")
    os.makedirs(out, exist_ok=True)
    rep = Report(args.json, args.budget)
    rep.facts["out"] = out
    rep.step("1 environment", lambda e: environment(rep, e), need=0)
    standin = args.standin or not rep.facts.get("flavours")
    rep.facts["path"] = "stand-in" if standin else "tensorrt"
    rep.facts.setdefault("env", {})["path"] = (
        f"no-TensorRT (a stand-in engine, not TensorRT; {'--standin' if args.standin else 'no TensorRT flavour is importable'})"
        if standin else "TensorRT")
    print(f"\npath: {rep.facts['env']['path']}", flush=True)
    if args.skip_export:
        rep.facts["skipped"] = "--skip-export: the steps after 1 were not run"
    elif not standin:
        rep.step("2 export + bundle", lambda e: export(rep, os.path.join(out, "export"), e), need=60)
        rep.step("3 build + verify", lambda e: build_verify(rep, e), need=30)
        rep.step("4 engine throughput", lambda e: engine_throughput(rep, e), need=30)
        rep.step("5 end to end", lambda e: end_to_end(rep, out, e), need=60)
        if not args.skip_torch:
            rep.step("6 PyTorch baselines", lambda e: torch_baselines(rep, e), need=45)
    else:
        for i, (cid, title, _) in enumerate(STANDIN_CHECKS):  # the first step runs them all (one child)
            rep.step(f"{cid} {STANDIN}: {title}", lambda e, cid=cid: standin_step(rep, out, cid, e), need=30 if i == 0 else 0)
        for i, (cid, model, variant, label) in enumerate(TORCH_MODELS):
            name = f"{cid} PyTorch {label} ({model} {variant}, random weights) {FRAME[0]}x{FRAME[1]}"
            if args.skip_torch:
                rep.step(name, skipped("--skip-torch"), need=0)
                continue
            last = i == len(TORCH_MODELS) - 1

            def go(e, model=model, variant=variant, label=label, last=last):
                spare = rep.left() - 50  # the child's start and the report's end
                torch_720(rep, model, variant, label, spare if last else min(200.0, 0.4 * spare), e)

            rep.step(name, go, need=90 if last else 60)
    print(f"\n## deploy-kit GPU check ({time.monotonic() - rep.t0:.0f} s, work folder {out})\n")
    print(rep.header() + "\n")
    print(rep.summary())
    rep.save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
