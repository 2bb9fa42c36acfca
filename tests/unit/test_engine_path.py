"""The engine path's decisions: which plan runs on which machine, and what ``auto`` says when it skips one.

There is no GPU here. The GPU, its driver and NVRTC are a fake probe (deploy_kit.runners.cuda's
gpu_available / device_info / driver_version / nvrtc monkeypatched): each test checks deploy-kit's own
decision for a described machine, not TensorRT's behaviour. The installed tensorrt_rtx package itself
is real (its version, its ComputeCapability enum, its distribution name); a fake TensorRT flavour
(``_Flavour``) stands in only where a test needs a DLA or a builder that logs.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import pytest

from deploy_kit import backends, compare, manifest
from deploy_kit.backends import tensorrt_rtx as rtx_module
from deploy_kit.backends import BuildOptions, OrtRunOptions
from deploy_kit.backends._trt import BuildResult, EngineBackend
from deploy_kit.bundle import open_bundle
from deploy_kit.errors import EngineBuildError, UsageError
from deploy_kit.manifest import Manifest, ManifestError, make_manifest, plan_manifest, write_manifest
from deploy_kit.runners import cuda, session
from deploy_kit.runtime.target import bundle_runner, open_target

RTX = backends.get(backends.TENSORRT_RTX)
needs_rtx = pytest.mark.skipif(not RTX.installed(), reason="tensorrt-rtx not installed (pip install 'deploy-kit[rtx]')")
H100 = {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
RTX4090 = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9"}
RTX2080 = {"name": "NVIDIA GeForce RTX 2080 Ti", "compute_capability": "7.5"}


def machine(monkeypatch, gpu=RTX4090, driver=13000, nvrtc=True):
    """A fake probe of this machine: a GPU (or None), the driver's CUDA version, NVRTC found or not."""
    monkeypatch.setattr(cuda, "gpu_available", lambda: (True, "") if gpu else (False, "no CUDA device present"))
    monkeypatch.setattr(cuda, "device_info", lambda device=0: gpu)
    monkeypatch.setattr(cuda, "driver_version", lambda: driver)
    monkeypatch.setattr(cuda, "nvrtc", lambda major: f"libnvrtc.so.{major}" if nvrtc else None)
    # no openvino importable: these tests check the engines' fallback to ONNX Runtime, whose notes they
    # read (auto's choice between the CPU runners is tests/integration/test_openvino.py's)
    monkeypatch.setitem(sys.modules, "openvino", None)


def _meta(onnx="g.onnx"):
    return {"deploy_kit_version": "test", "model": "m", "variant": "v", "input_shape": [1, 1, 2, 2],
            "precision": "fp32", "input_names": ["input"], "output_names": ["output"], "output_kind": "image",
            "input": manifest.input_conventions(1, 1), "onnx": onnx}


def _sidecar(eng_name="tensorrt-rtx", version=None, **details):
    m = make_manifest(_meta(), plan="g.plan", backend={"name": eng_name, "version": version or RTX.version(), **details})
    return Manifest.from_dict(m)


# --------------------------------------------------------------------------- which GPUs TensorRT-RTX runs on
@needs_rtx
def test_rtx_targets_are_the_documented_ones_the_installed_enum_has():
    import tensorrt_rtx

    members = set(dir(tensorrt_rtx.ComputeCapability))
    targets = RTX.targets()
    assert set(targets) <= set(rtx_module.RTX_TARGETS) and all(rtx_module.RTX_TARGETS[t] in members for t in targets)
    assert {"sm75", "sm86", "sm89", "sm120"} <= set(targets)
    assert "sm80" not in targets and "sm90" not in targets  # data-centre GPUs: not in any RTX support matrix


@needs_rtx
@pytest.mark.parametrize("gpu, ok", [(H100, False), ({"name": "A100", "compute_capability": "8.0"}, False),
                                     (RTX4090, True), (RTX2080, True)])
