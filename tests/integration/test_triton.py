"""``deploy-kit triton``: the repository's configs (from the manifest and the graph), bad inputs, and a
real tritonserver serving it.

The server is the ``tritonserver`` binary that the ``nvidia-pytriton`` wheel ships, with its python
backend (it has no TensorRT or ONNX Runtime backend). It runs on 127.0.0.1 with ``--disable-auto-
complete-config`` (strict configs), in explicit model-control mode:

* ``naf_tiled`` (in-process ONNX Runtime tiles) and ``bls_tiled`` (tiles sent by BLS to the
  fixed-size ``bls_onnx``) are loaded and served; ``bls_onnx`` is the generated ONNX twin with its
  ``platform`` line swapped for a python stand-in running the same graph on ONNX Runtime, since this
  server has no onnxruntime backend: Triton still checks every BLS request against the generated
  twin's I/O (names, dtypes, dims).
* ``sync_tiled`` (a global-context bundle's tiled model in context ``sync:3``) is loaded and served too:
  its tiles run through the sync graph in the python backend, with no other model loaded.
* ``naf`` (tensorrt_plan) and ``naf_onnx`` (onnxruntime_onnx) cannot run here; loading them must get
  past the server's own config parsing and validation and fail only on the missing backend library.

Where the server cannot start (no pytriton wheel from the index, an unsupported platform) the server
tests skip with the reason. pytriton 0.7's python backend stub is built for numpy < 2 (outputs come
back empty under numpy 2), so the stub gets its own small venv: this environment's packages plus a
numpy 1.26 wheel when this environment has numpy 2. Downloads are cached in ~/.cache/deploy-kit-tests
(or $DEPLOY_KIT_TEST_CACHE).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import venv
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from deploy_kit.manifest import plan_manifest, read_manifest, write_manifest

PYTRITON = "nvidia-pytriton==0.7.0"
CACHE = Path(os.environ.get("DEPLOY_KIT_TEST_CACHE") or Path.home() / ".cache" / "deploy-kit-tests")
CLIENTS, REQUESTS = 8, 50  # the bounded load: 8 concurrent clients x 50 requests each
LOAD_DEADLINE_S = 240
TRT_VERSION = "10.13.0.35"  # what the hand-made sidecar below claims (no TensorRT build is possible here)


# ---------------------------------------------------------------------------------------------
# bundles and repositories
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A tiny NAFNet (TLC) FP16 bundle made by export --bundle, as in test_bundle.py."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("triton-bundle")
    r = run_cli("export", "nafnet", "--variant", "tiny", "--height", 64, "--width", 64, "--train-size", 32,
                "--degradation", "noise:10", "--fp16", "--bundle", "--backend", "none", "--samples", 2, "--out", out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out / "nafnet-tiny-64x64-tlc.fp16.bundle"


@pytest.fixture(scope="module")
def sync_bundle(tmp_path_factory):
    """A tiny NAFNet without TLC (global context) FP32 bundle: it carries a sync graph."""
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("triton-sync-bundle")
    r = run_cli("export", "nafnet", "--variant", "tiny-notlc", "--height", 64, "--width", 64, "--backend", "none",
                "--bundle", "--out", out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return out / "nafnet-tiny-notlc-64x64.fp32.bundle"


def _with_trt_plan(bundle: Path, dst: Path) -> tuple[Path, Path]:
    """A copy of ``bundle`` holding a 'TensorRT' plan and its sidecar, as 'deploy-kit build --backend
    tensorrt' writes them (TensorRT builds need a GPU). The plan's bytes are a placeholder: deploy-kit
    only copies them, and no server here has the TensorRT backend that would read them."""
    from deploy_kit.bundle import open_bundle

    b = shutil.copytree(bundle, dst)
    m = open_bundle(str(b)).manifest
    plan = b / (m["onnx"][: -len(".onnx")] + ".trt10.plan")
    plan.write_bytes(b"placeholder: not a TensorRT engine")
    side = plan_manifest(m, m["precision"], str(b / m["onnx"]), str(plan), SimpleNamespace(name="tensorrt"),
                         SimpleNamespace(version=TRT_VERSION, details={}, seconds=1.0))
    write_manifest(str(plan) + ".json", side)
    return b, plan


def _config(path: Path) -> str:
    return (path / "config.pbtxt").read_text()


def _io(text: str, kind: str) -> list[tuple[str, str, list[int]]]:
    """(name, data_type, dims) of the input/output entries of a config.pbtxt we wrote."""
    block = text.split(f"\n{kind} [\n", 1)[1].split("\n]\n", 1)[0]
    out = []
    for entry in block.split("  {")[1:]:
        fields = dict(line.strip().split(": ", 1) for line in entry.splitlines() if ": " in line)
        out.append((json.loads(fields["name"]), fields["data_type"], [int(d) for d in fields["dims"].strip("[] ").split(", ")]))
    return out


def _params(text: str) -> dict[str, str]:
    out = {}
    for block in text.split("parameters {")[1:]:
        key = json.loads(block.split("key: ", 1)[1].splitlines()[0])
        out[key] = json.loads(block.split("string_value: ", 1)[1].rsplit(" }", 1)[0])
    return out


# ---------------------------------------------------------------------------------------------
# configs, without a server
# ---------------------------------------------------------------------------------------------
def test_bundle_records_the_graph_io(bundle, tmp_path):
    """The manifest's graph_io is what onnx reads from the graph; an FP16-I/O graph with a dynamic dim too."""
    import onnx
    from onnx import TensorProto, helper

    from deploy_kit.bundle import open_bundle
    from deploy_kit.onnxmeta import graph_io

    def expected(path):
        g = onnx.load(str(path), load_external_data=False).graph
        inits = {i.name for i in g.initializer}
        return [[(v.name, helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                  [d.dim_value if d.HasField("dim_value") else d.dim_param for d in v.type.tensor_type.shape.dim])
                 for v in vs if v.name not in inits] for vs in (g.input, g.output)]

    def got(section):
        return [[(t["name"], t["dtype"], t["dims"]) for t in section[k]] for k in ("inputs", "outputs")]

    b = open_bundle(str(bundle))
    assert got(b.manifest["graph_io"]) == expected(b.onnx) == [[("input", "float32", [1, 3, 64, 64])],
                                                              [("output", "float32", [1, 3, 64, 64])]]
    assert b.typed.graph_inputs[0].dims == (1, 3, 64, 64) and b.typed.graph_outputs[0].dtype == "float32"
    half = helper.make_model(helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["n", 3, 8, 8]),
         helper.make_tensor_value_info("w", TensorProto.FLOAT16, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["n", 3, 8, 8])],
        [helper.make_tensor("w", TensorProto.FLOAT16, [1], [1.0])]))
    onnx.save(half, str(tmp_path / "half.onnx"))
    assert got(graph_io(str(tmp_path / "half.onnx"))) == expected(tmp_path / "half.onnx") == [
        [("x", "float16", ["n", 3, 8, 8])], [("y", "float16", ["n", 3, 8, 8])]]


