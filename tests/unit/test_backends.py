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
PACKAGE_NAME_USES = {("_deps.py", "tensorrt"), ("_deps.py", "onnxruntime"), ("runners/ort.py", "onnxruntime")}


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
    assert len(declared) == len(set(declared)) == 3


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
    assert backends.names(engines=False) == (backends.ONNXRUNTIME,)
    with pytest.raises(UsageError, match="unknown backend 'openvino'"):
        backends.get("openvino")


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

    with backends.get(backends.ONNXRUNTIME).open_runner(path, device="cpu") as runner:
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
