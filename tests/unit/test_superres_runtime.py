"""Super-resolution (output scale s > 1) through the runtime: tiles cut in input space, blended in output space.

The models are real ONNX graphs on ONNX Runtime: a convolution to C*s*s channels followed by
DepthToSpace (PyTorch's PixelShuffle), in a fixed tile-size form (what an engine is) and a form with
dynamic height and width (the full-image output the tiles must reproduce). The degradation
``downscale:s`` and the sample photos it shapes are checked here too.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from deploy_kit.data.degrade import degradation_scale, degrade, parse_degradation  # noqa: E402
from deploy_kit.data.samples import fit, load_image, available_samples, sample_images, sample_pairs  # noqa: E402
from deploy_kit.errors import CalibrationError  # noqa: E402
from deploy_kit.manifest import (Manifest, ManifestError, make_manifest, output_scale, read_typed,  # noqa: E402
                                 validate, write_manifest)
from deploy_kit.runtime.restore import restore_images  # noqa: E402
from deploy_kit.runtime.restorer import Restorer  # noqa: E402
from deploy_kit.runners.ort import OrtRunner  # noqa: E402
from deploy_kit.runtime.tiling import TileGrid, make_plan, tile_run  # noqa: E402

TILE = 24
SIZES = [(70, 95), (TILE, TILE), (20, 45), (7, 5), (1, 30), (53, 24)]  # larger, one tile, smaller, odd, a row


def sr_onnx(path, scale, *, kernel=1, batch=1, channels=3, dynamic=False, seed=0):
    """Conv (kernel x kernel, C -> C*s*s) -> DepthToSpace(s) [-> 3x3 conv in output space when kernel > 1].

    ``dynamic``: batch, height and width are free (the full-image twin of the fixed-size tile graph).
    """
    rng = np.random.default_rng(seed)
    c2 = channels * scale * scale
    w1 = (rng.random((c2, channels, kernel, kernel)) / (kernel * kernel * channels)).astype(np.float32)
    b1 = (0.1 * rng.random(c2)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["input", "w1", "b1"], ["feat"], pads=[kernel // 2] * 4),
             helper.make_node("DepthToSpace", ["feat"], ["up" if kernel > 1 else "output"], blocksize=scale, mode="CRD")]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1")]
    if kernel > 1:  # context in output space too, as a real SR net's tail has
        w2 = (rng.random((channels, channels, 3, 3)) / (9 * channels)).astype(np.float32)
        nodes.append(helper.make_node("Conv", ["up", "w2"], ["output"], pads=[1, 1, 1, 1]))
        inits.append(numpy_helper.from_array(w2, "w2"))
    shape_in = ["n", channels, "h", "w"] if dynamic else [batch, channels, TILE, TILE]
    shape_out = ["n", channels, "H", "W"] if dynamic else [batch, channels, scale * TILE, scale * TILE]
    graph = helper.make_graph(nodes, "sr", [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape_in)],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, shape_out)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """(scale, kernel, batch or 'full') -> ONNX path."""
    d = tmp_path_factory.mktemp("sr")
    out = {}
    for s in (2, 3):
        for k in (1, 3):
            out[s, k, "full"] = sr_onnx(d / f"full-x{s}-k{k}.onnx", s, kernel=k, dynamic=True)
            for n in (1, 2):
                out[s, k, n] = sr_onnx(d / f"tile-x{s}-k{k}-b{n}.onnx", s, kernel=k, batch=n)
    return out


def _full(graphs, s, k, img_chw):
    with OrtRunner(graphs[s, k, "full"], threads=1) as r:
        return r.run(img_chw[None])[0][0]


def _image(h, w, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(yy / 7.0)[None] * np.cos(xx / 9.0)[None]
    return np.clip(base + 0.1 * rng.standard_normal((3, h, w)), 0, 1).astype(np.float32)


def _psnr(a, b):
    return 10 * np.log10(1 / np.mean((np.asarray(a, np.float64) - b) ** 2))


# ----------------------------------------------------------------------------------------- tiling
@pytest.mark.parametrize("scale", [2, 3])
@pytest.mark.parametrize("size", SIZES)
def test_tiles_of_a_pointwise_sr_model_equal_the_full_image(graphs, scale, size):
    """Each output block depends on one input pixel: tiled == full image up to FP32 blending rounding, everywhere."""
    h, w = size
    img = _image(h, w, seed=h * w)
    full = _full(graphs, scale, 1, img)
    assert full.shape == (3, scale * h, scale * w)
    for batch in (1, 2):
        with OrtRunner(graphs[scale, 1, batch], threads=1) as r:
            tiled = tile_run(img, lambda t: r.run(t)[0], (TILE, TILE), 6, batch=batch, scale=scale)
        assert tiled.shape == full.shape
        np.testing.assert_allclose(tiled, full, rtol=0, atol=2e-6)


@pytest.mark.parametrize("scale", [2, 3])
def test_tiles_of_a_local_sr_model_match_the_full_image_with_overlap(graphs, scale):
    """3x3 context in input and output space: overlapping tiles reproduce the full image, without overlap seams show."""
    img = _image(83, 121, seed=scale)
    full = _full(graphs, scale, 3, img)
    inner = (slice(None), slice(2 * scale, -2 * scale), slice(2 * scale, -2 * scale))  # both see zero padding there
    with OrtRunner(graphs[scale, 3, 2], threads=1) as r:
        blended = tile_run(img, lambda t: r.run(t)[0], (TILE, TILE), 8, batch=2, scale=scale)
        seams = tile_run(img, lambda t: r.run(t)[0], (TILE, TILE), 0, batch=2, scale=scale)
    assert blended.shape == seams.shape == full.shape == (3, scale * 83, scale * 121)
    good, bad = _psnr(blended[inner], full[inner]), _psnr(seams[inner], full[inner])
    assert good > 55 and bad < good - 10, (good, bad)
    # without overlap, the error sits on the tile boundaries, at s x their input position
    err = np.abs(seams - full).max(axis=0)
    edges = sorted({x0 for _, _, x0, _ in make_plan(83, 121, (TILE, TILE), 0).boxes()} - {0})
    assert edges and all(err[:, scale * e - 1:scale * e + 1].max() > 1e-3 for e in edges)
    # inside one tile, away from its edges and its neighbours (rows 0-19 and columns 19-38 are its own): exact
    assert edges[0] == 19 and err[2 * scale:16 * scale, 25 * scale:33 * scale].max() < 1e-5


def test_blending_ramps_are_the_input_ones_scaled():
    """Where tiles are blended (not one tile's pure value) in output space is s x where they are at s = 1."""
    def constant_per_call():
        calls = iter(range(1, 10_000))
        return lambda t, s: np.full((t.shape[0], 1, s * t.shape[2], s * t.shape[3]), float(next(calls)), np.float32)

    img = np.zeros((1, 50, 140), np.float32)
    masks = {}
    for s in (1, 2, 3):
        fn = constant_per_call()
        out = tile_run(img, lambda t: fn(t, s), (32, 32), 8, scale=s)[0]
        masks[s] = out != np.round(out)  # a blend of two tiles' values is not an integer
    assert masks[1].any()
    for s in (2, 3):
        np.testing.assert_array_equal(masks[s], np.repeat(np.repeat(masks[1], s, axis=0), s, axis=1))


def test_scale_one_is_the_default_and_bad_scales_or_sizes_are_errors():
    img = _image(40, 50)
    same = tile_run(img, lambda t: t * 2, (32, 32), 8)
    assert np.array_equal(same, tile_run(img, lambda t: t * 2, (32, 32), 8, scale=1))
    grid = TileGrid(40, 50, (32, 32), 8, scale=3)
    assert grid.out_size == (120, 150) and grid.out_tile == (96, 96)
    assert grid.out_padded_size == (3 * grid.plan.padded_size[0], 3 * grid.plan.padded_size[1])
    assert grid.new_accumulator(2).shape == (2, *grid.out_padded_size)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="scale must be a positive integer"):
            TileGrid(40, 50, (32, 32), 8, scale=bad)
    up2 = lambda t: t.repeat(2, axis=2).repeat(2, axis=3)  # noqa: E731
    with pytest.raises(ValueError, match="upscales by 2 but its manifest says scale 3"):
        tile_run(img, up2, (32, 32), 8, scale=3)
    with pytest.raises(ValueError, match="upscales by 2 but its manifest says scale 1"):
        tile_run(img, up2, (32, 32), 8)
    with pytest.raises(ValueError, match=r"needs 2 x the tile's spatial size out \(64x64\)"):
        tile_run(img, lambda t: t[:, :, :, :-1].repeat(2, axis=2).repeat(2, axis=3), (32, 32), 8, scale=2)