def test_bundle_from_before_graph_io(bundle, tmp_path, monkeypatch):
    """A manifest without graph_io: read with onnx where installed (the same configs), else one line that says what to do."""
    from deploy_kit.errors import UsageError
    from deploy_kit.serving.triton import write_repository

    old = shutil.copytree(bundle, tmp_path / "old" / bundle.name)
    m = read_manifest(str(old / "manifest.json"))
    del m["graph_io"]  # manifest.json is not among its own files: the bundle stays valid
    write_manifest(str(old / "manifest.json"), m)
    write_repository(str(bundle), str(tmp_path / "new-repo"), name="n")
    write_repository(str(old), str(tmp_path / "old-repo"), name="n")
    for model in ("n_onnx", "n_tiled"):
        assert _config(tmp_path / "old-repo" / model) == _config(tmp_path / "new-repo" / model)
    monkeypatch.setitem(sys.modules, "onnx", None)  # no onnx here, as on a device
    with pytest.raises(UsageError, match=r"predates the graph I/O record .* re-bundle it .* or install onnx"):
        write_repository(str(old), str(tmp_path / "repo"))
    assert not (tmp_path / "repo").exists()


def test_configs_come_from_the_manifest_and_the_graph(cli, bundle, tmp_path):
    b, plan = _with_trt_plan(bundle, tmp_path / "b")
    repo = tmp_path / "repo"
    r = cli("triton", plan, "--repo", repo, "--name", "naf", "--instances", 3, "--threads", 2)  # a PLAN finds its bundle
    assert r.returncode == 0, r.stdout + r.stderr
    assert {p.name for p in repo.iterdir()} == {"naf", "naf_onnx", "naf_tiled"}
    m = read_manifest(str(b / "manifest.json"))
    ins, outs = m["graph_io"]["inputs"], m["graph_io"]["outputs"]
    fixed_in = [(t["name"], "TYPE_FP32", list(m["input_shape"])) for t in ins]
    assert [t["name"] for t in ins] == m["input_names"] and [t["name"] for t in outs] == m["output_names"]
    for model, platform, kind in (("naf", "tensorrt_plan", "KIND_GPU"), ("naf_onnx", "onnxruntime_onnx", "KIND_CPU")):
        text = _config(repo / model)
        assert f'name: "{model}"' in text and f'platform: "{platform}"' in text and "max_batch_size: 0" in text
        assert _io(text, "input") == fixed_in  # FP16 graph, FP32 I/O: the graph's types, not the precision's
        assert _io(text, "output") == [(t["name"], "TYPE_FP32", t["dims"]) for t in outs]
        assert f"kind: {kind}\n    count: 3" in text
    assert (repo / "naf" / "1" / "model.plan").read_bytes() == plan.read_bytes()
    assert (repo / "naf_onnx" / "1" / "model.onnx").read_bytes() == (b / m["onnx"]).read_bytes()
    assert f"TensorRT {TRT_VERSION}" in _config(repo / "naf")
    assert read_manifest(str(repo / "naf" / "deploy-kit.json"))["backend"]["name"] == "tensorrt"
    assert _params(_config(repo / "naf_onnx")) == {"intra_op_thread_count": "2"} and not _params(_config(repo / "naf"))

    tiled = _config(repo / "naf_tiled")
    assert 'backend: "python"' in tiled and "kind: KIND_CPU\n    count: 3" in tiled
    assert _io(tiled, "input") == [("input", "TYPE_FP32", [-1, 3, -1, -1])]
    assert _io(tiled, "output") == [("output", "TYPE_FP32", [-1, 3, -1, -1])]
    p = _params(tiled)
    assert p["tiles_through"] == "bls" and p["tile_model"] == "naf"  # auto: the plan, inside the server
    assert (p["tile_height"], p["tile_width"], p["channels"]) == ("64", "64", "3")
    assert (p["overlap"], p["multiple"]) == ("16", "16")  # deploy-kit run's choice for a 64x64 engine, pad multiple 16
    assert (p["tile_input"], p["tile_output"], p["tile_input_dtype"]) == ("input", "output", "float32")
    assert p["scale"] == "1"  # restoration: the output is the input's size
    assert "deploy_kit.serving.triton_model import TritonPythonModel" in (repo / "naf_tiled" / "1" / "model.py").read_text()
    assert not (repo / "naf_tiled" / "1" / "model.onnx").exists()  # BLS: the graph lives in naf / naf_onnx only


