"""Calibration sets: reproducibility, degradations, manifests, and every bad-input case."""

from __future__ import annotations

import os

import numpy as np
import pytest

from deploy_kit.data.samples import load_image
from deploy_kit.errors import CalibrationError
from deploy_kit.precision import calibration as cal
from deploy_kit.precision.calibration import MIN_IMAGES, eval_pairs, load_calibration_set

H = W = 32


def _png(path, arr):
    from PIL import Image

    Image.fromarray(arr).save(path)
    return str(path)


def _rng_img(seed, h=48, w=48, c=3):
    rng = np.random.default_rng(seed)
    shape = (h, w, c) if c > 1 else (h, w)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _good_dir(tmp_path, n=MIN_IMAGES, name="imgs"):
    d = tmp_path / name
    d.mkdir()
    for i in range(n):
        _png(d / f"img{i:02d}.png", _rng_img(i))
    return d


def _one_line_error(excinfo) -> str:
    msg = str(excinfo.value)
    assert "\n" not in msg and msg, msg
    return msg


# --- the default set --------------------------------------------------------------------------
def test_default_set_is_reproducible_and_well_formed():
    a = load_calibration_set(None, channels=3, height=H, width=W, count=MIN_IMAGES, degradation="noise:25")
    b = load_calibration_set("default", channels=3, height=H, width=W, count=MIN_IMAGES, degradation="noise:25")
    assert a.digest == b.digest
    assert len(a.arrays) == MIN_IMAGES == len(a)
    for x, y in zip(a.arrays, b.arrays):
        assert x.shape == (1, 3, H, W) and x.dtype == np.float32 and x.flags["C_CONTIGUOUS"]
        assert np.array_equal(x, y)
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert len(set(a.images)) == MIN_IMAGES
    assert "noise:25" in a.description and f"{H}x{W}" in a.description and "default" in a.description
    other = load_calibration_set(None, channels=3, height=H, width=W, count=MIN_IMAGES, seed=1, degradation="noise:25")
    assert other.digest != a.digest


def test_more_crops_than_images_round_robin_with_distinct_crops():
    s = load_calibration_set(None, channels=3, height=H, width=W, count=24)
    n = len(s.images)
    assert n == len(cal.read_manifest(cal.manifest_path("default"))["files"]) == 11
    # crop k and k+n come from the same image at different (seeded) positions
    assert not np.array_equal(s.arrays[0], s.arrays[n])


@pytest.mark.parametrize("channels", [1, 6])
def test_channel_conversion_matches_the_parity_loader(channels):
    s = load_calibration_set(None, channels=channels, height=H, width=W, count=MIN_IMAGES)
    assert s.arrays[0].shape == (1, channels, H, W)
    img = load_image(s.images[0], channels)
    # crop 0 is a window of the same loader's image (same conversion as parity)
    crop = s.arrays[0][0].transpose(1, 2, 0)
    cands = np.argwhere(np.all(img[: img.shape[0] - H + 1, : img.shape[1] - W + 1] == crop[0, 0], axis=-1))
    found = any(np.array_equal(img[t : t + H, l : l + W], crop) for t, l in cands)
    assert found


def test_degradations():
    clean = load_calibration_set(None, channels=3, height=64, width=64, count=MIN_IMAGES)
    noisy = load_calibration_set(None, channels=3, height=64, width=64, count=MIN_IMAGES, degradation="noise:25")
    sig = np.std(np.concatenate([(n - c).ravel() for n, c in zip(noisy.arrays, clean.arrays)]))
    assert 0.07 < sig < 0.1  # 25/255 = 0.098, slightly less after clipping to [0, 1]
    blurred = load_calibration_set(None, channels=3, height=64, width=64, count=MIN_IMAGES, degradation="blur:9")
    grad = lambda a: float(np.mean(np.abs(np.diff(a, axis=-1))) + np.mean(np.abs(np.diff(a, axis=-2))))  # noqa: E731
    assert sum(map(grad, blurred.arrays)) < 0.8 * sum(map(grad, clean.arrays))
    from deploy_kit.data.degrade import motion_kernel

    k = motion_kernel(9, 0.0)
    assert k.shape == (9, 9) and abs(k.sum() - 1) < 1e-6 and np.count_nonzero(k.sum(axis=1)) == 1
    assert cal.parse_degradation("blur:9+noise:5") == (("blur", 9.0), ("noise", 5.0))
    assert cal.parse_degradation(None) == cal.parse_degradation("none") == ()
    for bad in ("gauss:3", "noise:-1", "blur:2.5", "noise", "noise:abc"):
        with pytest.raises(CalibrationError) as e:
            load_calibration_set(None, channels=3, height=H, width=W, count=MIN_IMAGES, degradation=bad)
        assert "degradation" in _one_line_error(e)