# ----------------------------------------------------------------------------------------- Restorer
def _restorer(graphs, scale, kernel=1, batch=2, manifest_scale=None, **kw):
    m = Manifest.for_runner((batch, 3, TILE, TILE), scale=scale if manifest_scale is None else manifest_scale)
    return Restorer(runner=OrtRunner(graphs[scale, kernel, batch], threads=1), manifest=m, overlap=6, **kw)


@pytest.mark.parametrize("scale", [2, 3])
def test_restorer_returns_s_times_the_frame(graphs, scale):
    rng = np.random.default_rng(scale)
    with _restorer(graphs, scale, depth=3) as r:
        assert r.scale == scale
        frames = [(rng.random((h, w, 3)) * 255).astype(np.uint8) for h, w in SIZES]
        serial = [r.restore(f) for f in frames]
        piped = list(r.restore_stream(iter(frames * 2)))
        for f, out in zip(frames, serial):
            assert out.shape == (scale * f.shape[0], scale * f.shape[1], 3) and out.dtype == np.uint8
            full = _full(graphs, scale, 1, f.transpose(2, 0, 1).astype(np.float32) / 255)
            expect = np.clip(full.transpose(1, 2, 0), 0, 1) * 255 + 0.5
            assert np.abs(out.astype(np.float32) - np.floor(expect)).max() <= 1  # the same up to rounding
        assert all(a.tobytes() == b.tobytes() for a, b in zip(serial * 2, piped))  # pipelined = serial, bit for bit
        f = frames[0]
        buf = np.empty((scale * f.shape[0], scale * f.shape[1], 3), np.uint8)
        assert r.restore(f, out=buf) is buf and np.array_equal(buf, serial[0])
        with pytest.raises(ValueError, match="out must be"):
            r.restore(f, out=np.empty((*f.shape[:2], 3), np.uint8))  # the input's size: too small
        gray = r.restore(f[..., :1].astype(np.float32) / 255)
        assert gray.shape == (scale * f.shape[0], scale * f.shape[1], 1) and gray.dtype == np.float32


