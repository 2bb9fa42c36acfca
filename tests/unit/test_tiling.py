"""Tiling in the torch-free runtime: exact for pointwise models, seamless for local ones with overlap."""

import math

import numpy as np
import pytest

from deploy_kit.runtime.tiling import DEFAULT_OVERLAP, make_plan, plan_tiles, tile_run


def _image(c=3, h=150, w=211, seed=0):
    rng = np.random.default_rng(seed)
    # smooth structure + texture, like a photo
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(yy / 13.0)[None] * np.cos(xx / 17.0)[None]
    return np.clip(base + 0.1 * rng.standard_normal((c, h, w)), 0, 1).astype(np.float32)


def _box3(x):
    """3x3 box blur per channel with zero padding (a local, not pointwise, 'model')."""
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    h, w = x.shape[2:]
    return sum(p[:, :, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) / 9.0


def _box_n(x, n=3):
    for _ in range(n):
        x = _box3(x)
    return x


def _psnr(a, b):
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


@pytest.mark.parametrize("overlap", [0, 8, DEFAULT_OVERLAP])
def test_identity_and_pointwise_reproduce_the_image(overlap):
    img = _image()
    out = tile_run(img, lambda t: t.copy(), (64, 64), overlap)
    np.testing.assert_allclose(out, img, rtol=0, atol=1e-6)
    f = lambda t: np.stack([t[:, 0] * 2 - t[:, 1], np.sqrt(t[:, 2] + 0.1)], axis=1)  # pointwise, 3 -> 2 channels
    out = tile_run(img, f, (48, 80), overlap)
    np.testing.assert_allclose(out, f(img[None])[0], rtol=0, atol=1e-6)


def test_local_model_matches_full_image_with_overlap_and_shows_seams_without():
    img = _image()
    full = _box_n(img[None])[0]  # receptive field 7x7
    # away from the image border (where the full image and a border tile see the same zero padding anyway)
    inner = (slice(None), slice(4, -4), slice(4, -4))
    with_overlap = tile_run(img, _box_n, (64, 64), 16)
    without = tile_run(img, _box_n, (64, 64), 0)
    assert _psnr(with_overlap[inner], full[inner]) > 60
    assert _psnr(without[inner], full[inner]) < 45  # each tile zero-pads its own edges: seams
    # the error without overlap sits on the tile boundaries
    err = np.abs(without - full).max(axis=0)
    boxes = make_plan(*img.shape[1:], (64, 64), 0).boxes()
    edges = sorted({y0 for y0, *_ in boxes} - {0})
    assert all(err[e - 2:e + 2].max() > 0.01 for e in edges)


def test_image_smaller_than_tile_and_odd_sizes():
    for h, w in [(1, 1), (5, 37), (37, 5), (64, 64), (65, 129), (131, 63)]:
        img = _image(h=h, w=w, seed=h + w)
        seen = []
        out = tile_run(img, lambda t: (seen.append(t.shape), t * 2)[1], (32, 48), 8)
        assert out.shape == img.shape and out.dtype == np.float32
        np.testing.assert_allclose(out, img * 2, atol=1e-6)
        assert set(seen) == {(1, 3, 32, 48)}  # the model always gets its fixed size


def test_plan_covers_every_pixel_with_at_least_the_overlap():
    for size, tile, overlap in [(500, 128, 32), (129, 128, 32), (128, 128, 0), (1000, 96, 48)]:
        ys = [y for y, _ in plan_tiles(size, tile, (tile, tile), overlap)]
        assert ys[0] == 0 and ys[-1] == max(0, size - tile)
        steps = np.diff(ys)
        assert (steps <= tile - overlap).all() and (steps > 0).all()
    plan = make_plan(300, 200, (128, 128), 32)
    assert plan.tiles == len(plan.positions) == 3 * 2
    assert plan.pixel_factor == pytest.approx(6 * 128 * 128 / (300 * 200))


def test_bad_arguments():
    img = _image(h=40, w=40)
    with pytest.raises(ValueError, match="multiple"):
        tile_run(img, lambda t: t, (60, 64), 8, multiple=8)
    with pytest.raises(ValueError, match="overlap"):
        tile_run(img, lambda t: t, (32, 32), 32)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        tile_run(img[0], lambda t: t, (32, 32), 8)
    with pytest.raises(ValueError, match="same spatial size"):
        tile_run(img, lambda t: t[:, :, ::2, ::2], (32, 32), 8)
    assert tile_run(img, lambda t: t, (32, 64), 8, multiple=16).shape == img.shape


def test_progress_and_flat_memory():
    img = _image(c=1, h=300, w=300)
    calls = []
    ids = set()

    def fn(t):
        ids.add(id(t))
        return t

    tile_run(img, fn, (32, 32), 4, progress=lambda d, n: calls.append((d, n)))
    total = make_plan(300, 300, (32, 32), 4).tiles
    assert calls == [(i + 1, total) for i in range(total)] and total > 100
    # the accumulators are preallocated: the traced peak does not grow with the number of tiles
    import tracemalloc

    def peak(h):
        x = _image(c=1, h=h, w=300)
        tracemalloc.start()
        tile_run(x, lambda t: t + 0, (32, 32), 4)
        p = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return p / x.nbytes

    assert peak(1200) < peak(300) * 1.2  # bytes per image byte: flat, 4x the tiles


def _pool2_up(x):
    """2x2 average pool then nearest upsample: only shift-equivariant for even shifts (a stride-2 U-Net level)."""
    n, c, h, w = x.shape
    p = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    return p.repeat(2, axis=2).repeat(2, axis=3)


def test_origins_on_the_model_multiple_make_strided_models_exact():
    img = _image(h=130, w=222)
    full = _pool2_up(img[None])[0]
    ys = {y for y, _ in plan_tiles(130, 222, (48, 48), 13, multiple=8)}
    xs = {x for _, x in plan_tiles(130, 222, (48, 48), 13, multiple=8)}
    # interior origins on multiples of 8; the last is clamped to the border (130 - 48, 222 - 48: even)
    assert all(v % 8 == 0 for v in (ys - {82}) | (xs - {174})) and max(ys) == 82 and max(xs) == 174
    aligned = tile_run(img, _pool2_up, (48, 48), 13, multiple=8)
    np.testing.assert_allclose(aligned, full, atol=1e-6)
    unaligned = tile_run(img, _pool2_up, (48, 48), 13, multiple=1)  # some origins odd: another pooling grid
    assert np.abs(unaligned - full).max() > 0.01


# ---------------------------------------------------------------- blending and quantising, bit for bit


def _old_quantise(acc, grid, dtype):
    """The quantiser as it was (clip, x top, + 0.5, truncating cast on HWC float strips): the reference."""
    t, _, l, _ = grid.plan.pad
    h, w = grid.out_size
    part = np.clip(acc[:, t:t + h, l:l + w].transpose(1, 2, 0), 0.0, 1.0)
    top = {np.uint8: np.float32(255.0), np.uint16: np.float32(65535.0)}.get(dtype)
    if top is None:
        return part.astype(np.float32)
    part *= top
    part += 0.5
    out = np.empty(part.shape, dtype)
    np.copyto(out, part, casting="unsafe")
    return out


def _edge_values(top):
    """Values where clip-then-round could differ from round-then-clip: outside [0, 1], infinities, NaN,
    and every k + 0.5 rounding boundary (k/top + 0.5/top in float32, with its neighbours 1 and 2 ulp away)."""
    ks = np.arange(int(top) + 1, dtype=np.float64)
    if top > 255:
        ks = np.unique(np.concatenate([ks[:600], ks[-600:], ks[:: 97]]))
    mid = ((ks + 0.5) / float(top)).astype(np.float32)
    inf = np.float32(np.inf)
    up1, down1 = np.nextafter(mid, inf), np.nextafter(mid, -inf)
    near = [mid, up1, down1, np.nextafter(up1, inf), np.nextafter(down1, -inf)]
    exact = (ks / float(top)).astype(np.float32)
    specials = np.array([-np.inf, -1e30, -1.0, -1e-8, -0.0, 0.0, 1e-30, 0.5 / float(top), 1.0, 1.0 + 1e-7, 2.0,
                         1e30, np.inf, np.nan, -np.nan], np.float32)
    around = [np.nextafter(exact, np.float32(2)), np.nextafter(exact, np.float32(-1))]
    return np.concatenate([*near, exact, *around, specials])


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")  # NaN, on purpose
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("opencv", [True, False])
def test_quantise_equals_the_clip_first_form_bit_for_bit(dtype, channels, opencv, monkeypatch):
    """Every boundary and out-of-range value (NaN included: it reaches the same truncating cast as
    before, which gives 0 on x86 and ARM) quantises as the old clip-first path did, with OpenCV's
    merge and with the numpy interleave. ``opencv=False`` replaces deploy-kit's own choice of
    interleave (``tiling._merge``) with "no OpenCV": it checks the numpy fallback's bytes."""
    from deploy_kit.runtime import tiling

    if opencv:
        pytest.importorskip("cv2")
    else:
        monkeypatch.setattr(tiling, "_merge", lambda: None)
    top = {np.uint8: 255.0, np.uint16: 65535.0}.get(dtype, 255.0)
    vals = _edge_values(top)
    if dtype != np.float32:  # the set holds exact ties (x * top == k + 0.5), where half-to-even rounding would differ
        p = vals[np.isfinite(vals) & (vals >= 0) & (vals <= 1)] * np.float32(top)
        assert np.any(p - np.floor(p) == 0.5)
    h, w = 37, 53  # not a multiple of the strip: the last strip is short
    rng = np.random.default_rng(1)
    grid = tiling.TileGrid(h, w, (16, 16), 4)
    acc = grid.new_accumulator(channels)
    flat = (rng.random(acc.size, dtype=np.float32) * 1.4 - 0.2)
    reps = -(-vals.size // acc.size)
    for i in range(reps):  # every value at least once, across channels and strip edges
        chunk = vals[i * acc.size:(i + 1) * acc.size]
        flat[:chunk.size] = rng.permutation(chunk)
        acc[...] = flat.reshape(acc.shape)
        want = _old_quantise(acc, grid, dtype)
        got = grid.quantise(acc, np.empty((h, w, channels), dtype))
        assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
        pieces = np.zeros_like(got)
        for r0, r1 in ((0, 5), (5, 21), (21, 37)):  # in row bands, as the pipelined runtime does
            grid.quantise(acc, pieces, rows=(r0, r1))
        assert pieces.tobytes() == want.tobytes()


def _old_accumulate(grid, acc, call, outputs):
    """The blend as it was (``region += o * (wy * wx)`` with temporaries): the reference."""
    th, tw = grid.out_tile
    s = grid.scale
    for i, (y, x) in enumerate(grid.tiles_in(call)):
        wy, ya, yb = grid._wy[y]
        wx, xa, xb = grid._wx[x]
        y, x = s * y, s * x
        o = outputs[i]
        region = acc[:, y:y + th, x:x + tw]
        if ya < yb and xa < xb:
            region[:, ya:yb, xa:xb] = o[:, ya:yb, xa:xb]
            for rows in (slice(0, ya), slice(yb, th)):
                if rows.start < rows.stop:
                    region[:, rows] += o[:, rows] * (wy[rows, None] * wx[None, :])
            for cols in (slice(0, xa), slice(xb, tw)):
                if cols.start < cols.stop:
                    region[:, ya:yb, cols] += o[:, ya:yb, cols] * wx[None, cols]
        else:
            region += o * (wy[:, None] * wx[None, :])


@pytest.mark.parametrize("scale,batch,overlap", [(1, 1, 8), (1, 3, 0), (2, 2, 8), (1, 2, 15)])
def test_blend_equals_the_old_form_and_rows_done_are_final(scale, batch, overlap):
    from deploy_kit.runtime.tiling import TileGrid

    h, w = 75, 101
    grid = TileGrid(h, w, (32, 32), overlap, batch=batch, scale=scale)
    rng = np.random.default_rng(2)
    acc, ref = grid.new_accumulator(3), grid.new_accumulator(3)
    th, tw = grid.out_tile
    snapshots = []
    for call in range(grid.calls):
        out = rng.random((batch, 3, th, tw), dtype=np.float32)
        grid.accumulate(acc, call, out)
        _old_accumulate(grid, ref, call, out)
        assert acc.tobytes() == ref.tobytes()
        snapshots.append((grid.rows_done(call), grid.result(acc).copy()))
    final = grid.result(acc)
    assert snapshots[-1][0] == scale * h
    assert [r for r, _ in snapshots] == sorted(r for r, _ in snapshots)
    for rows, snap in snapshots:  # rows said to be final are never changed by a later call
        assert np.array_equal(snap[:, :rows], final[:, :rows])
    assert any(0 < r < scale * h for r, _ in snapshots)