def test_bundle_without_a_tensorrt_plan_and_the_in_process_mode(cli, bundle, tmp_path):
    """A bundle holding only a TensorRT-RTX plan: no tensorrt_plan model (Triton cannot load RTX engines), said so."""
    b = shutil.copytree(bundle, tmp_path / "b")
    m = read_manifest(str(b / "manifest.json"))
    rtx = b / (m["onnx"][: -len(".onnx")] + ".rtx1.plan")
    rtx.write_bytes(b"placeholder")
    write_manifest(str(rtx) + ".json", plan_manifest(m, m["precision"], str(b / m["onnx"]), str(rtx),
                                                     SimpleNamespace(name="tensorrt-rtx"),
                                                     SimpleNamespace(version="1.7.1", details={}, seconds=1.0)))
    repo = tmp_path / "repo"
    (repo / "other_model").mkdir(parents=True)  # someone else's model: left alone
    r = cli("triton", b, "--repo", repo, "--tiles-through", "in-process", "--overlap", "8")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tensorrt-rtx engine, which Triton's TensorRT backend cannot load" in r.stderr
    assert "no TensorRT plan in the bundle" in r.stderr
    name = "nafnet-tiny-64x64-tlc-fp16"
    assert {p.name for p in repo.iterdir()} == {"other_model", f"{name}_onnx", f"{name}_tiled"}
    p = _params(_config(repo / f"{name}_tiled"))
    assert p["tiles_through"] == "in-process" and p["onnx"] == "model.onnx" and p["overlap"] == "8"
    assert p["intra_op_threads"] == "0" and not _params(_config(repo / f"{name}_onnx"))  # ONNX Runtime's default
    assert "tile_model" not in p
    assert (repo / f"{name}_tiled" / "1" / "model.onnx").read_bytes() == (b / m["onnx"]).read_bytes()
    # again: deploy-kit's own models are replaced, the other one is kept
    r = cli("triton", b, "--repo", repo)  # auto without a TensorRT plan: the ONNX twin
    assert r.returncode == 0, r.stderr
    assert _params(_config(repo / f"{name}_tiled"))["tile_model"] == f"{name}_onnx"
    assert (repo / "other_model").is_dir() and not list(tmp_path.glob(".repo.*"))


def test_bad_inputs_are_one_line_and_write_nothing(cli, bundle, tmp_path):
    b, plan = _with_trt_plan(bundle, tmp_path / "b")
    rtx = b / "x.rtx1.plan"
    rtx.write_bytes(b"placeholder")
    side = read_manifest(str(plan) + ".json")
    side["backend"] = {"name": "tensorrt-rtx", "version": "1.7.1"}
    write_manifest(str(rtx) + ".json", side)
    loose = tmp_path / "loose.plan"  # a plan outside any bundle
    shutil.copyfile(plan, loose)
    shutil.copyfile(str(plan) + ".json", str(loose) + ".json")
    tampered = shutil.copytree(bundle, tmp_path / "tampered")
    onnx_file = next(tampered.glob("*.onnx"))
    onnx_file.write_bytes(onnx_file.read_bytes()[:-10])
    taken = tmp_path / "taken"
    (taken / "naf_onnx").mkdir(parents=True)
    (taken / "naf_onnx" / "config.pbtxt").write_text("# someone else's\n")
    repo = tmp_path / "repo"
    cases = [
        ((tmp_path / "missing",), "not found"),
        ((tmp_path,), "triton takes a bundle folder or a .plan"),
        ((rtx,), "is a tensorrt-rtx engine"),
        ((loose,), "is not inside a deploy-kit bundle"),
        ((tampered,), "does not match its sha256"),
        ((b, "--name", "bad name/.."), "is not a model name"),
        ((b, "--instances", "0"), "--instances must be between 1 and 64"),
        ((b, "--threads", "-1"), "--threads must be between 0"),
        ((b, "--overlap", "40"), "--overlap must be between 0 and 31"),
        ((bundle, "--tiles-through", "plan"), "--tiles-through plan needs a TensorRT plan"),
        ((b, "--context", "global"), "--context must be 'tile', 'sync' or 'sync:N'"),
        ((b, "--context", "sync:0"), "--context must be 'tile', 'sync' or 'sync:N'"),
        ((b, "--context", "sync"), "--context sync needs a bundle with a sync graph"),  # a TLC bundle has none
    ]
    for args, expect in cases:
        r = cli("triton", *args, "--repo", repo)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and expect in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert not repo.exists(), args
    r = cli("triton", b, "--repo", taken, "--name", "naf")
    assert r.returncode == 2 and "was not written by deploy-kit" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in taken.iterdir()) == ["naf_onnx"]  # nothing else appeared
    assert (taken / "naf_onnx" / "config.pbtxt").read_text() == "# someone else's\n"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def _sr_bundle(tmp_path: Path, scale: int, recorded: int | None = None, tile: int = 32) -> Path:
    """A bundle of a tiny x``scale`` super-resolution graph (3x3 conv to 3*s*s channels, DepthToSpace), its
    manifest saying scale ``recorded`` (default: the graph's), made without torch or an export."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from deploy_kit import __version__
    from deploy_kit.bundle_writer import write_bundle
    from deploy_kit.manifest import input_conventions
    from deploy_kit.runners.ort import OrtRunner

    rng = np.random.default_rng(scale)
    w = (rng.random((3 * scale * scale, 3, 3, 3)) / 27).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["f"], pads=[1, 1, 1, 1]),
         helper.make_node("DepthToSpace", ["f"], ["output"], blocksize=scale, mode="CRD")], "sr",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, tile, tile])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, scale * tile, scale * tile])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {"deploy_kit_version": __version__, "model": "srnet", "variant": f"x{scale}", "input_shape": [1, 3, tile, tile],
            "precision": "fp32", "input_names": ["input"], "output_names": ["output"], "output_kind": "image",
            "input": input_conventions(3, 1), "scale": scale if recorded is None else recorded}
    onnx.helper.set_model_props(model, {k: json.dumps(v) for k, v in meta.items()})
    path = tmp_path / f"srnet-x{scale}.fp32.onnx"
    onnx.save(model, str(path))
    x = rng.random((1, 3, tile, tile)).astype(np.float32)
    with OrtRunner(str(path)) as r:
        y = r.run(x)
    write_bundle(str(path), [x], [y], str(tmp_path / f"srnet-x{scale}.bundle"))
    return tmp_path / f"srnet-x{scale}.bundle"


class _FakePbUtils:
    """The few names of triton_python_backend_utils the tiled model's initialize uses (no server here)."""

    class Logger:
        @staticmethod
        def log_warn(message):
            raise AssertionError(f"unexpected warning: {message}")