# --- manifests and the held-out list ------------------------------------------------------------
def test_manifests_exist_have_licences_and_eval_is_held_out():
    default = cal.read_manifest(cal.manifest_path("default"))
    evals = cal.read_manifest(cal.manifest_path("eval"))
    train = cal.read_manifest(cal.manifest_path("train"))
    for m in (default, evals, train):
        assert all(os.path.isfile(p) for p in m["files"]), m["name"]
        assert all(isinstance(e, dict) and e.get("licence") for e in m["images"]), m["name"]
    held_out = set(map(os.path.basename, evals["files"]))
    assert held_out and not held_out & set(map(os.path.basename, default["files"]))
    assert not held_out & set(map(os.path.basename, train["files"]))


def test_eval_pairs_are_clean_targets_of_held_out_images():
    pairs = eval_pairs(channels=3, height=H, width=W, count=6, degradation="noise:25")
    again = eval_pairs(channels=3, height=H, width=W, count=6, degradation="noise:25")
    assert len(pairs) == 6
    for (x, y), (x2, y2) in zip(pairs, again):
        assert x.shape == y.shape == (1, 3, H, W)
        assert np.array_equal(x, x2) and np.array_equal(y, y2)
        assert not np.array_equal(x, y)
    none = eval_pairs(channels=3, height=H, width=W, count=2, degradation=None)
    assert all(np.array_equal(x, y) for x, y in none)
    with pytest.raises(CalibrationError) as e:
        eval_pairs(channels=3, height=4000, width=4000, count=1, degradation=None)
    assert "4000x4000" in _one_line_error(e)


def test_eval_pairs_of_a_downscale_degradation_align_input_and_target():
    """Super-resolution pairs: the clean target is cropped at s x the export size and degraded into the input."""
    from deploy_kit.data.degrade import degrade

    for s in (2, 3):
        pairs = eval_pairs(channels=3, height=H, width=W, count=3, degradation=f"downscale:{s}")
        assert [(x.shape, y.shape) for x, y in pairs] == [((1, 3, H, W), (1, 3, s * H, s * W))] * 3
        for x, y in pairs:  # pure downscale: the input is exactly the target, shrunk
            np.testing.assert_array_equal(x[0], degrade(y[0].transpose(1, 2, 0), f"downscale:{s}", None).transpose(2, 0, 1))
        checked = eval_pairs(channels=3, height=H, width=W, count=3, degradation=f"downscale:{s}", scale=s)
        assert all(np.array_equal(a[1], b[1]) for a, b in zip(checked, pairs))
    noisy = eval_pairs(channels=1, height=H, width=W, count=2, degradation="downscale:4+noise:10", seed=3)
    assert [(x.shape, y.shape) for x, y in noisy] == [((1, 1, H, W), (1, 1, 4 * H, 4 * W))] * 2
    # scale 1: the pairs of before, untouched by the new argument
    plain = eval_pairs(channels=3, height=H, width=W, count=2, degradation="noise:25")
    for (x, y), (x2, y2) in zip(plain, eval_pairs(channels=3, height=H, width=W, count=2, degradation="noise:25", scale=1)):
        assert np.array_equal(x, x2) and np.array_equal(y, y2) and x.shape == y.shape == (1, 3, H, W)
    with pytest.raises(CalibrationError) as e:
        eval_pairs(channels=3, height=H, width=W, count=1, degradation="noise:25", scale=2)
    assert "use a degradation with downscale:2" in _one_line_error(e)
    with pytest.raises(CalibrationError) as e:
        eval_pairs(channels=3, height=H, width=W, count=1, degradation="downscale:2", scale=1)
    assert "drop downscale:2" in _one_line_error(e)
    with pytest.raises(CalibrationError) as e:
        eval_pairs(channels=3, height=300, width=300, count=1, degradation="downscale:2")
    assert "600x600" in _one_line_error(e)  # the crops are twice the export size


