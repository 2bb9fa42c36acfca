"""Image files in and out of the runtime: every mode and bit depth round-trips as it was stored."""

import numpy as np
import pytest
from PIL import Image

from deploy_kit.runtime.imageio import (ImageInfo, _unfilter, postprocess, preprocess, read_image, to_model_channels,
                                        write_image)

H, W = 23, 37


def _u8(c, seed=0):
    a = np.random.default_rng(seed).integers(0, 256, (H, W, c), dtype=np.uint8)
    return a[..., 0] if c == 1 else a


def _u16(c, seed=0):
    a = np.random.default_rng(seed).integers(0, 65536, (H, W, c), dtype=np.uint16)
    return a[..., 0] if c == 1 else a


@pytest.mark.parametrize("mode,c", [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)])
@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_8bit_round_trip(tmp_path, mode, c, ext):
    src = _u8(c)
    p = tmp_path / f"in{ext}"
    Image.fromarray(src, mode=mode).save(p)
    arr, info = read_image(str(p))
    assert arr.dtype == np.float32 and arr.shape == (H, W, c) and info.bits == 8
    assert info.channels == c and info.alpha == (c in (2, 4)) and info.colour == (1 if c <= 2 else 3)
    x, alpha = to_model_channels(arr, 3)
    assert x.shape == (H, W, 3) and (alpha is not None) == info.alpha
    q = tmp_path / f"out{ext}"
    write_image(str(q), x, info, alpha)  # a 3-channel model output of a gray input goes back to gray
    with Image.open(q) as im:
        assert im.mode == mode
        np.testing.assert_array_equal(np.asarray(im), src)


@pytest.mark.parametrize("ext", [".png", ".tif"])
def test_16bit_gray_round_trip(tmp_path, ext):
    src = _u16(1)
    p = tmp_path / f"g16{ext}"
    Image.fromarray(src).save(p)
    arr, info = read_image(str(p))
    assert info == ImageInfo("PNG" if ext == ".png" else "TIFF", 1, False, 16)
    assert np.abs(arr[..., 0] * 65535 - src).max() < 0.01  # the full 16 bits came through
    x, _ = to_model_channels(arr, 1)
    write_image(str(tmp_path / f"o16{ext}"), x, info)
    back, info2 = read_image(str(tmp_path / f"o16{ext}"))
    assert info2.bits == 16
    np.testing.assert_array_equal(np.round(back[..., 0] * 65535).astype(np.uint16), src)


@pytest.mark.parametrize("c", [2, 3, 4])
def test_16bit_colour_png_round_trip(tmp_path, c):
    src = _u16(c, seed=c)
    info = ImageInfo("PNG", 1 if c == 2 else 3, c in (2, 4), 16)
    p = str(tmp_path / "c16.png")
    write_image(p, src.astype(np.float32) / 65535.0, info)
    with Image.open(p) as im:  # a valid PNG other readers open (Pillow reduces it to 8 bits)
        assert im.size == (W, H)
        np.testing.assert_array_equal(np.asarray(im.convert("RGBA" if c == 4 else "RGB"))[..., :3] if c != 2 else np.asarray(im)[..., 0],
                                      (src[..., :3] >> 8) if c != 2 else (src[..., 0] >> 8))
    arr, info2 = read_image(p)
    assert info2 == info
    np.testing.assert_array_equal(np.round(arr * 65535).astype(np.uint16), src)


def test_png_unfilter_all_filter_types():
    """Sub/Up/Average/Paeth rows as other encoders write them (Pillow picks filters adaptively)."""
    import zlib

    rng = np.random.default_rng(1)
    h, w, bpp = 5, 7, 6
    img = rng.integers(0, 256, (h, w * bpp), dtype=np.uint8).astype(np.int32)
    rows = []
    prev = np.zeros(w * bpp, np.int32)
    for y in range(h):
        ftype = y % 5
        cur = img[y]
        left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
        upleft = np.concatenate([np.zeros(bpp, np.int32), prev[:-bpp]])
        if ftype == 0:
            f = cur
        elif ftype == 1:
            f = cur - left
        elif ftype == 2:
            f = cur - prev
        elif ftype == 3:
            f = cur - (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            f = cur - np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        rows.append(bytes([ftype]) + (f % 256).astype(np.uint8).tobytes())
        prev = cur
    out = _unfilter(zlib.decompress(zlib.compress(b"".join(rows))), h, w, bpp)
    np.testing.assert_array_equal(out, img.astype(np.uint8))


def test_jpeg_and_palette(tmp_path):
    src = _u8(3)
    p = tmp_path / "a.jpg"
    Image.fromarray(src).save(p, quality=95)
    arr, info = read_image(str(p))
    assert info == ImageInfo("JPEG", 3, False, 8) and arr.shape == (H, W, 3)
    write_image(str(tmp_path / "b.jpg"), arr, info)
    with Image.open(tmp_path / "b.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB"
    pal = Image.fromarray(src).convert("P")
    pal.save(tmp_path / "p.png")
    arr, info = read_image(str(tmp_path / "p.png"))
    assert info.colour == 3 and not info.alpha and arr.shape == (H, W, 3)
    with pytest.raises(ValueError, match="JPEG"):
        write_image(str(tmp_path / "c.jpg"), np.zeros((H, W, 3)), ImageInfo("PNG", 3, False, 16))


def test_channel_conversions_and_alpha_required(tmp_path):
    rgb = np.random.default_rng(0).random((H, W, 3), dtype=np.float32)
    gray, a = to_model_channels(rgb, 1)
    assert a is None and gray.shape == (H, W, 1)
    np.testing.assert_allclose(gray[..., 0], rgb @ np.array([0.299, 0.587, 0.114], np.float32), atol=1e-6)
    x, a = to_model_channels(np.concatenate([rgb, rgb[..., :1]], -1), 3)
    np.testing.assert_array_equal(x, rgb)
    np.testing.assert_array_equal(a[..., 0], rgb[..., 0])
    with pytest.raises(ValueError, match="alpha"):
        write_image(str(tmp_path / "x.png"), rgb, ImageInfo("PNG", 3, True, 8))
    assert not list(tmp_path.iterdir())  # nothing partial left behind


def test_preprocess_postprocess_unchanged():
    img = _u8(3)
    x = preprocess(img, 3)
    assert x.shape == (1, 3, H, W) and x.dtype == np.float32
    np.testing.assert_array_equal(postprocess(x), img)