def _tiled_model(repo: Path, name: str, monkeypatch):
    """The tiled model of ``repo/name`` initialised as Triton's python backend would (config as JSON)."""
    from deploy_kit.serving.triton_model import TritonPythonModel

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _FakePbUtils)
    text = _config(repo / name)
    config = {"input": [{"name": _io(text, "input")[0][0]}], "output": [{"name": _io(text, "output")[0][0]}],
              "parameters": {k: {"string_value": v} for k, v in _params(text).items()}}
    model = TritonPythonModel()
    model.initialize({"model_config": json.dumps(config), "model_repository": str(repo / name), "model_version": "1",
                      "model_name": name})
    return model


@pytest.mark.parametrize("scale", [2, 3])
def test_super_resolution_bundle_serves_s_times_the_image(tmp_path, monkeypatch, scale):
    """A x``scale`` graph: the fixed-size configs carry its dims, the tiled model records the scale and returns
    images ``scale`` times larger, equal to the runtime's own tiling of them."""
    pytest.importorskip("onnx")
    from deploy_kit.manifest import read_typed
    from deploy_kit.runners.ort import OrtRunner
    from deploy_kit.runtime.tiling import tile_run, tiling_defaults
    from deploy_kit.serving.triton import write_repository

    b = _sr_bundle(tmp_path, scale)
    repo = tmp_path / "repo"
    write_repository(str(b), str(repo), name="sr", tiles_through="in-process")
    assert _io(_config(repo / "sr_onnx"), "output") == [("output", "TYPE_FP32", [1, 3, 32 * scale, 32 * scale])]
    tiled = _config(repo / "sr_tiled")
    assert _io(tiled, "input") == [("input", "TYPE_FP32", [-1, 3, -1, -1])]
    assert _io(tiled, "output") == [("output", "TYPE_FP32", [-1, 3, -1, -1])]
    assert _params(tiled)["scale"] == str(scale) and f"Super-resolution x{scale}" in tiled
    assert read_manifest(str(repo / "sr_tiled" / "deploy-kit.json"))["scale"] == scale
    model = _tiled_model(repo, "sr_tiled", monkeypatch)
    x = np.random.default_rng(0).random((2, 3, 45, 70)).astype(np.float32)
    out = model.restore(x)
    assert out.shape == (2, 3, 45 * scale, 70 * scale)
    overlap, multiple = tiling_defaults(read_typed(str(b / "manifest.json")), None)
    with OrtRunner(str(b / f"srnet-x{scale}.fp32.onnx")) as r:
        expect = tile_run(x[1], lambda t: r.run(t)[0], (32, 32), overlap, multiple, scale=scale)
    np.testing.assert_allclose(out[1], expect, rtol=0, atol=1e-6)
    model.finalize()


def test_a_bundle_whose_scale_is_not_its_graphs_is_refused(tmp_path):
    pytest.importorskip("onnx")
    from deploy_kit.manifest import ManifestError
    from deploy_kit.serving.triton import write_repository

    b = _sr_bundle(tmp_path, 2, recorded=3)
    with pytest.raises(ManifestError, match=r"the graph outputs \[1, 3, 64, 64\] for \[1, 3, 32, 32\] inputs, not 3 x"):
        write_repository(str(b), str(tmp_path / "repo"))
    assert not (tmp_path / "repo").exists()


