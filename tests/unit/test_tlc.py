import pytest
import torch
import torch.nn.functional as F

from deploy_kit.specs import TLCConfig
from deploy_kit.tlc import (LocalAvgPoolEager, LocalAvgPoolStatic, WindowMerge, cut_windows,
                            merge_windows_eager, pool_windows, window_starts)


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
    st = LocalAvgPoolStatic((384, 384), (720, 1280))
    assert not st.is_global and st.pads == (191, 192, 191, 192)
    assert all(h * w < 100_000 for h, w in pool_windows(torch.nn.Sequential(st)))


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