def test_restorer_with_a_manifest_of_another_scale_says_so(graphs):
    frame = np.zeros((30, 40, 3), np.uint8)
    with _restorer(graphs, 3, manifest_scale=2) as r:
        with pytest.raises(ValueError, match="upscales by 3 but its manifest says scale 2"):
            r.restore(frame)
    with _restorer(graphs, 2, manifest_scale=1) as r:
        with pytest.raises(ValueError, match="upscales by 2 but its manifest says scale 1"):
            list(r.restore_stream([frame]))


def test_restore_images_writes_s_times_larger_files_with_alpha(graphs, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    rgba = (rng.random((21, 33, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    Image.fromarray(rgba[..., :3]).save(tmp_path / "b.png")
    with _restorer(graphs, 2) as r:
        res = restore_images(r, [str(tmp_path / "a.png"), str(tmp_path / "b.png")], str(tmp_path / "out"))
    assert not res.failed and res.pixels == 2 * (42 * 66)
    with Image.open(tmp_path / "out" / "a.png") as im:
        assert im.mode == "RGBA" and im.size == (66, 42)
        alpha = np.asarray(im)[..., 3]
    np.testing.assert_array_equal(alpha, rgba[..., 3].repeat(2, axis=0).repeat(2, axis=1))
    with Image.open(tmp_path / "out" / "b.png") as im:
        assert im.mode == "RGB" and im.size == (66, 42)


def test_video_is_encoded_at_s_times_its_size(tmp_path):
    av = pytest.importorskip("av", reason="PyAV is not installed (pip install 'deploy-kit[video]')")  # noqa: F841
    from deploy_kit.runtime.video import probe_video, transcode
    from tests.media import make_clip

    clip = make_clip(tmp_path / "clip.mp4", frames=4, width=48, height=32, audio=False)

    def up2(frames):
        for f in frames:
            yield f.repeat(2, axis=0).repeat(2, axis=1)

    info = probe_video(transcode(clip, tmp_path / "x2.mp4", up2, scale=2).output)
    assert (info.width, info.height, info.frames) == (96, 64, 4)
    with pytest.raises(ValueError, match=r"needs 32x48x3 uint8 RGB frames"):
        transcode(clip, tmp_path / "x1.mp4", up2)  # scale 1: the input's size is expected
    with pytest.raises(ValueError, match="scale must be a positive integer"):
        transcode(clip, tmp_path / "x0.mp4", up2, scale=0)


# ----------------------------------------------------------------------------------------- manifest
def _meta(**extra):
    from deploy_kit.manifest import input_conventions

    return {"deploy_kit_version": "0", "model": "m", "variant": "v", "input_shape": [1, 3, 16, 16],
            "precision": "fp32", "input_names": ["input"], "output_names": ["output"], "output_kind": "image",
            "input": input_conventions(3, 1), **extra}


def test_manifest_scale_is_optional_and_validated(tmp_path):
    old = make_manifest(_meta())
    assert "scale" not in old and Manifest.from_dict(old).scale == 1 and output_scale(old) == 1  # older manifests: 1
    sr = make_manifest(_meta(scale=4))
    assert Manifest.from_dict(sr).scale == 4
    write_manifest(str(tmp_path / "m.json"), sr)
    assert read_typed(str(tmp_path / "m.json")).scale == 4
    assert json.loads((tmp_path / "m.json").read_text())["scale"] == 4
    for bad in (0, -2):
        with pytest.raises(ManifestError, match=r"scale .* is not a positive integer") as e:
            validate({**old, "scale": bad}, "x.json")
        assert "\n" not in str(e.value)
    for bad in ("2", 2.0, True, None):
        with pytest.raises(ManifestError, match="'scale' has the wrong type") as e:
            Manifest.from_dict({**old, "scale": bad}, "x.json")
        assert "\n" not in str(e.value)
    assert Manifest.for_runner((1, 3, 8, 8)).scale == 1 and Manifest.for_runner((1, 3, 8, 8), scale=3).scale == 3
    with pytest.raises(ManifestError, match="not a positive integer"):
        Manifest.for_runner((1, 3, 8, 8), scale=0)


# ----------------------------------------------------------------------------------------- degradation
def test_downscale_degradation():
    assert parse_degradation("downscale:4+noise:5") == (("downscale", 4.0), ("noise", 5.0))
    assert degradation_scale("blur:3+downscale:3+noise:2") == 3 and degradation_scale("noise:5") == 1
    assert degradation_scale(None) == degradation_scale("none") == 1
    for bad in ("downscale:1", "downscale:9", "downscale:2.5", "downscale", "downscale:2+downscale:2"):
        with pytest.raises(CalibrationError, match="downscale:S"):
            parse_degradation(bad)
    rng = np.random.default_rng(0)
    flat = np.full((40, 60, 3), 0.37, np.float32)
    for s in (2, 3, 4, 8):
        out = degrade(flat, f"downscale:{s}", rng)
        assert out.shape == (40 // s, 60 // s, 3) and out.dtype == np.float32
        np.testing.assert_allclose(out, 0.37, atol=1e-6)  # bicubic weights sum to 1: a constant stays one
    odd = degrade(rng.random((43, 61, 1)).astype(np.float32), "downscale:4", rng)
    assert odd.shape == (10, 15, 1)
    # bottom/right remainder dropped: the result depends on the first 40 x 60 pixels only
    img = rng.random((43, 61, 3)).astype(np.float32)
    np.testing.assert_array_equal(degrade(img, "downscale:4", rng), degrade(img[:40, :60], "downscale:4", rng))
    # a ramp stays a ramp (antialiased bicubic, centred on each 2x2 block), 6 channels too
    ramp = np.broadcast_to(np.linspace(0, 1, 64, dtype=np.float32)[None, :, None], (8, 64, 6)).copy()
    half = degrade(ramp, "downscale:2", rng)
    np.testing.assert_allclose(half[2, 2:-2, 0], ramp[0, 4:-4:2, 0] + 0.5 / 63, atol=1e-4)
    assert half.shape == (4, 32, 6) and np.array_equal(half[..., 0], half[..., 5])
    with pytest.raises(CalibrationError, match="cannot be downscaled 4 times"):
        degrade(np.zeros((3, 40, 3), np.float32), "downscale:4", rng)
    noisy = degrade(flat, "downscale:2+noise:25", np.random.default_rng(1))
    assert noisy.shape == (20, 30, 3) and 0.05 < noisy.std() < 0.15


def test_sample_images_keep_their_size_with_downscale():
    x = sample_images(2, 3, 40, 52, "downscale:3", seed=0)
    assert [a.shape for a in x] == [(1, 3, 40, 52)] * 2
    pairs = sample_pairs(2, 1, 40, 52, "downscale:3+noise:5", seed=0)
    assert [(a.shape, b.shape) for a, b in pairs] == [((1, 1, 40, 52), (1, 1, 120, 156))] * 2
    # the input is the clean photo, degraded: pixel blocks align
    clean = pairs[0][1][0].transpose(1, 2, 0)
    again = degrade(clean, "downscale:3", np.random.default_rng(0))
    np.testing.assert_allclose(sample_images(1, 1, 40, 52, "downscale:3")[0][0].transpose(1, 2, 0), again, atol=1e-6)
    # no downscale: what sample_images always made (fit, then degrade with (seed, i))
    photo = fit(load_image(available_samples()[1], 3), 30, 44)
    expect = degrade(photo, "noise:10", np.random.default_rng((7, 1)))
    np.testing.assert_array_equal(sample_images(2, 3, 30, 44, "noise:10", 7)[1][0], expect.transpose(2, 0, 1))
    same = sample_pairs(1, 3, 30, 44, None)[0]
    assert same[0].shape == same[1].shape == (1, 3, 30, 44) and np.array_equal(same[0], same[1])