def test_a_sync_graph_goes_into_the_tiled_model(cli, bundle, sync_bundle, tmp_path):
    """A bundle with a sync graph: the graph is copied into NAME_tiled in either context mode, its config records
    the mode, the graph's file and its statistics length; a bundle without one records ``tile`` only."""
    from deploy_kit.manifest import read_typed
    from deploy_kit.serving.triton import write_repository

    m = read_typed(str(sync_bundle / "manifest.json"))
    assert m.global_context and m.sync_onnx and m.sync_stats > 0
    repo = tmp_path / "repo"
    info = write_repository(str(sync_bundle), str(repo), name="g")
    p = _params(_config(repo / "g_tiled"))
    assert p["context"] == "tile" and p["sync_onnx"] == m.sync_onnx and p["sync_stats"] == str(m.sync_stats)
    assert (repo / "g_tiled" / "1" / m.sync_onnx).read_bytes() == (sync_bundle / m.sync_onnx).read_bytes()
    assert p["tiles_through"] == "bls" and p["tile_model"] == "g_onnx"
    assert any("--context sync makes the tiles match the full image" in n for n in info.notes), info.notes
    assert not (repo / "g_onnx" / "1" / m.sync_onnx).exists()  # only the tiled model runs it

    r = cli("triton", sync_bundle, "--repo", repo, "--name", "g", "--context", "sync:3", "--threads", 1)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "tiles through the sync graph, sync:3" in r.stdout and "pools over its whole input" not in r.stderr
    text = _config(repo / "g_tiled")
    p = _params(text)
    assert (p["context"], p["sync_onnx"], p["sync_stats"]) == ("sync:3", m.sync_onnx, str(m.sync_stats))
    assert p["intra_op_threads"] == "1" and "Context sync:3: every tile sees the whole image's statistics" in text
    assert (repo / "g_tiled" / "1" / m.sync_onnx).read_bytes() == (sync_bundle / m.sync_onnx).read_bytes()
    assert read_manifest(str(repo / "g_tiled" / "deploy-kit.json"))["context"]["sync"]["onnx"] == m.sync_onnx

    write_repository(str(sync_bundle), str(repo), name="g", context="sync")  # the default number of passes
    assert _params(_config(repo / "g_tiled"))["context"] == "sync:2"
    write_repository(str(bundle), str(repo), name="t")  # TLC: no sync graph
    p = _params(_config(repo / "t_tiled"))
    assert p["context"] == "tile" and "sync_onnx" not in p and "sync_stats" not in p
    assert sorted(f.name for f in (repo / "t_tiled" / "1").iterdir()) == ["model.py"]


def test_the_sync_context_equals_the_restorers(sync_bundle, tmp_path, monkeypatch):
    """NAME_tiled in context sync:3 (BLS repository: the sync graph still runs in-process) gives what
    ``Restorer(bundle, "onnxruntime", context="sync:3")`` gives, on images larger than the 64x64 tile."""
    from deploy_kit.runtime.restorer import Restorer
    from deploy_kit.serving.triton import write_repository

    repo = tmp_path / "repo"
    write_repository(str(sync_bundle), str(repo), name="g", context="sync:3")
    model = _tiled_model(repo, "g_tiled", monkeypatch)
    assert (model.context, model.passes, model.runner) == ("sync", 3, None)
    x = np.random.default_rng(5).random((2, 3, 97, 150), dtype=np.float32)
    out = model.restore(x)
    model.finalize()
    assert out.shape == x.shape and out.dtype == np.float32
    with Restorer(str(sync_bundle), "onnxruntime", context="sync:3") as restorer:
        want = np.stack([restorer.restore(np.ascontiguousarray(image.transpose(1, 2, 0))) for image in x])
    got = np.clip(out, 0.0, 1.0).transpose(0, 2, 3, 1)  # the Restorer clips float frames to [0, 1]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)

    write_repository(str(sync_bundle), str(repo), name="g", tiles_through="in-process")  # context tile
    with pytest.raises(AssertionError, match=r"pools over its whole input.*set the parameter 'context' to 'sync'"):
        _tiled_model(repo, "g_tiled", monkeypatch)  # the warning names the way out


def test_serving_modules_import_nothing_heavy():
    code = ("import sys, deploy_kit.serving.triton, deploy_kit.serving.triton_model\n"
            "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt', 'click') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------
# the real server
# ---------------------------------------------------------------------------------------------
def _pip_download(spec: str, dest: Path, cached: str) -> Path:
    """The wheel of ``spec`` for this interpreter: ``dest``'s wheel matching the glob ``cached``, else
    downloaded into ``dest`` (skips with the reason when there is no package index)."""
    dest.mkdir(parents=True, exist_ok=True)
    have = sorted(dest.glob(cached))
    if have:
        return have[-1]
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--no-input", "--no-deps",
               "--only-binary=:all:", "-q", "-d", tmp, spec]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"tritonserver cannot be set up: `pip download {spec}` did not finish ({exc})")
        if proc.returncode != 0:
            why = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-2:])
            pytest.skip(f"tritonserver cannot be set up: `pip download {spec}` failed: {why}")
        wheel = next(Path(tmp).glob("*.whl"))
        os.replace(wheel, dest / wheel.name)
        return dest / wheel.name


def _unpacked(wheel: Path, where: Path, members: tuple[str, ...] = ()) -> Path:
    """``wheel`` extracted (once) into ``where``, keeping the executable bits; only ``members`` prefixes if given."""
    if where.is_dir():
        return where
    part = Path(tempfile.mkdtemp(dir=where.parent, prefix=where.name + "."))
    with zipfile.ZipFile(wheel) as z:
        for info in z.infolist():
            if members and not info.filename.startswith(members):
                continue
            path = Path(z.extract(info, part))
            mode = info.external_attr >> 16
            if mode & 0o111:
                path.chmod(path.stat().st_mode | 0o111)
    try:
        os.rename(part, where)
    except OSError:  # another run got there first
        shutil.rmtree(part, ignore_errors=True)
    return where