def test_calibration_crops_of_a_downscale_degradation_are_the_graph_input_size(tmp_path):
    s = load_calibration_set(None, channels=3, height=H, width=W, count=MIN_IMAGES, degradation="downscale:3+noise:5")
    assert {a.shape for a in s.arrays} == {(1, 3, H, W)}
    assert f"crops {3 * H}x{3 * W} (downscaled to {H}x{W})" in s.description and "downscale:3+noise:5" in s.description
    plain = load_calibration_set(None, channels=3, height=H, width=W, count=MIN_IMAGES)
    assert f"crops {H}x{W} from" in plain.description
    # user images must hold the larger crop: 48 px files cannot give 2 x 32 px crops
    d = _good_dir(tmp_path)
    with pytest.raises(CalibrationError) as e:
        load_calibration_set(str(d), channels=3, height=H, width=W, count=MIN_IMAGES, degradation="downscale:2")
    assert "add images of at least 64x64" in _one_line_error(e)
    small = load_calibration_set(str(d), channels=3, height=16, width=16, count=MIN_IMAGES, degradation="downscale:3")
    assert {a.shape for a in small.arrays} == {(1, 3, 16, 16)}


# --- user directories, globs and manifests ----------------------------------------------------------
def test_directory_with_mixed_files_skips_with_reasons(tmp_path):
    d = _good_dir(tmp_path)
    (d / "notes.txt").write_text("not an image")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _png(d / "small.png", _rng_img(99, 16, 16))
    _png(d / "gray.png", _rng_img(100, c=1))
    _png(d / "rgba.png", _rng_img(101, c=4))
    s = load_calibration_set(str(d), channels=3, height=H, width=W, count=10)
    reasons = {os.path.basename(p): r for p, r in s.skipped}
    assert set(reasons) == {"notes.txt", "broken.png", "small.png"}
    assert reasons["notes.txt"].startswith("not an image")
    assert "unreadable" in reasons["broken.png"]
    assert "smaller than the export size" in reasons["small.png"]
    used = set(map(os.path.basename, s.images))
    assert {"gray.png", "rgba.png"} <= used  # gray and RGBA are converted, not mismatched
    assert "3 files skipped" in s.description


def test_empty_directory(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError) as e:
        load_calibration_set(str(tmp_path / "empty"), channels=3, height=H, width=W)
    assert "empty" in _one_line_error(e)


@pytest.mark.parametrize(
    "make, expect",
    [
        (lambda d, i: (d / f"f{i}.txt").write_text("x"), "non-image"),
        (lambda d, i: (d / f"f{i}.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated"), "unreadable/corrupt"),
        (lambda d, i: _png(d / f"f{i}.png", _rng_img(i, 20, 20)), "smaller than the export size"),
        (lambda d, i: np.save(d / f"f{i}.npy", np.zeros((48, 48, 6), np.float32)), "mismatched"),
        (lambda d, i: _png(d / f"f{i}.png", (_rng_img(i, c=1).astype(np.uint16) * 257)), "mismatched"),
    ],
    ids=["non-image", "corrupt", "too-small", "npy-6ch-for-3ch-model", "16-bit"],
)
def test_all_files_bad_is_one_line_error_naming_the_reason(tmp_path, make, expect):
    d = tmp_path / "bad"
    d.mkdir()
    for i in range(MIN_IMAGES):
        make(d, i)
    with pytest.raises(CalibrationError) as e:
        load_calibration_set(str(d), channels=3, height=H, width=W, count=MIN_IMAGES)
    msg = _one_line_error(e)
    assert expect in msg and f"at least {MIN_IMAGES}" in msg


