"""The backend registry: one place declares each backend; what it says about this machine."""

import ast
import os

import pytest

import deploy_kit
from deploy_kit import backends
from deploy_kit.errors import UsageError

PKG = os.path.dirname(deploy_kit.__file__)
# Python package names that equal a backend name: the optional-dependency table (_deps.py) and the
# ONNX Runtime session factory import the package by that name, which is not a backend name's use.
PACKAGE_NAME_USES = {("_deps.py", "tensorrt"), ("_deps.py", "onnxruntime"), ("runners/ort.py", "onnxruntime"),
                     ("_deps.py", "openvino"), ("runners/openvino.py", "openvino")}


def _string_constants(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    return [(n.value, n.lineno) for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def test_a_backend_name_is_declared_only_in_the_registry():
    names = set(backends.names())
    found = []
    for root, _, files in os.walk(PKG):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, PKG).replace(os.sep, "/")
            if rel.startswith("backends/"):
                continue
            for value, line in _string_constants(path):
                if value in names and (rel, value) not in PACKAGE_NAME_USES:
                    found.append(f"{rel}:{line}: {value!r}")
    assert not found, "backend names spelled outside deploy_kit/backends/: " + "; ".join(found)
    declared = [b.name for b in backends.REGISTRY.values()]
    assert len(declared) == len(set(declared)) == 4


def test_each_backend_module_declares_its_own_name():
    for b in backends.REGISTRY.values():
        cls = type(b)
        assert "name" in vars(cls) and cls.__module__ == f"deploy_kit.backends.{cls.__module__.rsplit('.', 1)[1]}"
        module = os.path.join(PKG, "backends", cls.__module__.rsplit(".", 1)[1] + ".py")
        tree = ast.parse(open(module, encoding="utf-8").read())
        body = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__).body
        assigns = [n for n in body if isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "name" for t in n.targets)]
        assert [a.value.value for a in assigns] == [b.name], module


def test_status_on_this_machine_is_explained():
    status = backends.status()
    assert set(status) == set(backends.names())
    for name, (ok, why) in status.items():
        assert ok or why, f"{name} cannot run but says nothing about why"
    assert status[backends.ONNXRUNTIME][0]  # the test extra installs onnxruntime


def test_choices_and_engine_split():
    assert backends.choices()[0] == backends.AUTO
    assert set(backends.names(engines=True)) == {backends.TENSORRT, backends.TENSORRT_RTX}
    assert backends.names(engines=False) == (backends.ONNXRUNTIME, backends.OPENVINO)
    with pytest.raises(UsageError, match="unknown backend 'tflite'"):
        backends.get("tflite")


@pytest.mark.skipif(not backends.get(backends.TENSORRT_RTX).installed(), reason="tensorrt-rtx not installed")
def test_rtx_builds_here_without_a_gpu_and_is_the_export_default():
    rtx = backends.get(backends.TENSORRT_RTX)
    assert rtx.can_build() == (True, "")
    assert backends.default_builder() is rtx