def _server_dist() -> tuple[Path, Path]:
    """(pytriton's tritonserver folder, the folder of its shared libraries)."""
    spec = importlib.util.find_spec("pytriton")
    if spec is not None and spec.origin:
        root = Path(spec.origin).parent
        return root / "tritonserver", root.parent / "nvidia_pytriton.libs"
    wheel = _pip_download(PYTRITON, CACHE / "wheels", "nvidia_pytriton-0.7.0-*.whl")
    root = _unpacked(wheel, CACHE / wheel.stem, ("pytriton/tritonserver/", "nvidia_pytriton.libs/"))
    return root / "pytriton" / "tritonserver", root / "nvidia_pytriton.libs"


def _stub_venv(where: Path) -> Path:
    """A venv for the python backend stub: this environment's packages (deploy-kit, onnxruntime), behind
    numpy 1.x when this environment has numpy 2 (pytriton 0.7's stub does not work with numpy 2)."""
    import deploy_kit

    venv.create(where, with_pip=False, symlinks=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(where), "platbase": str(where)}))
    paths = []
    if int(np.__version__.split(".")[0]) >= 2:
        tag = f"cp{sys.version_info[0]}{sys.version_info[1]}"
        wheel = _pip_download("numpy>=1.26,<2", CACHE / "wheels", f"numpy-1.*-{tag}-{tag}-*.whl")
        paths.append(str(_unpacked(wheel, CACHE / wheel.stem)))
    paths.append(str(Path(deploy_kit.__file__).resolve().parent.parent))
    paths += [p for p in sys.path if p and Path(p).is_dir() and "site-packages" in p]
    (site / "zz-test-environment.pth").write_text("\n".join(paths) + "\n")
    return where / "bin"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """tritonserver on 127.0.0.1 in its own process group; :meth:`stop` ends the group."""

    def __init__(self, repo: Path, work: Path):
        server, libs = _server_dist()
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
        binary = server / "bin" / "tritonserver"
        if not binary.is_file() or not stub.is_file():
            pytest.skip(f"pytriton has no tritonserver or no python backend stub for CPython {version}")
        backend = work / "backends" / "python"
        backend.mkdir(parents=True)
        for f in (server / "backends" / "python").iterdir():
            if f.is_file():
                shutil.copy(f, backend / f.name)
        shutil.copy(stub, backend / "triton_python_backend_stub")  # the stub of this Python's version
        env = dict(os.environ)
        env["PATH"] = f"{_stub_venv(work / 'stub-venv')}{os.pathsep}{env.get('PATH', '')}"  # the stub's python3
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        ld = [libdir] if Path(libdir, f"libpython{version}.so.1.0").exists() else []
        env["LD_LIBRARY_PATH"] = os.pathsep.join(ld + [str(libs)] + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
        if shutil.which("ldd"):  # e.g. a Python built without a shared libpython: the stub cannot start
            deps = subprocess.run(["ldd", str(backend / "triton_python_backend_stub")], capture_output=True, text=True,
                                  env=env, timeout=60).stdout
            missing = [line.split()[0] for line in deps.splitlines() if "not found" in line]
            if missing:
                pytest.skip(f"the python backend stub cannot load {', '.join(missing)} (needs a shared libpython{version})")
        self.port = _free_port()
        self.url = f"127.0.0.1:{self.port}"
        self.log = work / "tritonserver.log"
        cmd = [str(binary), f"--model-repository={repo}", f"--backend-directory={work / 'backends'}",
               "--model-control-mode=explicit", "--disable-auto-complete-config", "--allow-grpc=false",
               "--allow-metrics=false", "--http-address=127.0.0.1", f"--http-port={self.port}", "--exit-timeout-secs=5"]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work,
                                         start_new_session=True)
        import tritonclient.http as httpclient

        self.client = httpclient.InferenceServerClient(self.url, connection_timeout=10, network_timeout=120)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = " | ".join(self.tail(3).splitlines())
                self.stop()
                pytest.skip(f"tritonserver exited at start (exit {self.proc.returncode}): {tail}")
            try:
                if self.client.is_server_live():
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.3)
        self.stop()
        pytest.skip(f"tritonserver did not come up within 60 s: {self.tail(3)}")

    def tail(self, n: int = 20) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        try:  # the python backend stubs share the group; none may outlive the test
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


_STAND_IN = '''"""Test stand-in for Triton's onnxruntime backend (absent from pytriton's server): the same graph on ONNX Runtime."""
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from deploy_kit.runners.ort import OrtRunner


class TritonPythonModel:
    def initialize(self, args):
        self.runner = OrtRunner(os.path.join(args["model_repository"], args["model_version"], "model.onnx"))

    def execute(self, requests):
        out = []
        for r in requests:
            x = pb_utils.get_input_tensor_by_name(r, self.runner.input_name).as_numpy()
            y = self.runner.run(x)
            out.append(pb_utils.InferenceResponse([pb_utils.Tensor(n, np.ascontiguousarray(v))
                                                   for n, v in zip(self.runner.output_names, y)]))
        return out
'''