def test_too_few_images_states_the_minimum(tmp_path):
    d = _good_dir(tmp_path, n=MIN_IMAGES - 1)
    with pytest.raises(CalibrationError) as e:
        load_calibration_set(str(d), channels=3, height=H, width=W, count=32)
    msg = _one_line_error(e)
    assert f"only {MIN_IMAGES - 1} usable" in msg and f"need at least {MIN_IMAGES}" in msg
    with pytest.raises(CalibrationError) as e:
        load_calibration_set(None, channels=3, height=H, width=W, count=MIN_IMAGES - 1)
    assert f"minimum of {MIN_IMAGES}" in _one_line_error(e)


def test_npy_arrays_used_as_is_or_converted(tmp_path):
    d = tmp_path / "npy"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(MIN_IMAGES):
        np.save(d / f"dp{i}.npy", rng.random((6, 40, 40), dtype=np.float32))  # CHW, 6 channels
    s6 = load_calibration_set(str(d), channels=6, height=H, width=W, count=MIN_IMAGES)
    src = np.load(d / os.path.basename(s6.images[0]))
    crop = s6.arrays[0][0]
    assert any(np.array_equal(src[:, t : t + H, l : l + W], crop) for t in range(9) for l in range(9))
    with pytest.raises(CalibrationError) as e:  # a 6-channel array is not silently cut to 3
        load_calibration_set(str(d), channels=3, height=H, width=W, count=MIN_IMAGES)
    assert "mismatched channel count" in _one_line_error(e)
    np.save(d / "bad_range.npy", np.full((40, 40, 3), 2.0, np.float32))
    with pytest.raises(CalibrationError) as e:
        cal.read_input(str(d / "bad_range.npy"), 3)
    assert "[0, 1]" in _one_line_error(e)


def test_glob_and_manifest_sources(tmp_path):
    d = _good_dir(tmp_path)
    g = load_calibration_set(str(d / "*.png"), channels=3, height=H, width=W, count=MIN_IMAGES)
    dd = load_calibration_set(str(d), channels=3, height=H, width=W, count=MIN_IMAGES)
    assert g.digest == dd.digest
    with pytest.raises(CalibrationError) as e:
        load_calibration_set(str(d / "*.jpeg"), channels=3, height=H, width=W)
    assert "matches no files" in _one_line_error(e)
    m = tmp_path / "mine.json"
    m.write_text(
        '{"format": "deploy-kit-calibration/1", "name": "mine", "root": "imgs", '
        '"images": [' + ", ".join(f'{{"file": "img{i:02d}.png"}}' for i in range(MIN_IMAGES)) + "]}"
    )
    ms = load_calibration_set(str(m), channels=3, height=H, width=W, count=MIN_IMAGES)
    assert ms.digest == dd.digest and "manifest mine" in ms.description
    m.write_text('{"images": []}')
    with pytest.raises(CalibrationError) as e:
        load_calibration_set(str(m), channels=3, height=H, width=W)
    assert "not a deploy-kit calibration manifest" in _one_line_error(e)


def test_bad_sources_and_arguments(tmp_path):
    cases = [
        (dict(source=str(tmp_path / "missing" / "dir")), "not found"),
        (dict(source="no-such-set"), "neither a path nor a known set"),
        (dict(source=_png(tmp_path / "one.png", _rng_img(0))), "single file"),
        (dict(source=None, channels=2), "supports 1, 3, 6"),
    ]
    for kw, expect in cases:
        args = dict(channels=3, height=H, width=W) | kw
        with pytest.raises(CalibrationError) as e:
            load_calibration_set(args.pop("source"), **args)
        assert expect in _one_line_error(e), (kw, str(e.value))