def test_rtx_can_run_only_on_its_targets(monkeypatch, gpu, ok):
    machine(monkeypatch, gpu=gpu)
    got, why = RTX.can_run()
    assert got is ok, why
    if not ok:
        sm = "sm" + gpu["compute_capability"].replace(".", "")
        assert why == f"GPU {sm} is not a TensorRT-RTX target: {', '.join(RTX.targets())} - build with --backend tensorrt"
    assert RTX.can_run_artifact() == (got, why)  # no artifact: the same answer


@needs_rtx
def test_rtx_cuda_major_is_its_wheel_s(monkeypatch):
    import importlib.metadata as md

    found = [d for d in RTX.distributions if _installed(md, d)]
    expected = next((int(d.rsplit("cu", 1)[1]) for d in found if "-cu" in d), None)
    assert RTX.cuda_major() == expected and expected is not None, found


def _installed(md, dist):
    try:
        md.version(dist)
    except md.PackageNotFoundError:
        return False
    return True


def test_cuda_major_of_a_metapackage_comes_from_its_requirement(monkeypatch):
    """Fake distribution metadata: checks deploy-kit's reading of it, not pip's."""
    import importlib.metadata as md

    dists = {"tensorrt": ["tensorrt_cu12==10.13.0.35"]}

    def version(name):
        if name not in dists:
            raise md.PackageNotFoundError(name)
        return "10.13.0.35"

    monkeypatch.setattr(md, "version", version)
    monkeypatch.setattr(md, "requires", lambda name: dists[name])
    assert backends.get(backends.TENSORRT).cuda_major() == 12
    dists.clear()
    assert backends.get(backends.TENSORRT).cuda_major() is None  # JetPack's TensorRT: no pip metadata


@needs_rtx
def test_a_driver_older_than_the_flavour_s_cuda_says_so(monkeypatch):
    machine(monkeypatch, driver=12080)
    major = RTX.cuda_major()
    ok, why = RTX.can_run()
    assert not ok
    assert why.startswith(f"tensorrt-rtx {RTX.version()} is built for CUDA {major} but the NVIDIA driver supports CUDA 12.8 only")
    assert "pip install tensorrt-rtx-cu12" in why
    machine(monkeypatch, driver=major * 1000 + 20)
    assert RTX.can_run() == (True, "")


@needs_rtx
def test_missing_nvrtc_is_named_before_a_model_runs(monkeypatch):
    machine(monkeypatch, nvrtc=False)
    ok, why = RTX.can_run()
    assert not ok and why.startswith(f"libnvrtc.so.{RTX.cuda_major()} not found") and "pip install nvidia-cuda-nvrtc" in why


def test_nvrtc_search_looks_in_pip_wheel_folders(tmp_path, monkeypatch):
    """The loader is a fake (ctypes.CDLL): checks which files deploy-kit offers it, in which order."""
    lib = tmp_path / "nvidia" / "cu13" / "lib"
    lib.mkdir(parents=True)
    (lib / "libnvrtc.so.13").write_bytes(b"")
    monkeypatch.syspath_prepend(str(tmp_path))
    tried = []

    def load(name, mode=0):
        tried.append(name)
        if name != str(lib / "libnvrtc.so.13"):
            raise OSError(name)
        assert mode == cuda.ctypes.RTLD_GLOBAL  # a later dlopen("libnvrtc.so.13") must find it in the process

    monkeypatch.setattr(cuda.ctypes, "CDLL", load)
    cuda.nvrtc.cache_clear()
    try:
        assert cuda.nvrtc(13) == str(lib / "libnvrtc.so.13")
        assert tried[0] == "libnvrtc.so.13"  # the loader's own search first
        assert cuda.nvrtc(12) is None
    finally:
        cuda.nvrtc.cache_clear()


def test_driver_version_without_a_driver_is_none(monkeypatch):
    def no_driver(name, *a, **k):
        raise OSError(name)

    monkeypatch.setattr(cuda.ctypes, "CDLL", no_driver)
    assert cuda.driver_version() is None