@pytest.fixture(scope="module")
def served(bundle, sync_bundle, tmp_path_factory):
    pytest.importorskip("tritonclient.http", reason="tritonclient is not installed (pip install 'deploy-kit[test]')")
    from deploy_kit.serving.triton import write_repository

    work = tmp_path_factory.mktemp("triton")
    repo = work / "repo"
    b, _ = _with_trt_plan(bundle, work / "b-trt")
    # two instances of one ONNX Runtime thread each: this machine's two cores, not oversubscribed
    write_repository(str(b), str(repo), name="naf", tiles_through="in-process", instances=2, threads=1)
    write_repository(str(b), str(repo), name="bls", tiles_through="onnx")
    write_repository(str(sync_bundle), str(repo), name="sync", context="sync:3", threads=1)
    twin = _config(repo / "bls_onnx")
    assert twin.count('platform: "onnxruntime_onnx"') == 1
    (repo / "bls_onnx" / "config.pbtxt").write_text(twin.replace('platform: "onnxruntime_onnx"', 'backend: "python"'))
    (repo / "bls_onnx" / "1" / "model.py").write_text(_STAND_IN)
    broken = shutil.copytree(repo / "naf", repo / "broken")  # negative control: one misspelt field
    (broken / "config.pbtxt").write_text(_config(broken).replace('name: "naf"', 'name: "broken"')
                                         .replace("max_batch_size", "max_batch_sise"))
    server = Server(repo, work)
    try:
        for model in ("naf_tiled", "bls_onnx", "bls_tiled", "sync_tiled"):
            server.client.load_model(model)  # a failure here is the repository's, not the machine's
        yield SimpleNamespace(server=server, client=server.client, repo=repo, bundle=bundle, work=work,
                              sync_bundle=sync_bundle)
    except Exception as exc:
        raise AssertionError(f"{exc}\n--- tritonserver log ---\n{server.tail(30)}") from exc
    finally:
        server.stop()


def _infer(client, model: str, x: np.ndarray) -> np.ndarray:
    import tritonclient.http as httpclient

    inp = httpclient.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(np.ascontiguousarray(x, dtype=np.float32), binary_data=True)
    out = client.infer(model, [inp], outputs=[httpclient.InferRequestedOutput("output", binary_data=True)])
    return out.as_numpy("output")


def _runtime_tiled(bundle: Path, image: np.ndarray) -> np.ndarray:
    """deploy-kit's own runtime on the same image: OrtRunner + tile_run, as 'deploy-kit run' tiles a 64x64 engine."""
    from deploy_kit.bundle import open_bundle
    from deploy_kit.runners.ort import OrtRunner
    from deploy_kit.runtime.tiling import tile_run
    from deploy_kit.runtime.tiling import tiling_defaults

    m = open_bundle(str(bundle)).typed
    overlap, multiple = tiling_defaults(m, None)
    with OrtRunner(str(next(bundle.glob("*.onnx")))) as runner:
        return tile_run(image, lambda t: runner.run(t)[0], m.input_shape[2:], overlap, multiple)


def test_server_parses_the_tensorrt_and_onnxruntime_configs(served):
    """Strict parsing and validation by the server itself: both configs get as far as loading the backend."""
    from tritonclient.utils import InferenceServerException

    errors = {}
    for model in ("naf", "naf_onnx", "broken"):
        with pytest.raises(InferenceServerException) as exc:
            served.client.load_model(model)
        errors[model] = str(exc.value)
    print("\nload errors on this server (no TensorRT / ONNX Runtime backend):", json.dumps(errors, indent=2))
    assert "unable to find backend library for backend 'tensorrt'" in errors["naf"], errors
    assert "unable to find backend library for backend 'onnxruntime'" in errors["naf_onnx"], errors
    assert "backend library" not in errors["broken"]  # a config error stops before the backend
    assert "failed to read text proto" in served.server.log.read_text() and "broken/config.pbtxt" in served.server.log.read_text()
    index = {m["name"]: m.get("state") for m in served.client.get_model_repository_index()}
    assert index["naf_tiled"] == index["bls_tiled"] == "READY"


@pytest.mark.parametrize("model", ["naf_tiled", "bls_tiled"])
def test_served_reference_inputs_pass_the_manifest_tolerance(served, model):
    from deploy_kit import compare
    from deploy_kit.bundle import open_bundle
    from deploy_kit.specs import Tolerance

    b = open_bundle(str(served.bundle))
    m = b.manifest
    inputs, refs = b.references()
    outs = [[_infer(served.client, model, x)] for x in inputs]
    check = compare.evaluate(model, m["precision"], model, m["output_names"], refs, outs, m["output_kind"],
                             Tolerance(**m["tolerance"]))
    worst = max(float(np.abs(o[0] - r[0]).max()) for o, r in zip(outs, refs))
    print(f"\n{model}: {len(inputs)} reference inputs {inputs[0].shape}, max |served - PyTorch FP32| = {worst:.3g}, "
          f"PSNR {min(o.psnr for o in check.outputs):.1f} dB (gate: {m['precision']} {m['tolerance']['fp16_min_psnr']} dB)")
    assert check.status == "pass", check


@pytest.mark.parametrize("model", ["naf_tiled", "bls_tiled"])
def test_any_size_equals_the_runtime_tiling(served, model):
    """Larger than, and not a multiple of, the 64x64 engine; smaller than it; and a batch of two."""
    rng = np.random.default_rng(7)
    for shape in ((1, 3, 97, 150), (1, 3, 41, 40), (2, 3, 70, 129)):
        batch = rng.random(shape, dtype=np.float32)
        got = _infer(served.client, model, batch)
        assert got.shape == shape and got.dtype == np.float32
        want = np.stack([_runtime_tiled(served.bundle, image) for image in batch])
        diff = float(np.abs(got - want).max())
        print(f"\n{model} {shape}: max |served - deploy-kit runtime tiling| = {diff:.3g}")
        assert diff <= 1e-6, (shape, diff)


