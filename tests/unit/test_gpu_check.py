"""benchmarks/gpu_check.py's no-TensorRT path and its stand-in engine (benchmarks/_standin.py), on the CPU.

Two test doubles, both fakes of CUDA that check deploy-kit's and the script's own logic — not CUDA,
not a GPU, not TensorRT:

* ``FakeCudart`` from tests/unit/test_cuda.py: a fake libcudart whose "device" memory is host
  memory and whose streams run at once, put behind the real deploy_kit.runners.cuda;
* the stand-in's ``HostKernel``: its function (input * scale + offset) in numpy on host addresses,
  in place of the CuPy kernel the GPU path launches.

With them the REAL EngineSession / EngineRunner / Restorer run the stand-in module, which checks that
it provides every attribute EngineSession uses, and the checks' comparisons, the allocation counter,
the skip rows and the table. The GPU path itself (CuPy kernel on deploy-kit's streams) runs only on
a GPU: ``python benchmarks/gpu_check.py --standin``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from deploy_kit.runners import cuda
from deploy_kit.runners.session import EngineSession
from tests.unit.test_cuda import FakeCudart

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import _standin  # noqa: E402
import gpu_check  # noqa: E402

TILE = (2, 3, 32, 32)


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path):
    """deploy_kit.runners.cuda over the host-memory fake libcudart, and a stand-in context whose
    kernel is the numpy HostKernel (small sizes: the checks' logic, not their timings)."""
    lib = FakeCudart()
    monkeypatch.setattr(cuda, "_api", lambda: lib)
    monkeypatch.setattr(cuda, "gpu_available", lambda: (True, ""))

    def make(kernel=None):
        return gpu_check.standin_context(str(tmp_path / "work"), kernel or _standin.HostKernel(), tile=TILE,
                                         kernel_ms=0.0, long_ms=0.0, frame=(70, 90), frames=2, runs=6, steady=8)

    return lib, make


def test_plan_round_trip_and_foreign_files(tmp_path, fake_gpu):
    path = _standin.write_plan(str(tmp_path / "p.json"), TILE, kernel_ms=2, scale=0.5, offset=0.25)
    plan = _standin.load_plan(path)
    assert plan["tensors"][0]["shape"] == list(TILE) and plan["kernel"] == {"ms": 2.0, "scale": 0.5, "offset": 0.25}
    for data in (b"junk", b"{}", b"\xff\xfe", json.dumps({**plan, "format": "x"}).encode(),
                 json.dumps({**plan, "tensors": plan["tensors"][:1]}).encode()):
        assert _standin.read_plan(data) is None
    junk = tmp_path / "junk.plan"
    junk.write_bytes(b"not a plan")
    with pytest.raises(ValueError, match="not a deploy-kit stand-in plan"):
        _standin.load_plan(str(junk))
    with pytest.raises(RuntimeError, match=f"could not be deserialized by {_standin.MODULE_NAME}"):
        EngineSession(str(junk), _standin.module(_standin.HostKernel()))


def test_the_real_engine_session_runs_the_standin(fake_gpu):
    lib, make = fake_gpu
    ctx = make()
    x = np.random.default_rng(0).random(TILE, dtype=np.float32)
    with EngineSession(ctx.plan, ctx.trt, slots=2) as s:
        assert (s.inputs, s.outputs) == (["input"], ["output"])
        assert s.shapes == {"input": TILE, "output": TILE} and s.dtypes["output"] == np.float32
        np.testing.assert_array_equal(s.run({"input": x})["output"], x * np.float32(0.5) + np.float32(0.25))
        a, b = s.submit({"input": x}), s.submit({"input": x + 1})
        np.testing.assert_array_equal(s.wait(a)["output"], x * np.float32(0.5) + np.float32(0.25))
        np.testing.assert_array_equal(s.wait(b)["output"], (x + 1) * np.float32(0.5) + np.float32(0.25))
    streams = [st for st, _, _ in ctx.kernel.launches]
    buffers = [(src, dst) for _, src, dst in ctx.kernel.launches]
    # each pass launched on its slot's own stream and buffers: slots 0, 1, 0 -> handles a, b, a
    assert streams[0] != streams[1] and streams[2] == streams[0] and all(streams)
    assert buffers[0] != buffers[1] and buffers[2] == buffers[0]
    assert not lib.live  # close freed everything the stand-in's session allocated


def test_every_check_passes_on_the_fake(fake_gpu):
    lib, make = fake_gpu
    ctx = make()
    results = {cid: gpu_check.run_check(fn, ctx) for cid, _, fn in gpu_check.STANDIN_CHECKS}
    assert {cid: r["status"] for cid, r in results.items()} == {cid: "ok" for cid, _, _ in gpu_check.STANDIN_CHECKS}, results
    s3 = results["S3"]["details"]
    assert s3["opening"]["cudaMalloc"] == s3["opening"]["cudaHostAlloc"] == 4  # 2 slots x (input, output)
    assert not set(s3["steady"]) & gpu_check.ALLOC_CALLS and s3["steady"]["cudaMemcpyAsync"] == 2 * 8
    assert not set(s3["restorer"]) & gpu_check.ALLOC_CALLS and s3["restorer"]["cudaMemcpyAsync"] > 0
    assert results["S1"]["details"]["slots=2"]["in_flight_equals_sequential"] is True
    assert "deploy-kit EngineSession.wait" in results["S4"]["summary"]
    assert results["S5"]["details"]["slots=2"]["stream_equals_reference"] is True
    assert cuda._call.__name__ == "_call"  # the counter put the module back
    assert not lib.live


class _Stale(_standin.HostKernel):
    """Writes nothing after its third launch: the output buffers keep an older pass's result."""

    def launch(self, stream, src, dst, count, spec):
        if len(self.launches) < 3:
            super().launch(stream, src, dst, count, spec)
        else:
            self.launches.append((stream, src, dst))


@pytest.mark.parametrize("kernel", [_standin.HostKernel(fn=lambda x, k: x * np.float32(k["scale"])), _Stale()],
                         ids=["wrong function", "stale outputs"])
def test_wrong_outputs_fail_the_output_checks(fake_gpu, kernel):
    _, make = fake_gpu
    ctx = make(kernel)
    for check in (gpu_check.check_outputs, gpu_check.check_restorer):
        res = gpu_check.run_check(check, ctx)
        assert res["status"] == "failed" and "differ" in res["summary"], res


class _AllocatesPerPass(_standin.HostKernel):
    """Allocates and frees device memory in every launch (what the steady-state check must catch)."""

    def launch(self, stream, src, dst, count, spec):
        cuda.DeviceBuffer(64).close()
        super().launch(stream, src, dst, count, spec)


def test_the_allocation_check_catches_a_per_pass_allocation(fake_gpu):
    _, make = fake_gpu
    res = gpu_check.run_check(gpu_check.check_no_alloc, make(_AllocatesPerPass()))
    assert res["status"] == "failed" and "cudaMalloc" in res["summary"] and "cudaFree" in res["summary"], res
    assert res["details"]["steady"]["cudaMalloc"] == 8  # one per pass of the window


def test_counting_cuda_calls(fake_gpu):
    original = cuda._call
    with gpu_check.counting_cuda_calls(cuda) as counts:
        cuda.DeviceBuffer(16).close()
        cuda.Stream().close()
    assert counts == {"cudaMalloc": 1, "cudaFree": 1, "cudaStreamCreateWithFlags": 1, "cudaStreamDestroy": 1}
    assert cuda._call is original
    with pytest.raises(RuntimeError, match="cannot be counted"):
        with gpu_check.counting_cuda_calls(types.SimpleNamespace(__name__="nocall")):
            pass


def test_timing_stats_and_run_counts():
    s = gpu_check.timing_stats([0.005, 0.001, 0.003, 0.004, 0.002], pixels=1_000_000)
    assert s == {"runs": 5, "median_ms": 3.0, "p10_ms": 1.0, "p90_ms": 5.0, "min_ms": 1.0, "MP_per_s": 333.33}
    with pytest.raises(ValueError):
        gpu_check.timing_stats([], 1)
    assert gpu_check.runs_for(0.1, 10) == 20  # 20 runs fit
    assert gpu_check.runs_for(1.0, 10) == 10  # fewer, to fit the share
    assert gpu_check.runs_for(5.0, 10) == 5  # never under the minimum
    assert gpu_check.runs_for(0.0, 0) == 20


def test_thread_cpu_tells_a_spinning_wait_from_a_sleeping_one():
    def spin():
        end = time.perf_counter() + 0.15
        while time.perf_counter() < end:
            pass

    cpu_spin, wall_spin = gpu_check.thread_cpu(spin)
    cpu_sleep, wall_sleep = gpu_check.thread_cpu(lambda: time.sleep(0.15))
    assert wall_spin >= 0.15 and wall_sleep >= 0.15
    assert cpu_spin > 0.05 and cpu_sleep < 0.02, (cpu_spin, cpu_sleep)
    with pytest.raises(KeyError):
        gpu_check.thread_cpu(lambda: {}["x"])


def test_report_table_and_json(tmp_path):
    path = tmp_path / "r.json"
    rep = gpu_check.Report(str(path), budget=100)
    rep.facts["env"] = {"gpu": "H100 (compute capability 9.0)", "driver": "550.54", "tensorrt": "none importable"}

    def with_rows(entry):
        entry["summary"] = "a | b"
        entry["rows"] = [{"name": "eager FP32", "status": "ok", "result": "12.5 MP/s"}]

    rep.step("one", with_rows)
    rep.step("two", gpu_check.skipped("no GPU: none here"))
    rep.step("three", lambda e: 1 / 0)
    rep.step("four", with_rows, need=1e9)
    table = rep.summary().splitlines()
    assert table[0] == "| step | status | seconds | result |"
    assert table[2].startswith("| one | ok |") and table[2].endswith("| a / b |")
    assert table[3].startswith("| &nbsp;&nbsp;eager FP32 | ok |") and "12.5 MP/s" in table[3]
    assert "| two | skipped |" in table[4] and "no GPU: none here" in table[4]
    assert "| three | failed |" in table[5] and "ZeroDivisionError" in table[5]
    assert "| four | skipped |" in table[6] and "time budget" in table[6]
    assert rep.header() == "gpu: H100 (compute capability 9.0); driver: 550.54; tensorrt: none importable"
    data = json.loads(path.read_text())
    assert [s["status"] for s in data["steps"]] == ["ok", "skipped", "failed", "skipped"]
    assert data["header"] == rep.header() and data["steps"][0]["rows"][0]["name"] == "eager FP32"
    assert "traceback" in data["steps"][2]["details"]


def test_torch_rows_from_a_child_that_timed_out():
    text = "\n".join([
        "MODES " + json.dumps(["pytorch-cuda", "pytorch-cuda-fp16", "pytorch-cuda-fp16-compile"]),
        "META " + json.dumps({"torch": "2.9"}),
        "START pytorch-cuda",
        "RESULT " + json.dumps({"mode": "pytorch-cuda", "label": "eager FP32", "status": "ok", "MP_per_s": 40.5,
                                "median_ms": 22.7, "runs": 12, "p90_ms": 23.1, "first_call_s": 1.2, "peak_mib": 900,
                                "finite": False, "fewer_runs": "12 of 20: time budget"}),
        "START pytorch-cuda-fp16",
        "some log line",
    ])
    meta, rows = gpu_check.torch_rows(text, 124)
    assert meta == {"torch": "2.9"}
    assert [r["status"] for r in rows] == ["ok", "failed", "skipped"]
    assert "40.5 MP/s" in rows[0]["result"] and "12 of 20: time budget" in rows[0]["result"]
    assert "NOT finite" in rows[0]["result"]
    assert rows[1]["result"] == "the child timed out during this mode"
    assert rows[2]["result"] == "not reached: the child timed out"


@pytest.mark.skipif(cuda.gpu_available()[0], reason="this machine has a GPU: the GPU rows would run, not skip")
def test_without_tensorrt_the_script_takes_the_standin_path_and_skips_every_gpu_row(tmp_path):
    """The script itself, with no TensorRT importable (both modules blocked in its process): the default
    is the no-TensorRT path; without a GPU each of its rows is skipped with the reason, and it exits 0."""
    report = tmp_path / "gc.json"
    code = ("import runpy, sys; sys.modules['tensorrt'] = sys.modules['tensorrt_rtx'] = None; "
            f"sys.argv = ['gpu_check.py', '--json', {str(report)!r}, '--out', {str(tmp_path / 'w')!r}, '--budget', '120']; "
            f"runpy.run_path({os.path.join(REPO, 'benchmarks', 'gpu_check.py')!r}, run_name='__main__')")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["facts"]["path"] == "stand-in" and "no TensorRT flavour is importable" in data["header"]
    steps = {s["step"].split()[0]: s for s in data["steps"]}
    assert list(steps) == ["1", "S1", "S2", "S3", "S4", "S5", "P1", "P2"]
    assert steps["1"]["status"] == "ok"
    for cid in ("S1", "S2", "S3", "S4", "S5"):
        assert steps[cid]["status"] == "skipped" and steps[cid]["summary"].startswith("no GPU:"), steps[cid]
        assert "stand-in (not TensorRT)" in steps[cid]["step"]
    for cid in ("P1", "P2"):
        assert steps[cid]["status"] == "skipped" and steps[cid]["summary"], steps[cid]
    assert "| S3 stand-in (not TensorRT): CUDA allocations in the steady state | skipped |" in p.stdout


def test_a_child_that_dies_mid_way_gives_its_results_then_failed_rows(monkeypatch, tmp_path):
    """The parent's reading of the stand-in child's output: reported checks keep their rows, the check
    running when it died and those after it are failed rows that say so."""
    first = {"check": "S1", "status": "ok", "summary": "equal", "details": {}, "seconds": 0.1}
    text = "\n".join(["INFO {}", "START S1", "RESULT " + json.dumps(first), "START S2", "Segmentation fault"])
    calls = []
    monkeypatch.setattr(gpu_check, "run", lambda cmd, timeout: calls.append(cmd) or (139, text, 1.0))
    rep = gpu_check.Report(None, budget=100)
    rep.facts.update(gpu=True, cupy_reason="")
    for cid, title, _ in gpu_check.STANDIN_CHECKS[:3]:
        rep.step(cid, lambda e, cid=cid: gpu_check.standin_step(rep, str(tmp_path), cid, e))
    assert len(calls) == 1 and "--standin-child" in calls[0]  # one child for all the checks
    assert [s["status"] for s in rep.steps] == ["ok", "failed", "failed"]
    assert "exited 139 during check S2" in rep.steps[1]["summary"]
    assert "exited 139 before check S3 reported" in rep.steps[2]["summary"]


def test_without_cupy_the_child_reports_every_check_failed_with_the_reason(tmp_path, capsys):
    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here")
    gpu_check.standin_child(str(tmp_path))
    lines = [json.loads(ln[len("RESULT "):]) for ln in capsys.readouterr().out.splitlines() if ln.startswith("RESULT ")]
    assert [d["check"] for d in lines] == [cid for cid, _, _ in gpu_check.STANDIN_CHECKS]
    assert all(d["status"] == "failed" and "CuPy kernel could not be made" in d["summary"] for d in lines)