# --------------------------------------------------------------------------- a given plan on this machine
@needs_rtx
def test_a_plan_from_another_version_names_both_and_the_rebuild(monkeypatch):
    machine(monkeypatch)
    ok, why = RTX.can_run_artifact(_sidecar(version="1.0.0.21"))
    assert not ok
    assert why == (f"it was built by tensorrt-rtx 1.0.0.21 and this machine has tensorrt-rtx {RTX.version()} (a plan loads "
                   "only under the version that built it): rebuild it with deploy-kit build BUNDLE --backend tensorrt-rtx")
    assert RTX.can_run_artifact(_sidecar()) == (True, "")


@needs_rtx
@pytest.mark.parametrize("recorded, gpu, ok", [
    (["sm120"], RTX4090, False), (["sm86", "sm89", "sm120"], RTX4090, True),
    (["default (sm86, sm89, sm120 portable)"], RTX2080, False),  # a plan of an older deploy-kit: Turing not in the default
    (None, RTX2080, True),  # nothing recorded: only the runtime's own targets decide
])
def test_a_plan_runs_only_on_the_gpus_it_was_built_for(monkeypatch, recorded, gpu, ok):
    machine(monkeypatch, gpu=gpu)
    details = {} if recorded is None else {"compute_capabilities": recorded}
    got, why = RTX.can_run_artifact(_sidecar(**details))
    assert got is ok, why
    if not ok:
        sm = "sm" + gpu["compute_capability"].replace(".", "")
        assert why.startswith("it was built for ") and why.endswith(
            f"not this GPU ({sm}): rebuild it with deploy-kit build BUNDLE --backend tensorrt-rtx --compute-capability {sm}")


@needs_rtx
def test_a_plan_of_another_flavour_is_refused(monkeypatch):
    machine(monkeypatch)
    ok, why = RTX.can_run_artifact(_sidecar(eng_name="tensorrt"))
    assert not ok and why == "it is a tensorrt plan, not a tensorrt-rtx one"


def test_the_default_for_a_graph_runner_is_can_run():
    ort = backends.get(backends.ONNXRUNTIME)
    assert ort.can_run_artifact() == ort.can_run() == ort.can_run_artifact(_sidecar())


def test_manifest_exposes_targets_and_dla_core():
    m = _sidecar(compute_capabilities=["SM86", "sm89"], dla_core=1)
    assert m.compute_capabilities == ("sm86", "sm89") and m.dla_core == 1 and m.backend_version == RTX.version()
    assert _sidecar().compute_capabilities is None and _sidecar().dla_core is None
    with pytest.raises(ManifestError, match="dla_core 'one' is not a core number"):
        _sidecar(dla_core="one")
    with pytest.raises(ManifestError, match="compute_capabilities must be a list"):
        _sidecar(compute_capabilities="sm86")


# --------------------------------------------------------------------------- a fake flavour: DLA, logger
class _Flavour(EngineBackend):
    """A TensorRT flavour over a fake module (the test double of ``tensorrt``): checks deploy-kit's decisions."""

    name = "tensorrt"  # reuses a registered name: manifests name it
    label = "TensorRT"

    def __init__(self, module):
        self.module_obj = module

    def trt(self):
        return self.module_obj

    def installed(self):
        return True

    def major(self):
        return "trt0"

    def cuda_major(self):
        return None


def _fake_trt_module(dla_cores=0):
    """A fake ``tensorrt``. Like TensorRT (https://github.com/NVIDIA/TensorRT/issues/1475) it keeps the
    first logger it is given while any builder or runtime lives and sends every message there; its
    builder fails with an error message."""
    t = types.SimpleNamespace(__name__="fake_tensorrt_for_engine_path", __version__="10.0.0")

    class ILogger:
        Severity = types.SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self):
            pass

    t.ILogger, t.process_logger = ILogger, None

    def keep(logger):
        t.process_logger = t.process_logger or logger

    class Runtime:
        num_DLA_cores = dla_cores

        def __init__(self, logger):
            keep(logger)

    class Parser:
        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            return True

    class Config:
        def set_memory_pool_limit(self, pool, size):
            pass

    class Builder:
        def __init__(self, logger):
            keep(logger)

        def create_network(self, flags):
            return object()

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            t.process_logger.log(ILogger.Severity.WARNING, "a warning of this build")
            t.process_logger.log(ILogger.Severity.ERROR, "layer conv1: no implementation for this precision")
            return None

    t.Runtime, t.Builder, t.OnnxParser = Runtime, Builder, Parser
    t.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    t.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    return t


