import pytest
import torch
import torch.nn.functional as F

from deploy_kit.specs import TLCConfig
from deploy_kit.tlc import (BoxMean, LocalAvgPoolEager, LocalAvgPoolStatic, WindowMerge, box_cascade,
                            cut_windows, merge_windows_eager, pool_windows, window_starts)


def naive_tlc_pool(x, k):
    """Direct definition: stride-1 valid box mean (kernel clipped to the map) + replicate pad."""
    h, w = x.shape[-2:]
    if k[0] >= h and k[1] >= w:
        return x.mean((-2, -1), keepdim=True)
    k1, k2 = min(h, k[0]), min(w, k[1])
    out = torch.zeros(x.shape[0], x.shape[1], h - k1 + 1, w - k2 + 1, dtype=torch.float64)
    xd = x.double()
    for i in range(h - k1 + 1):
        for j in range(w - k2 + 1):
            out[..., i, j] = xd[..., i:i + k1, j:j + k2].mean((-2, -1))
    pads = ((k2 - 1) // 2, k2 // 2, (k1 - 1) // 2, k1 // 2)
    return F.pad(out, pads, mode="replicate").float()


def test_kernel_closed_form_matches_official_table():
    cfg = TLCConfig()
    assert [cfg.kernel(d)[0] for d in (1, 2, 4, 8, 16)] == [384, 192, 96, 48, 24]
    assert TLCConfig.from_train_size(128).kernel(1) == (192, 192)


@pytest.mark.parametrize("size,k", [((20, 30), (7, 9)), ((20, 30), (25, 9)), ((20, 30), (7, 40)), ((9, 9), (12, 12)), ((16, 16), (16, 16))])
def test_eager_pool_equals_definition(size, k):
    x = torch.rand(1, 3, *size)
    ref = naive_tlc_pool(x, k)
    got = LocalAvgPoolEager(k)(x)
    assert got.shape[-2:] == (ref.shape[-2:] if ref.shape[-1] != 1 else (1, 1))
    assert torch.allclose(got.expand_as(x) if got.shape[-1] == 1 else got, ref.expand_as(x) if ref.shape[-1] == 1 else ref, atol=1e-6)


@pytest.mark.parametrize("size,k", [((20, 30), (7, 9)), ((20, 30), (25, 9)), ((20, 30), (7, 40)), ((9, 9), (12, 12)), ((33, 17), (2, 3))])
def test_static_pool_equals_eager(size, k):
    x = torch.rand(2, 4, *size)
    conv = torch.nn.Conv2d(4, 4, 1)
    eager = conv(LocalAvgPoolEager(k)(x))
    st = LocalAvgPoolStatic(k, size)
    static = st.finish(conv(st(x)))  # conv on the valid map, pad after: must be identical
    assert torch.allclose(eager.expand_as(x), static.expand_as(x), atol=1e-5)


def test_static_pool_windows_fit_tensorrt_limit():
    st = LocalAvgPoolStatic((96, 96), (180, 320))
    assert not st.is_global and st.pads == (47, 48, 47, 48)
    assert (st.rows.form, st.rows.split, st.cols.form, st.cols.split) == ("cascade", (12, 8), "cascade", (12, 8))
    assert pool_windows(torch.nn.Sequential(st)) == [(12, 1), (1, 12)]
    small = LocalAvgPoolStatic((24, 24), (45, 80))  # no split pays at k = 24: banded rows, 1 x 24 pool
    assert (small.rows.form, small.cols.form) == ("band", "pool") and pool_windows(small) == [(1, 24)]


def test_nafnet_720p_sites_pick_the_measured_forms():
    """NAFNet at 720 x 1280: two-stage where it measured faster (tlc.py), band + pool at k = 24."""
    forms = []
    for (h, w), k in [((720, 1280), 384), ((360, 640), 192), ((180, 320), 96), ((90, 160), 48), ((45, 80), 24)]:
        st = LocalAvgPoolStatic((k, k), (h, w))
        forms.append(tuple(box.split or box.form for box in (st.rows, st.cols)))
    assert forms == [((24, 16),) * 2, ((12, 16),) * 2, ((12, 8),) * 2, ((6, 8),) * 2, ("band", "pool")]
    st = LocalAvgPoolStatic((384, 384), (720, 1280))
    assert st.pads == (191, 192, 191, 192) and pool_windows(st) == [(24, 1), (1, 24)]
    assert all(h * w < 100_000 for h, w in pool_windows(st))  # TensorRT's pooling window limit


def test_box_cascade_splits():
    for k in range(4, 400):
        split = box_cascade(k)
        splits = [(k // d, d) for d in range(2, k // 2 + 1) if k % d == 0]
        if not splits:
            assert split is None, k  # prime
            continue
        b, taps = split
        assert b * taps == k and b + taps == min(x + y for x, y in splits), k
    # equal cost: the power-of-two tap count wins (its 1/K weight is exact in FP16)
    assert box_cascade(384) == (24, 16) and box_cascade(96) == (12, 8) and box_cascade(24) == (6, 4)
    assert box_cascade(3) is None
    with pytest.raises(ValueError, match="rows only"):
        BoxMean(720, 384, -1, "band")
    with pytest.raises(ValueError, match="no two-stage split"):
        BoxMean(40, 37, -2, "cascade")


@pytest.mark.parametrize("axis,form", [(-2, "band"), (-2, "pool"), (-1, "pool"), (-2, "cascade"), (-1, "cascade"),
                                       (-2, "auto"), (-1, "auto")])
def test_box_mean_forms_equal_the_definition(axis, form):
    """Every (n, k) up to 40, in float64 (the band constants are float32: 1/k to 3e-8 relative)."""
    gen = torch.Generator().manual_seed(0)
    for n in range(1, 41):
        for k in range(1, n + 1):
            if form == "cascade" and box_cascade(k) is None:
                continue
            bm = BoxMean(n, k, axis, form).double()
            shape = (2, 3, n, 5) if axis == -2 else (2, 3, 5, n)
            x = torch.randn(*shape, dtype=torch.float64, generator=gen)
            ref = x.unfold(axis % 4, k, 1).mean(-1)
            y = bm(x)
            assert y.shape[axis] == n - k + 1, (n, k)
            torch.testing.assert_close(y, ref, atol=1e-6, rtol=0)


def test_window_starts_official_layouts():
    assert window_starts(720, 384) == (384, [0, 336])
    assert window_starts(1280, 384) == (384, [0, 299, 598, 896])
    assert window_starts(1080, 384) == (384, [0, 348, 696])
    assert window_starts(1920, 384) == (384, [0, 384, 768, 1152, 1536])
    assert window_starts(90, 48) == (48, [0, 42])
    assert window_starts(160, 48) == (48, [0, 38, 76, 112])
    assert window_starts(256, 384) == (256, [0])


def test_static_merge_equals_eager_merge():
    rows_k, rows = window_starts(30, 12)
    cols_k, cols = window_starts(41, 16)
    x = torch.rand(1, 5, 30, 41)
    win = cut_windows(x, (rows_k, cols_k), rows, cols) * 2.0 + 1.0
    a = merge_windows_eager(win, (30, 41), (rows_k, cols_k), rows, cols)
    b = WindowMerge((30, 41), (rows_k, cols_k), rows, cols)(win)
    assert torch.allclose(a, b, atol=1e-6)
    assert torch.allclose(a, x * 2.0 + 1.0, atol=1e-6)  # averaging identical overlaps is exact