def test_onnxruntime_opens_a_named_runner(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 2, 2])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 1, 2, 2])
    graph = helper.make_graph([helper.make_node("Neg", ["input"], ["output"])], "g", [x], [y])
    path = str(tmp_path / "neg.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    import numpy as np

    with backends.get(backends.ONNXRUNTIME).open_runner(path, backends.OrtRunOptions(device="cpu")) as runner:
        assert runner.name == backends.ONNXRUNTIME
        out = runner.submit(np.ones((1, 1, 2, 2), np.float32)).wait()[0]
    assert np.array_equal(out, -np.ones((1, 1, 2, 2), np.float32))


def test_every_backend_answers_for_an_artifact_as_env_asks():
    """``can_run_artifact(manifest=None)`` (any artifact: the same as ``can_run``) on every backend, and
    ``cuda_major()`` on the engine ones: the calls ``deploy-kit env`` makes, on this machine."""
    import inspect

    for b in backends.REGISTRY.values():
        params = inspect.signature(b.can_run_artifact).parameters
        assert list(params) == ["manifest"] and params["manifest"].default is None
        assert b.can_run_artifact() == b.can_run()
        if b.engine:
            major = b.cuda_major()
            assert major is None or (isinstance(major, int) and major >= 11), (b.name, major)


def test_each_backend_makes_its_own_typed_options_and_refuses_other_flags_in_one_line():
    """What the CLI hands a backend (its flags' values, None or () when left out) becomes that backend's
    frozen options; a flag it does not take, or a bad value, is one line naming the flag."""
    import dataclasses

    rtx, trt, ort = (backends.get(n) for n in (backends.TENSORRT_RTX, backends.TENSORRT, backends.ONNXRUNTIME))
    assert rtx.build_options(compute_capability=("sm86",), timing_cache=None) == backends.RTXBuildOptions(("sm86",))
    assert rtx.build_options(compute_capability=()) == backends.RTXBuildOptions()
    opts = trt.build_options(timing_cache="t.cache", dla_core=0, compute_capability=())
    assert opts == backends.TensorRTBuildOptions(timing_cache="t.cache", dla_core=0)
    assert ort.run_options(threads=2) == backends.OrtRunOptions(threads=2, device="auto")
    assert rtx.run_options(slots=3) == trt.run_options(slots=3) == backends.EngineRunOptions(slots=3)
    refusals = [
        (lambda: rtx.build_options(timing_cache="t.cache"),
         "--timing-cache does not apply to the tensorrt-rtx backend; drop it (TensorRT-RTX keeps the kernels"),
        (lambda: trt.build_options(compute_capability=("sm86",)),
         "--compute-capability does not apply to the tensorrt backend; drop it (a TensorRT plan is built for"),
        (lambda: trt.build_options(dla_core=-1), "--dla-core must be 0 or 1; got -1"),
        (lambda: ort.build_options(), "onnxruntime runs graphs; it builds no engine"),
        (lambda: ort.run_options(slots=2), "--slots does not apply to the onnxruntime backend; drop it"),
        (lambda: rtx.run_options(threads=2), "--threads does not apply to the tensorrt-rtx backend; drop it"),
        (lambda: backends.OrtRunOptions(device="tpu"), "unknown ONNX Runtime device 'tpu'; choose one of: auto, cpu, cuda"),
        (lambda: backends.EngineRunOptions(slots=0), "slots must be at least 1; got 0"),
    ]
    for make, message in refusals:
        with pytest.raises(UsageError) as err:
            make()
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.timing_cache = "other.cache"
    # any iterable of targets in, a tuple out: hashable, and nothing the caller keeps can change it
    asked = ["sm86"]
    made = backends.RTXBuildOptions(asked)
    asked.append("sm89")
    assert made.compute_capabilities == ("sm86",) and hash(made) == hash(backends.RTXBuildOptions(("sm86",)))


def test_another_backends_options_are_refused_before_any_work(tmp_path):
    rtx, ort = backends.get(backends.TENSORRT_RTX), backends.get(backends.ONNXRUNTIME)
    with pytest.raises(UsageError, match=r"^TensorRTBuildOptions are not build options of tensorrt-rtx \(it takes "
                                         r"RTXBuildOptions\)"):
        rtx.build(str(tmp_path / "missing.onnx"), str(tmp_path / "x.plan"), backends.TensorRTBuildOptions())
    assert not list(tmp_path.iterdir())
    with pytest.raises(UsageError, match=r"^EngineRunOptions are not run options of onnxruntime"):
        ort.open_runner(str(tmp_path / "missing.onnx"), backends.EngineRunOptions())
    assert rtx.check_build_options(None) == backends.RTXBuildOptions()


def test_run_options_for_a_backend_auto_chooses():
    """``auto`` opens whichever backend runs here: the caller passes the options of each it may get, and
    the one that runs takes its own type (its defaults when none is given)."""
    rtx, ort = backends.get(backends.TENSORRT_RTX), backends.get(backends.ONNXRUNTIME)
    mine, engines = backends.OrtRunOptions(threads=1), backends.EngineRunOptions(slots=4)
    assert backends.as_run_options(None) == () and backends.as_run_options(mine) == (mine,)
    assert ort.pick_run_options([mine, engines]) is mine and rtx.pick_run_options((mine, engines)) is engines
    assert rtx.pick_run_options(mine) == backends.EngineRunOptions() and ort.pick_run_options(None) == backends.OrtRunOptions()
    with pytest.raises(UsageError, match=r"^run options must be a backend's RunOptions .*; got dict$"):
        backends.as_run_options([{"threads": 1}])
    with pytest.raises(UsageError, match=r"^two OrtRunOptions given; give one$"):
        ort.pick_run_options([mine, backends.OrtRunOptions(threads=2)])


def test_openvino_options_and_precision_choice():
    """OpenVINO's typed options, and deploy-kit's own precision choice given what a CPU offers. The
    ``offered`` tuples are stand-ins for the CPU capability query: they test deploy-kit's rule (``auto`` is
    the fastest offered; a named one must be offered), not OpenVINO."""
    from deploy_kit.runners.openvino import resolve_precision

    ov = backends.get(backends.OPENVINO)
    assert ov.run_options(precision="fp32", threads=2) == backends.OpenVINORunOptions("fp32", 2, None)
    assert ov.run_options() == backends.OpenVINORunOptions()
    assert ov.pick_run_options([backends.OrtRunOptions(threads=1)]) == backends.OpenVINORunOptions()
    for make, message in ((lambda: ov.run_options(slots=2), "--slots does not apply to the openvino backend; drop it"),
                          (lambda: backends.OpenVINORunOptions(precision="int4"), "unknown OpenVINO precision 'int4'"),
                          (lambda: backends.OpenVINORunOptions(threads=-1), "threads must be 0 (OpenVINO's default)"),
                          (lambda: ov.build_options(), "openvino runs graphs; it builds no engine"),
                          (lambda: resolve_precision("bf16", ("fp32",)),
                           "OpenVINO BF16 needs a CPU with AMX or AVX-512-BF16"),
                          (lambda: resolve_precision("fp16", ("bf16", "fp32")), "OpenVINO FP16 needs a CPU with FP16")):
        with pytest.raises(UsageError) as err:
            make()
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)
    assert resolve_precision("auto", ("bf16", "fp32")) == "bf16"      # a Xeon with AMX (stand-in)
    assert resolve_precision("auto", ("fp16", "fp32")) == "fp16"      # an ARMv8.2 CPU (stand-in)
    assert resolve_precision("auto", ("fp32",)) == "fp32"
    assert resolve_precision("fp32", ("bf16", "fp32")) == "fp32"