def test_served_sync_context_equals_the_restorers(served):
    """sync_tiled, served: what ``Restorer(bundle, "onnxruntime", context="sync:3")`` gives (clipped to [0, 1])."""
    from deploy_kit.runtime.restorer import Restorer

    batch = np.random.default_rng(11).random((1, 3, 97, 150), dtype=np.float32)
    got = np.clip(_infer(served.client, "sync_tiled", batch), 0.0, 1.0)[0].transpose(1, 2, 0)
    with Restorer(str(served.sync_bundle), "onnxruntime", context="sync:3") as restorer:
        want = restorer.restore(np.ascontiguousarray(batch[0].transpose(1, 2, 0)))
    diff = float(np.abs(got - want).max())
    print(f"\nsync_tiled {batch.shape}: max |served - Restorer sync:3| = {diff:.3g}")
    assert diff <= 1e-6, diff


def test_a_bad_request_is_an_error_and_the_server_serves_on(served):
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="input"):  # Triton checks the dims against the config
        _infer(served.client, "naf_tiled", np.zeros((1, 1, 64, 64), np.float32))
    assert _infer(served.client, "naf_tiled", np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 3, 64, 64)


def test_bounded_concurrent_load(served):
    """8 clients x 50 requests of one 150x97 image (6 tiles): no error, identical outputs, the server's figures."""
    import tritonclient.http as httpclient

    image = np.random.default_rng(3).random((1, 3, 97, 150), dtype=np.float32)
    first = _infer(served.client, "naf_tiled", image)
    before = served.client.get_inference_statistics("naf_tiled")["model_stats"][0]["inference_stats"]
    errors, mismatches, done = [], [], [0]
    lock = threading.Lock()
    deadline = time.monotonic() + LOAD_DEADLINE_S

    def client_loop():
        c = httpclient.InferenceServerClient(served.server.url, connection_timeout=10, network_timeout=60)
        try:
            for _ in range(REQUESTS):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"load deadline of {LOAD_DEADLINE_S} s passed")
                out = _infer(c, "naf_tiled", image)
                with lock:
                    done[0] += 1
                    if not np.array_equal(out, first):
                        mismatches.append(float(np.abs(out - first).max()))
        except Exception as exc:  # noqa: BLE001 - every error is counted and reported
            with lock:
                errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            c.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic() + 30))
    wall = time.monotonic() - started
    def read_stats():
        return served.client.get_inference_statistics("naf_tiled")["model_stats"][0]["inference_stats"]

    # the server counts a request after its response is sent: the last one's count can lag the
    # client by a moment (seen once: 399 of 400 right after the last response), so poll briefly
    settle = time.monotonic() + 10
    after = read_stats()
    while after["success"]["count"] - before["success"]["count"] < done[0] and time.monotonic() < settle:
        time.sleep(0.1)
        after = read_stats()

    def delta(key):
        return after[key]["count"] - before[key]["count"], after[key]["ns"] - before[key]["ns"]

    n, ns = delta("success")
    figures = {
        "requests": CLIENTS * REQUESTS, "completed": done[0], "errors": len(errors), "mismatched_outputs": len(mismatches),
        "client_wall_s": round(wall, 2), "throughput_rps": round(done[0] / wall, 1),
        "server_success_count": n, "server_fail_count": delta("fail")[0],
        "server_avg_request_ms": round(ns / max(n, 1) / 1e6, 2),
        "server_avg_queue_ms": round(delta("queue")[1] / max(delta("queue")[0], 1) / 1e6, 2),
        "server_avg_compute_infer_ms": round(delta("compute_infer")[1] / max(delta("compute_infer")[0], 1) / 1e6, 2),
        "instances": 2, "image": "1x3x97x150 (6 tiles of 64x64)",
    }
    (served.work / "load.json").write_text(json.dumps(figures, indent=2))
    print("\ntriton load (naf_tiled, in-process ONNX Runtime tiles):", json.dumps(figures))
    assert not any(t.is_alive() for t in threads), "a client is still running past the deadline"
    assert not errors, errors[:5]
    assert done[0] == CLIENTS * REQUESTS and not mismatches, (done[0], mismatches[:5])
    assert n == CLIENTS * REQUESTS and figures["server_fail_count"] == 0, figures


def test_in_process_tiles_through_openvino_match_onnx_runtime(tmp_path, monkeypatch, tiny_bundle):
    """``--cpu-backend openvino``: the tiled model opens the registry's OpenVINO runner in the python backend
    (Triton's module is the stand-in ``_FakePbUtils``; the runners are real), and its images equal ONNX
    Runtime's within FP32 rounding; without in-process tiles the option is one line."""
    pytest.importorskip("openvino", reason="the openvino extra is not installed")
    from deploy_kit.errors import UsageError
    from deploy_kit.serving.triton import write_repository

    b = tiny_bundle("fp32")
    x = np.random.default_rng(0).random((1, 3, 100, 90), dtype=np.float32)
    outs = {}
    for cpu in ("onnxruntime", "openvino"):
        repo = tmp_path / cpu
        write_repository(str(b), str(repo), name="m", tiles_through="in-process", cpu_backend=cpu)
        assert _params(_config(repo / "m_tiled"))["cpu_runner"] == cpu
        model = _tiled_model(repo, "m_tiled", monkeypatch)
        assert model.runner.name == cpu
        outs[cpu] = model.restore(x)
    assert outs["openvino"].shape == x.shape
    assert float(np.abs(outs["openvino"] - outs["onnxruntime"]).max()) < 1e-3
    with pytest.raises(UsageError, match="--tiles-through in-process"):
        write_repository(str(b), str(tmp_path / "bls"), name="m", cpu_backend="openvino")