def test_a_build_after_a_runtime_reports_its_own_errors(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(session, "_LOGGERS", {})
    t = _fake_trt_module()
    runtime = t.Runtime(session.trt_logger(t))  # what EngineSession does first (tests/unit/test_cuda.py)
    onnx = tmp_path / "g.onnx"
    onnx.write_bytes(b"")
    with pytest.raises(EngineBuildError, match="layer conv1: no implementation for this precision"):
        _Flavour(t).build(str(onnx), str(tmp_path / "g.plan"))
    assert t.process_logger is session.trt_logger(t) and runtime is not None
    assert not os.path.exists(tmp_path / "g.plan")
    assert capsys.readouterr().err == ""  # a build's messages are its own: recorded, not printed
    session.trt_logger(t).log(t.ILogger.Severity.WARNING, "a runtime warning")
    assert "[fake_tensorrt_for_engine_path] [W] a runtime warning" in capsys.readouterr().err


def test_a_dla_plan_needs_its_core(monkeypatch):
    machine(monkeypatch, gpu={"name": "Orin", "compute_capability": "8.7"})
    m = _sidecar(eng_name="tensorrt", version="10.0.0", compute_capabilities=["sm87"], dla_core=1)
    ok, why = _Flavour(_fake_trt_module(dla_cores=1)).can_run_artifact(m)
    assert not ok and why == ("it was built for DLA core 1 and this device has 1 DLA core: "
                              "rebuild it with deploy-kit build BUNDLE --backend tensorrt")
    assert _Flavour(_fake_trt_module(dla_cores=2)).can_run_artifact(m) == (True, "")


def test_tensorrt_keeps_its_timing_cache_without_storing_it_in_its_options(monkeypatch, tmp_path):
    """A fake builder config (a test double of TensorRT's IBuilderConfig create/set/get_timing_cache):
    checks deploy-kit's decisions - the cache file is read and attached when the build is configured,
    and the cache the config holds is written back after the build - not TensorRT's behaviour."""
    machine(monkeypatch, gpu={"name": "Orin", "compute_capability": "8.7"})

    class Cache:
        def __init__(self, blob):
            self.blob = blob

        def serialize(self):
            return self.blob + b"+this build"

    class Config:
        attached = None

        def create_timing_cache(self, blob):
            return Cache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            assert ignore_mismatch is False
            self.attached = cache

        def get_timing_cache(self):
            return self.attached

    trt = backends.get(backends.TENSORRT)
    for before in (b"earlier builds", None):  # an existing cache file, and none yet
        path = tmp_path / f"{before is None}.cache"
        if before is not None:
            path.write_bytes(before)
        options = trt.build_options(timing_cache=str(path))
        config = Config()
        details = trt.configure(types.SimpleNamespace(), None, config, options)
        assert details == {"compute_capabilities": ["sm87"], "timing_cache": str(path)}
        assert config.attached.blob == (before or b"")
        trt.after_build(config, options)
        assert path.read_bytes() == (before or b"") + b"+this build"
        assert options == backends.TensorRTBuildOptions(timing_cache=str(path))  # nothing stored in them


def test_after_build_sees_the_config_once_the_plan_is_written(monkeypatch, tmp_path):
    """The fake flavour's builder succeeds: ``after_build`` gets the very config the plan was built with,
    after the plan is on disk, and the build's options unchanged (deploy-kit's order, not TensorRT's)."""
    monkeypatch.setattr(session, "_LOGGERS", {})
    t = _fake_trt_module()
    made, seen = [], []
    create = t.Builder.create_builder_config
    t.Builder.create_builder_config = lambda self: made.append(create(self)) or made[-1]
    t.Builder.build_serialized_network = lambda self, network, config: b"plan bytes"
    plan = tmp_path / "g.plan"

    class Recording(_Flavour):
        def after_build(self, config, options):
            seen.append((config, plan.read_bytes(), options))

    onnx = tmp_path / "g.onnx"
    onnx.write_bytes(b"")
    res = Recording(t).build(str(onnx), str(plan))
    assert res.size == len(b"plan bytes") and seen == [(made[0], b"plan bytes", BuildOptions())]


# --------------------------------------------------------------------------- auto: what runs a bundle, and the note
def _bundle(tmp_path, plans=()):
    """A real bundle folder (a one-node ONNX, its manifest) with plan files and sidecars ``plans``:
    [(file name, sidecar backend section)]. The plans' bytes are not engines: nothing here opens one
    unless a test says so."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    d = tmp_path / "b.bundle"
    d.mkdir()
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 2, 2])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 2, 2])
    graph = helper.make_graph([helper.make_node("Neg", ["input"], ["output"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(d / "g.onnx"))
    write_manifest(str(d / "manifest.json"), make_manifest(_meta(), files={"g.onnx": manifest.file_sha256(str(d / "g.onnx"))}))
    for name, section in plans:
        (d / name).write_bytes(b"not an engine")
        built = BuildResult(str(d / name), 1.0, 13, section["name"], section["version"],
                            {k: v for k, v in section.items() if k not in ("name", "version")})
        eng = types.SimpleNamespace(name=section["name"])
        write_manifest(str(d / name) + ".json", plan_manifest(_meta(), "fp32", str(d / "g.onnx"), str(d / name), eng, built))
    return open_bundle(str(d))


@needs_rtx
def test_auto_skips_an_rtx_plan_on_a_data_centre_gpu_in_one_line(monkeypatch, tmp_path):
    machine(monkeypatch, gpu=H100)
    b = _bundle(tmp_path, [("g.rtx1.plan", {"name": "tensorrt-rtx", "version": RTX.version(),
                                            "compute_capabilities": ["sm86", "sm89", "sm120"]})])
    runner, note = bundle_runner(b, "auto", [OrtRunOptions(threads=1), backends.EngineRunOptions(slots=1)])
    try:
        assert runner.name == backends.ONNXRUNTIME
        assert runner.session.get_session_options().intra_op_num_threads == 1  # ONNX Runtime took its own
        assert np.array_equal(runner.run(np.ones((1, 1, 2, 2), np.float32))[0], -np.ones((1, 1, 2, 2), np.float32))
    finally:
        runner.close()
    assert note == ("onnxruntime (CPU) on g.onnx - no built engine can run here; skipped: tensorrt-rtx engine g.rtx1.plan "
                    f"(GPU sm90 is not a TensorRT-RTX target: {', '.join(RTX.targets())} - build with --backend tensorrt)")
    assert "\n" not in note
    with pytest.raises(UsageError, match=r"^cannot run a tensorrt-rtx engine here: GPU sm90 is not a TensorRT-RTX target"):
        bundle_runner(b, backends.TENSORRT_RTX)


@needs_rtx
def test_a_plan_of_another_rtx_version_is_skipped_in_auto_and_refused_by_name(monkeypatch, tmp_path):
    machine(monkeypatch)
    b = _bundle(tmp_path, [("g.rtx1.plan", {"name": "tensorrt-rtx", "version": "1.0.0.21"})])
    runner, note = bundle_runner(b, "auto", OrtRunOptions(threads=1))
    runner.close()
    assert runner.name == backends.ONNXRUNTIME
    assert f"skipped: tensorrt-rtx engine g.rtx1.plan (it was built by tensorrt-rtx 1.0.0.21 and this machine has " \
           f"tensorrt-rtx {RTX.version()}" in note and f"deploy-kit build {b.path} --backend tensorrt-rtx)" in note
    with pytest.raises(UsageError) as err:
        bundle_runner(b, backends.TENSORRT_RTX)
    msg = str(err.value)
    assert "1.0.0.21" in msg and RTX.version() in msg and f"deploy-kit build {b.path}" in msg and "\n" not in msg
    with pytest.raises(UsageError) as err:  # the plan itself as the target: the same one line
        open_target(os.path.join(b.path, "g.rtx1.plan"))
    plan = os.path.join(b.path, "g.rtx1.plan")
    assert str(err.value).startswith(f"cannot run {plan} here: it was built by tensorrt-rtx 1.0.0.21")
    assert str(err.value).endswith(f"rebuild it with deploy-kit build {b.path} --backend tensorrt-rtx")  # its bundle


@needs_rtx
def test_auto_falls_back_when_a_plan_that_should_run_does_not_open(monkeypatch, tmp_path):
    """The real tensorrt_rtx runtime is handed bytes that are not an engine (its deserializer refuses
    them); the fake CUDA says a target GPU is present."""
    machine(monkeypatch)
    monkeypatch.setattr(session, "_LOGGERS", {})
    b = _bundle(tmp_path, [("g.rtx1.plan", {"name": "tensorrt-rtx", "version": RTX.version(),
                                            "compute_capabilities": ["sm89"]})])
    runner, note = bundle_runner(b, "auto", OrtRunOptions(threads=1))
    runner.close()
    assert runner.name == backends.ONNXRUNTIME
    assert "skipped: tensorrt-rtx engine g.rtx1.plan (" in note and "could not be deserialized by tensorrt_rtx" in note


def test_auto_without_plans_says_what_is_missing(monkeypatch, tmp_path):
    machine(monkeypatch, gpu=None)
    b = _bundle(tmp_path)
    runner, note = bundle_runner(b, "auto", OrtRunOptions(threads=1))
    runner.close()
    assert note == "onnxruntime (CPU) on g.onnx - no engine runtime usable here"


@needs_rtx
def test_auto_without_plans_on_a_gpu_says_how_to_build_one(monkeypatch, tmp_path):
    machine(monkeypatch)
    b = _bundle(tmp_path)
    runner, note = bundle_runner(b, "auto", OrtRunOptions(threads=1))
    runner.close()
    assert note == f"onnxruntime (CPU) on g.onnx - no engine built yet (deploy-kit build {b.path} builds one here)"


# --------------------------------------------------------------------------- export: the engine parity row
@needs_rtx
def test_export_parity_row_of_a_plan_this_gpu_cannot_run_is_skipped_with_what_to_use(monkeypatch):
    """``pipeline.shipping._engine_parity`` with a stand-in job (only its precision is read before the decision)."""
    from deploy_kit.pipeline.shipping import _engine_parity

    job = types.SimpleNamespace(req=types.SimpleNamespace(precision="fp16"))
    machine(monkeypatch, gpu=H100)
    check = _engine_parity(job, None, RTX, "x.fp16.rtx1.plan", _sidecar(compute_capabilities=["sm86", "sm89", "sm120"]))
    assert check.status == "skipped" and check.reason.startswith("GPU sm90 is not a TensorRT-RTX target")
    assert check.reason.endswith("build with --backend tensorrt")
    machine(monkeypatch, gpu=RTX2080)
    check = _engine_parity(job, None, RTX, "x.fp16.rtx1.plan", _sidecar(compute_capabilities=["sm86", "sm89", "sm120"]))
    assert check.status == "skipped" and check.reason.endswith(
        "rebuild it with deploy-kit build g.onnx --backend tensorrt-rtx --compute-capability sm75")
    machine(monkeypatch, gpu=None)
    check = _engine_parity(job, None, RTX, "out/x.fp16.rtx1.plan", _sidecar())
    assert check.status == "skipped"
    assert check.reason == "no CUDA device present; check it on a GPU it was built for: deploy-kit verify x.fp16.rtx1.plan"
    assert isinstance(check, compare.Check)