@pytest.mark.skipif(not backends.get(backends.OPENVINO).installed(), reason="openvino not installed")
def test_openvino_says_what_this_cpu_runs_and_whether_auto_prefers_it(monkeypatch):
    """The real query on this CPU, then deploy-kit's rule on stand-in architectures (a stand-in for
    OpenVINO's CPU query: it tests which architectures ``auto`` prefers OpenVINO on, not OpenVINO)."""
    from deploy_kit.runners import openvino as ovr

    ov = backends.get(backends.OPENVINO)
    ok, why = ov.can_run()
    offered = ov.precisions()
    assert ok and offered[-1] == "fp32" and set(offered) <= {"bf16", "fp16", "fp32"}
    assert ": " + ", ".join(p.upper() for p in offered) in why
    real = ovr.cpu_facts()
    for arch, preferred in (("intel64", True), ("arm64", False), ("riscv64", False)):
        monkeypatch.setattr(ovr, "cpu_facts", lambda arch=arch: (arch, real[1], "stand-in CPU"))
        monkeypatch.setattr("deploy_kit.backends.openvino.cpu_facts", ovr.cpu_facts)
        got, why = ov.preferred_on_cpu()
        assert got is preferred and why and "\n" not in why, (arch, why)
        got, why = ov.preferred_on_cpu("int8")  # Q/DQ graphs stay on ONNX Runtime everywhere
        assert not got and why.startswith("auto keeps INT8 (Q/DQ) graphs on ONNX Runtime"), why


def test_a_row_is_gated_at_the_lossier_precision():
    from deploy_kit.compare import run_precision

    assert run_precision("fp32", "bf16") == "bf16" and run_precision("fp16", "fp32") == "fp16"
    assert run_precision("fp16", "bf16") == "bf16" and run_precision("int8", "bf16") == "int8"
    assert run_precision("fp32", None) == "fp32"
    with pytest.raises(ValueError):
        run_precision("fp8", None)
