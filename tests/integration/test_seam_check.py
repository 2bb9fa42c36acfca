"""``deploy-kit seam-check`` end to end: export a tiny NAFNet, tile it over a larger photo."""

import re

import pytest

TINY = ["--height", "64", "--width", "64", "--backend", "none"]


@pytest.fixture(scope="module")
def tiny_tlc_onnx(tmp_path_factory):
    from tests.conftest import run_cli

    out = tmp_path_factory.mktemp("seam")
    # TLC with a small window (train size 16 -> 24 px pooling) keeps the model local, so
    # overlapping tiles can match the full image; random weights, seed 0
    r = run_cli("export", "nafnet", "--variant", "tiny", "--train-size", "16", *TINY, "--out", out)
    onnx_path = out / "nafnet-tiny-64x64-tlc.fp32.onnx"
    # the FP32 parity gate of this random tiny model is not what is tested here (exit 1 = a gate
    # failed, the ONNX is still written); anything else is a real failure
    assert r.returncode in (0, 1) and onnx_path.is_file(), r.stderr
    return onnx_path


def _seams(stdout):
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"overlap (\d+): .*? seam ([\d.]+|inf) dB", stdout)}


def test_seam_check_reports(cli, tiny_tlc_onnx):
    r = cli("seam-check", tiny_tlc_onnx, "--overlap", "0", "--overlap", "24")
    assert r.returncode == 0, r.stderr
    assert "photo: astronaut.png fitted to 224x240" in r.stdout
    seams = _seams(r.stdout)
    assert set(seams) == {0, 24}
    # random tiny weights see far (4 levels): tiles of 64 px do not reproduce the full image, and
    # the check must say so rather than pass (measured: about 14 dB at both overlaps)
    assert all(v < 40 for v in seams.values())
    assert re.search(r"worst seam [xy]=\d+ \([xy] \d+-\d+\) [\d.]+ dB, peak at y=\d+ x=\d+", r.stdout)


def test_seam_check_gate_and_bad_input(cli, tiny_tlc_onnx, tmp_path):
    r = cli("seam-check", tiny_tlc_onnx, "--overlap", "0", "--min-seam-psnr", "200")
    assert r.returncode == 1 and "SEAM CHECK FAILED" in r.stderr
    r = cli("seam-check", tiny_tlc_onnx, "--overlap", "64")
    assert r.returncode == 2 and r.stderr.startswith("error: --overlap must be in [0, 63]") and len(r.stderr.splitlines()) == 1
    r = cli("seam-check", tmp_path / "missing.onnx")
    assert r.returncode == 2 and "not found" in r.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    r = cli("seam-check", bad)
    assert r.returncode == 2 and "not a readable ONNX" in r.stderr


def test_seam_check_on_a_user_image(cli, tiny_tlc_onnx, tmp_path):
    import numpy as np
    from PIL import Image

    img = (np.random.default_rng(0).random((150, 170)) * 255).astype(np.uint8)  # gray, model takes RGB
    Image.fromarray(img).save(tmp_path / "g.png")
    r = cli("seam-check", tiny_tlc_onnx, "--image", tmp_path / "g.png", "--overlap", "16")
    assert r.returncode == 0, r.stderr
    assert "g.png (150x170, as is)" in r.stdout and "on 150x170, overlap 16" in r.stdout


def test_one_tile_is_the_reference(cli, tiny_tlc_onnx):
    """A photo of exactly the engine size is one tile: tiled == full image to FP32 parity."""
    r = cli("seam-check", tiny_tlc_onnx, "--height", "64", "--width", "64", "--overlap", "8")
    assert r.returncode == 0, r.stderr
    assert "1 tiles" in r.stdout and "no interior seam" in r.stdout
    # ONNX Runtime vs PyTorch FP32 rounding only: RMSE <= 1e-4 (the FP32 gate's scale) is 80 dB. Seen
    # 92.6-120 dB: this random tiny TLC model amplifies rounding (LayerNorms over near-flat maps),
    # and ORT's thread split of reductions varies with the machine's load
    assert float(re.search(r"PSNR ([\d.]+) dB", r.stdout).group(1)) > 80


def _psnr(stdout):
    return float(re.search(r"PSNR ([\d.]+) dB", stdout).group(1))


