"""The ctypes CUDA layer and EngineSession/EngineRunner without a GPU.

Without a driver, construction must fail with the probe's reason (no crash). The bookkeeping of
sessions (slots, pinned buffers, casts, shape checks, close) runs here against a fake libcudart
whose "device" memory is host memory and a fake TensorRT module whose engine computes 2x + 1;
the real execution path is tests/gpu/test_engine_runner.py.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import types

import numpy as np
import pytest

from deploy_kit.runners import cuda, session
from deploy_kit.runners.session import EngineRunner, EngineSession

GPU_OK, WHY = cuda.gpu_available()
no_gpu_here = pytest.mark.skipif(GPU_OK, reason="this machine has a GPU: the no-driver path cannot be seen")


@no_gpu_here
def test_probe_without_driver_gives_a_reason():
    ok, why = cuda.gpu_available()
    assert ok is False
    assert "GPU" in why or "driver" in why


@no_gpu_here
@pytest.mark.parametrize("cls", [EngineSession, lambda plan, trt: EngineRunner(plan, trt, name="tensorrt-rtx")])
def test_construction_without_gpu_raises_the_reason(cls, tmp_path):
    plan = tmp_path / "x.plan"
    plan.write_bytes(b"not a plan")
    with pytest.raises(RuntimeError) as err:
        cls(str(plan), types.SimpleNamespace(__name__="unused"))  # fails before touching the module or file
    assert str(err.value) == WHY


@no_gpu_here
@pytest.mark.skipif(cuda._cudart() is None, reason="no libcudart on this machine")
@pytest.mark.parametrize("make, call", [(lambda: cuda.DeviceBuffer(16), "cudaMalloc"),
                                        (lambda: cuda.PinnedBuffer((2, 2), np.float32), "cudaHostAlloc"),
                                        (cuda.Stream, "cudaStreamCreateWithFlags"), (cuda.Event, "cudaEventCreateWithFlags")])
def test_real_libcudart_without_driver_raises_named_errors(make, call):
    """The declared prototypes against the real library: a CUDA error, named, instead of a crash."""
    with pytest.raises(cuda.CudaError, match=rf"^{call} failed: cudaError\w+ \(\d+\)$"):
        make()


class _FakeLib:
    """cuInit / cuDeviceGetCount / cudart version calls returning chosen values."""

    def __init__(self, init=0, count=1, runtime=12080, driver=12080):
        self.init, self.count, self.runtime, self.driver = init, count, runtime, driver

    def cuInit(self, flags):
        return self.init

    def cuDeviceGetCount(self, out):
        out._obj.value = self.count
        return 0

    def cudaRuntimeGetVersion(self, out):
        out._obj.value = self.runtime
        return 0

    def cudaDriverGetVersion(self, out):
        out._obj.value = self.driver
        return 0


@pytest.mark.parametrize("lib, cudart, expected", [
    (_FakeLib(init=100), None, "cuInit failed"),
    (_FakeLib(count=0), None, "no CUDA device present"),
    (_FakeLib(), None, "libcudart not found"),
    (_FakeLib(), _FakeLib(runtime=13000, driver=12080), "libcudart is CUDA 13.0 but the NVIDIA driver supports CUDA 12.8 only"),
    (_FakeLib(), _FakeLib(runtime=12040, driver=13000), ""),
])
def test_probe_reasons(monkeypatch, lib, cudart, expected):
    monkeypatch.setattr(cuda.ctypes, "CDLL", lambda name: lib)
    monkeypatch.setattr(cuda, "_cudart", lambda: cudart)
    ok, why = cuda.gpu_available()
    assert ok == (expected == "")
    assert expected in why


def test_cudart_choice_prefers_one_the_driver_supports(monkeypatch):
    libs = {"new": _FakeLib(runtime=13000, driver=12080), "old": _FakeLib(runtime=12060, driver=12080)}

    def load(name):
        if name not in libs:
            raise OSError(name)
        return libs[name]

    monkeypatch.setattr(cuda, "_candidates", lambda: ["missing", "new", "old"])
    monkeypatch.setattr(cuda.ctypes, "CDLL", load)
    cuda._cudart.cache_clear()
    try:
        assert cuda._cudart() is libs["old"]
        monkeypatch.setattr(cuda, "_candidates", lambda: ["new"])
        cuda._cudart.cache_clear()
        assert cuda._cudart() is libs["new"]  # none fits: the first found (the probe then says why)
    finally:
        cuda._cudart.cache_clear()


def test_candidates_include_pip_wheel_runtimes(tmp_path, monkeypatch):
    lib = tmp_path / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    (lib / "libcudart.so.13").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert str(lib / "libcudart.so.13") in cuda._candidates()


class FakeCudart:
    """libcudart whose device memory is host memory and whose streams run at once."""

    def __init__(self):
        self.live: dict[int, ctypes.Array] = {}
        self.calls: dict[str, int] = {}
        self.handles = itertools.count(0x1000, 8)
        self.fail: dict[str, int] = {}

    def __getattr__(self, fn):
        if not fn.startswith("cuda"):
            raise AttributeError(fn)

        def call(*args):
            self.calls[fn] = self.calls.get(fn, 0) + 1
            return self.fail.get(fn) or getattr(self, "_" + fn, lambda *a: 0)(*args)

        return call

    def _alloc(self, out, nbytes, *flags):
        buf = ctypes.create_string_buffer(int(nbytes))
        self.live[ctypes.addressof(buf)] = buf
        out._obj.value = ctypes.addressof(buf)
        return 0

    _cudaMalloc = _cudaHostAlloc = _alloc

    def _free(self, ptr):
        return 0 if self.live.pop(int(ptr), None) is not None else 1

    _cudaFree = _cudaFreeHost = _free

    def _create(self, out, flags):
        out._obj.value = next(self.handles)
        return 0

    _cudaStreamCreateWithFlags = _create

    def _cudaEventCreateWithFlags(self, out, flags):
        self.event_flags = getattr(self, "event_flags", []) + [flags]
        return self._create(out, flags)

    def _cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        return 0

    def cudaGetErrorName(self, code):
        return b"cudaErrorFake"


def fake_trt(io, name="faketrt"):
    """A TensorRT-like module whose engine has the I/O tensors ``io`` [(name, shape, dtype name, is_input)]
    and computes every output as 2 * (first input, cropped to its shape) + 1.

    Its runtime cache accepts only blobs it serialized itself (b"kernels:<n>", n = contexts made
    with it) and its Runtime records the logger, and the DLA core set when a plan is deserialized.
    These are test doubles of deploy-kit's own bookkeeping, not claims about TensorRT's behaviour.
    """
    t = types.SimpleNamespace(__name__=name, __version__="0.0")
    t.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    t.TensorFormat = types.SimpleNamespace(LINEAR="linear")

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self):
            pass

    t.ILogger = ILogger
    t.made = {"contexts": 0, "caches": 0, "configs": [], "loggers": [], "dla_at_deserialize": [],
              "refuse_cache": False, "deserialized": []}
    np_types = {"FLOAT": np.float32, "HALF": np.float16, "INT32": np.int32}

    class Cache:
        def __init__(self):
            self.kernels = 0

        def deserialize(self, blob):
            t.made["deserialized"].append(bytes(blob))
            if not bytes(blob).startswith(b"kernels:"):
                return False
            self.kernels = int(bytes(blob)[len(b"kernels:"):])
            return True

        def serialize(self):
            return b"kernels:%d" % self.kernels

    class Context:
        def __init__(self):
            self.addr = {}
            t.made["contexts"] += 1

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream):
            def view(name, shape, kind):
                n = int(np.prod(shape)) * np.dtype(np_types[kind]).itemsize
                raw = (ctypes.c_ubyte * n).from_address(self.addr[name])
                return np.frombuffer(raw, np.uint8).view(np_types[kind]).reshape(shape)

            src = next(view(n, s, k) for n, s, k, inp in io if inp)
            for n, s, k, inp in io:
                if not inp:
                    view(n, s, k)[...] = 2 * src[tuple(slice(0, d) for d in s)].astype(np.float32) + 1
            return True

    class Config:
        cache = None

        def create_runtime_cache(self):
            t.made["caches"] += 1
            return Cache()

        def set_runtime_cache(self, cache):
            if t.made["refuse_cache"]:
                return False
            self.cache = cache
            return True

    class Engine:
        num_io_tensors = len(io)

        def get_tensor_name(self, i):
            return io[i][0]

        def _spec(self, name):
            return next(x for x in io if x[0] == name)

        def get_tensor_shape(self, name):
            return self._spec(name)[1]

        def get_tensor_dtype(self, name):
            return types.SimpleNamespace(name=self._spec(name)[2])

        def get_tensor_mode(self, name):
            return "in" if self._spec(name)[3] else "out"

        def get_tensor_format(self, name):
            return "linear"

        def create_runtime_config(self):
            t.made["configs"].append(Config())
            return t.made["configs"][-1]

        def create_execution_context(self, config=None):
            if config is not None and config.cache is not None:
                config.cache.kernels += 1  # the kernels this context compiled
            return Context()

    class Runtime:
        DLA_core = -1

        def __init__(self, logger):
            t.made["loggers"].append(logger)

        def deserialize_cuda_engine(self, data):
            t.made["dla_at_deserialize"].append(self.DLA_core)
            return Engine() if data == b"plan" else None

    t.Runtime = Runtime
    return t


@pytest.fixture
def fake(monkeypatch, tmp_path):
    lib = FakeCudart()
    monkeypatch.setattr(session, "_LOGGERS", {})  # each test's fake module gets its own logger
    monkeypatch.setattr(cuda, "_api", lambda: lib)
    monkeypatch.setattr(cuda, "gpu_available", lambda: (True, ""))
    plan = tmp_path / "m.plan"
    plan.write_bytes(b"plan")
    return lib, str(plan)


IO_FP32 = [("input", (2, 3, 4, 5), "FLOAT", True), ("output", (2, 3, 4, 5), "FLOAT", False)]
IO_FP16 = [("input", (1, 3, 4, 4), "HALF", True), ("output", (1, 3, 4, 4), "HALF", False), ("aux", (1, 1, 4, 4), "FLOAT", False)]


def test_session_runs_and_reuses_its_buffers(fake):
    lib, plan = fake
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    with EngineSession(plan, fake_trt(IO_FP32), slots=2) as s:
        allocs = dict(lib.calls)
        assert allocs["cudaHostAlloc"] == allocs["cudaMalloc"] == 4 and allocs["cudaStreamCreateWithFlags"] == 2
        np.testing.assert_allclose(s.run({"input": x})["output"], 2 * x + 1)
        views = []
        for i in range(4):
            out = s.wait(s.submit({"input": x + i}))["output"]
            np.testing.assert_allclose(out, 2 * (x + i) + 1)
            views.append(out.ctypes.data)
        # run() took slot 0, so the loop's passes went to slots 1, 0, 1, 0
        assert views[0] == views[2] != views[1] == views[3]
        for fn in ("cudaHostAlloc", "cudaMalloc", "cudaStreamCreateWithFlags", "cudaEventCreateWithFlags"):
            assert lib.calls[fn] == allocs[fn], fn  # nothing allocated per pass
    assert not lib.live  # close freed every allocation
    s.close()  # idempotent


def test_two_slots_in_flight_keep_their_results(fake):
    _, plan = fake
    xs = [np.full((2, 3, 4, 5), i, np.float32) for i in range(2)]
    with EngineSession(plan, fake_trt(IO_FP32), slots=2) as s:
        a, b = s.submit({"input": xs[0]}), s.submit({"input": xs[1]})
        assert (a, b) == (0, 1)
        np.testing.assert_array_equal(s.wait(a)["output"], 1)
        np.testing.assert_array_equal(s.wait(b)["output"], 3)


def test_session_checks_feeds(fake):
    _, plan = fake
    with EngineSession(plan, fake_trt(IO_FP32), slots=1) as s:
        with pytest.raises(ValueError, match="input 'input' must have shape"):
            s.submit({"input": np.zeros((1, 3, 4, 5), np.float32)})
        with pytest.raises(ValueError, match="missing input 'input'"):
            s.submit({})
        with pytest.raises(ValueError, match="unknown input"):
            s.submit({"input": np.zeros((2, 3, 4, 5)), "other": 1})
        with pytest.raises(ValueError, match="cannot be cast"):
            s.submit({"input": np.zeros((2, 3, 4, 5), np.complex64)})
        with pytest.raises(RuntimeError, match="not been submitted"):
            s.wait(0)
    with pytest.raises(RuntimeError, match="closed"):
        s.submit({"input": np.zeros((2, 3, 4, 5))})


def test_session_rejects_dynamic_shapes_and_bad_plans(fake):
    _, plan = fake
    with pytest.raises(ValueError, match="dynamic shape"):
        EngineSession(plan, fake_trt([("input", (-1, 3, 4, 4), "FLOAT", True), ("output", (1, 3, 4, 4), "FLOAT", False)]))
    bad = os.path.join(os.path.dirname(plan), "bad.plan")
    with open(bad, "wb") as fh:
        fh.write(b"junk")
    with pytest.raises(RuntimeError, match="could not be deserialized by faketrt"):
        EngineSession(bad, fake_trt(IO_FP32))


def test_runtime_cache_shared_by_the_slots(fake):
    _, plan = fake
    trt = fake_trt(IO_FP32)
    with EngineSession(plan, trt, slots=3):
        assert trt.made["contexts"] == 3 and trt.made["caches"] == 1
        assert len({id(c.cache) for c in trt.made["configs"]}) == 1


def test_runner_fp16_outputs_as_float32(fake):
    lib, plan = fake
    x = np.linspace(-1, 1, 48, dtype=np.float32).reshape(1, 3, 4, 4)
    with EngineRunner(plan, fake_trt(IO_FP16), name="tensorrt-rtx", slots=2) as r:
        assert (r.name, r.slots, r.input_name) == ("tensorrt-rtx", 2, "input")
        assert (r.input_shape, r.output_names) == ((1, 3, 4, 4), ["output", "aux"])
        out, aux = r.run(x)
        assert out.dtype == aux.dtype == np.float32
        np.testing.assert_allclose(out, 2 * x.astype(np.float16).astype(np.float32) + 1, rtol=1e-3)
        np.testing.assert_allclose(aux[0, 0], out[0, 0])
        p1, p2 = r.submit(x), r.submit(x + 1)
        first, second = p1.wait(), p2.wait()
        assert first[0].ctypes.data != second[0].ctypes.data
        again = r.submit(x).wait()  # slot 0 again: the same runner-owned arrays
        assert again[0].ctypes.data == first[0].ctypes.data and again[1].ctypes.data == first[1].ctypes.data
        with pytest.raises(RuntimeError, match="overwritten"):
            p1.wait()
    assert not lib.live


def test_runner_fp32_outputs_are_the_pinned_buffers(fake):
    _, plan = fake
    with EngineRunner(plan, fake_trt(IO_FP32), name="tensorrt", slots=2) as r:
        x = np.ones(r.input_shape, np.float32)
        got = r.submit(x).wait()[0]
        assert got.ctypes.data == r.session.wait(0)["output"].ctypes.data
        owned = r.run(x)[0]
        assert owned.ctypes.data != r.session.wait(1)["output"].ctypes.data


def test_cuda_errors_name_the_call(fake):
    lib, plan = fake
    lib.fail["cudaHostAlloc"] = 2
    with pytest.raises(cuda.CudaError, match=r"cudaHostAlloc failed: cudaErrorFake \(2\)"):
        EngineSession(plan, fake_trt(IO_FP32))
    assert not lib.live  # the half-built session was released


def test_events_let_the_waiting_thread_sleep(fake):
    """cudaEventBlockingSync (0x01) | cudaEventDisableTiming (0x02), as cuda_runtime_api.h defines them:
    without BlockingSync a thread in cudaEventSynchronize spins a whole CPU core."""
    lib, plan = fake
    with EngineSession(plan, fake_trt(IO_FP32), slots=2):
        assert lib.event_flags == [0x01 | 0x02] * 2


def test_values_a_float16_input_cannot_hold_are_refused(fake):
    _, plan = fake
    ok = np.linspace(-30000, 30000, 48).reshape(1, 3, 4, 4)  # float64, within float16's range (and 2x + 1 too)
    with EngineRunner(plan, fake_trt(IO_FP16), name="tensorrt-rtx", slots=1) as r:
        np.testing.assert_allclose(r.run(ok)[0], 2 * ok.astype(np.float16).astype(np.float32) + 1, rtol=1e-3)
        for bad in (ok * 3, -ok * 3, np.full((1, 3, 4, 4), 1e300), np.full((1, 3, 4, 4), np.inf, np.float32)):
            with pytest.raises(ValueError, match=r"^input 'input': values from .* do not fit the engine's float16 input "
                                                 r"\(range -65504 to 65504\); scale them first$"):
                r.run(bad)
        nan = np.full((1, 3, 4, 4), np.nan)
        assert np.isnan(r.run(nan)[0]).all()  # NaN is not out of range: it passes, as through a float32 input


def test_integer_inputs_that_would_wrap_are_refused(fake):
    _, plan = fake
    io = [("input", (1, 4), "INT32", True), ("output", (1, 4), "FLOAT", False)]
    trt = fake_trt(io)
    with EngineSession(plan, trt, slots=1) as s:
        np.testing.assert_array_equal(s.run({"input": np.arange(4, dtype=np.int64)[None]})["output"], [[1, 3, 5, 7]])
        with pytest.raises(ValueError, match="do not fit the engine's int32 input"):
            s.submit({"input": np.array([[0, 1, 2, 2**40]], np.int64)})


def test_runtime_cache_persists_beside_the_plan(fake):
    _, plan = fake
    cache = plan + ".rtcache"
    trt = fake_trt(IO_FP32)
    with EngineSession(plan, trt, slots=2):
        assert not os.path.exists(cache) and trt.made["deserialized"] == []
    assert open(cache, "rb").read() == b"kernels:2"  # written when the session closed
    assert not [f for f in os.listdir(os.path.dirname(plan)) if f.endswith(".part")]  # atomically
    with EngineSession(plan, trt, slots=1) as s:
        assert s.cache_path == cache and trt.made["deserialized"] == [b"kernels:2"]  # loaded, not compiled again
    assert open(cache, "rb").read() == b"kernels:3"
    before = os.path.getmtime(cache)
    with EngineSession(plan, trt, slots=1, runtime_cache=False):
        pass
    assert os.path.getmtime(cache) == before and trt.made["deserialized"] == [b"kernels:2"]


def test_a_cache_from_elsewhere_is_replaced_with_a_warning(fake):
    _, plan = fake
    with open(plan + ".rtcache", "wb") as fh:
        fh.write(b"made on another GPU")
    with pytest.warns(RuntimeWarning, match="was made for another GPU, driver or faketrt version"):
        with EngineSession(plan, fake_trt(IO_FP32), slots=1):
            pass
    assert open(plan + ".rtcache", "rb").read() == b"kernels:1"


def test_a_refused_runtime_cache_is_a_warning_and_nothing_is_written(fake):
    _, plan = fake
    trt = fake_trt(IO_FP32)
    trt.made["refuse_cache"] = True
    with pytest.warns(RuntimeWarning, match="faketrt refused the runtime cache"):
        with EngineSession(plan, trt, slots=2) as s:
            np.testing.assert_allclose(s.run({"input": np.ones((2, 3, 4, 5), np.float32)})["output"], 3)
    assert not os.path.exists(plan + ".rtcache")


def test_an_unwritable_cache_does_not_fail_the_run(fake, tmp_path):
    _, plan = fake
    (tmp_path / "blocker").write_bytes(b"")  # a file where the cache's folder would be
    with pytest.warns(RuntimeWarning, match="could not write the runtime cache"):
        with EngineSession(plan, fake_trt(IO_FP32), slots=1, runtime_cache=str(tmp_path / "blocker" / "x.rtcache")):
            pass


def test_a_dla_plan_is_deserialized_on_its_core(fake):
    _, plan = fake
    trt = fake_trt(IO_FP32)
    with EngineRunner(plan, trt, name="tensorrt", dla_core=1):
        pass
    with EngineRunner(plan, trt, name="tensorrt"):
        pass
    assert trt.made["dla_at_deserialize"] == [1, -1]  # set before deserializing; GPU plans leave it alone


def test_sessions_share_the_process_logger(fake):
    _, plan = fake
    trt = fake_trt(IO_FP32)
    with EngineSession(plan, trt, slots=1), EngineSession(plan, trt, slots=1):
        pass
    assert len(trt.made["loggers"]) == 2 and trt.made["loggers"][0] is trt.made["loggers"][1] is session.trt_logger(trt)