def test_openvino_runs_the_tiles_like_onnx_runtime(cli, tiny_tlc_onnx):
    """--backend openvino (real OpenVINO on this CPU): the header names it, and the tiled PSNR against
    the PyTorch reference matches ONNX Runtime's (the error is the tiling's, not the runner's)."""
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'deploy-kit[openvino]')")
    args = ("seam-check", tiny_tlc_onnx, "--height", "128", "--width", "128", "--overlap", "16")
    ort, ov = cli(*args), cli(*args, "--backend", "openvino")
    assert ort.returncode == 0 and ov.returncode == 0, ort.stderr + ov.stderr
    assert "tiles on onnxruntime (CPU)" in ort.stdout
    assert re.search(r"tiles on openvino \(CPU, (FP32|BF16|FP16)\)", ov.stdout), ov.stdout
    tiles = [re.search(r"overlap 16: (\d+) tiles", r.stdout).group(1) for r in (ort, ov)]
    assert tiles[0] == tiles[1] != "1", tiles
    # both measured 36.60 dB: the tiling's error, far above the two runners' FP32 rounding
    assert abs(_psnr(ov.stdout) - _psnr(ort.stdout)) < 0.05, (ort.stdout, ov.stdout)


def _sr_graph(path, scale, tile=None, seed=0):
    """x``scale`` super-resolution: 3x3 conv to 3*s*s channels, DepthToSpace, 3x3 conv (fixed ``tile`` or dynamic size)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    c2 = 3 * scale * scale
    w1 = (rng.random((c2, 3, 3, 3)) / 27).astype(np.float32)
    w2 = (rng.random((3, 3, 3, 3)) / 27).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "w1"], ["f"], pads=[1, 1, 1, 1]),
             helper.make_node("DepthToSpace", ["f"], ["u"], blocksize=scale, mode="CRD"),
             helper.make_node("Conv", ["u", "w2"], ["output"], pads=[1, 1, 1, 1])]
    dims_in = [1, 3, tile, tile] if tile else [1, 3, "h", "w"]
    dims_out = [1, 3, scale * tile, scale * tile] if tile else [1, 3, "H", "W"]
    graph = helper.make_graph(nodes, "sr", [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims_in)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, dims_out)],
                              [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_super_resolution_is_compared_in_output_space(tmp_path):
    """A x2 graph: the tiled output, the tile boundaries and the seam band are all in output pixels."""
    import numpy as np

    pytest.importorskip("onnx")
    from deploy_kit.errors import UsageError
    from deploy_kit.runners.ort import OrtRunner
    from deploy_kit.runtime.tiling import make_plan
    from deploy_kit.seamcheck import tiled_vs_full

    rng = np.random.default_rng(0)
    x = np.clip(0.5 + 0.2 * rng.standard_normal((3, 70, 90)), 0, 1).astype(np.float32)
    with OrtRunner(_sr_graph(tmp_path / "full.onnx", 2)) as full:
        ref = full.run(x[None])[0][0]
    with OrtRunner(_sr_graph(tmp_path / "tile.onnx", 2, tile=32), threads=1) as r:
        fn = lambda t: r.run(t)[0]  # noqa: E731
        plan, out, good = tiled_vs_full(x, ref, fn, (32, 32), 8, scale=2)
        _, _, seams = tiled_vs_full(x, ref, fn, (32, 32), 0, scale=2)
        with pytest.raises(UsageError, match="output is 70x90 for a 70x90 photo; a model of scale 2 gives 140x180"):
            tiled_vs_full(x, ref[:, ::2, ::2], fn, (32, 32), 8, scale=2)
    assert out.shape == ref.shape == (3, 140, 180) and plan.tiles == make_plan(70, 90, (32, 32), 8).tiles
    assert good["psnr"] > 55 and good["seam_psnr"] > 55
    # without overlap the error is on the boundaries, which sit at twice their input position
    assert seams["seam_psnr"] < good["seam_psnr"] - 10 and seams["seam_psnr"] < seams["other_psnr"] - 10
    w = seams["worst_seam"]
    edges = {2 * v for box in make_plan(70, 90, (32, 32), 0).boxes() for v in box}
    assert w["at"] in edges and abs(w["peak"][0 if w["axis"] == "y" else 1] - w["at"]) <= 2 * 3
