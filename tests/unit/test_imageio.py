"""Image files in and out of the runtime: every mode and bit depth round-trips as it was stored,
and bad files (bombs, truncated, not images) fail as one line naming the file."""

import struct
import sys
import time
import tracemalloc
import warnings
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from deploy_kit.runtime.imageio import (DEFAULT_MAX_PIXELS, ImageInfo, decode_image, encode_image, image_header,
                                        postprocess, preprocess, read_image, to_model_channels, write_image)

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


def test_png_written_by_libpng_with_every_filter(tmp_path):
    """16-bit colour PNG from another encoder (libpng's adaptive Sub/Up/Average/Paeth rows), RGB order kept."""
    src = _u16(3, seed=5)
    src[..., 0] = np.linspace(0, 65535, W, dtype=np.uint16)  # a smooth red ramp makes libpng pick predictive filters
    ok, buf = cv2.imencode(".png", src[..., ::-1].copy(), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    assert ok
    (tmp_path / "f.png").write_bytes(buf.tobytes())
    arr, info = decode_image(tmp_path / "f.png")
    assert arr.dtype == np.uint16 and info == ImageInfo("PNG", 3, False, 16)
    np.testing.assert_array_equal(arr, src)


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


# --- native-dtype API: decode_image / encode_image / image_header ------------------------------


def _pil_modes(tmp_path):
    """(file, expected uint8 array, expected info) for the modes Pillow writes, decoded independently."""
    rgb = _u8(3, seed=2)
    cases = []
    for mode, c in [("L", 1), ("LA", 2), ("RGB", 3), ("RGBA", 4)]:
        for ext, fmt in [(".png", "PNG"), (".tif", "TIFF")]:
            src = _u8(c, seed=c)
            p = tmp_path / f"{mode}{ext}"
            Image.fromarray(src, mode=mode).save(p)
            cases.append((p, src.reshape(H, W, c), ImageInfo(fmt, 1 if c <= 2 else 3, c in (2, 4), 8)))
    bits = Image.fromarray(_u8(1) > 127).convert("1")
    bits.save(tmp_path / "bits.png")
    cases.append((tmp_path / "bits.png", np.asarray(bits.convert("L"))[..., None], ImageInfo("PNG", 1, False, 8)))
    pal = Image.fromarray(rgb).convert("P")
    pal.save(tmp_path / "pal.png")
    cases.append((tmp_path / "pal.png", np.asarray(pal.convert("RGB")), ImageInfo("PNG", 3, False, 8)))
    pal.info["transparency"] = 3
    pal.save(tmp_path / "palt.png")
    with Image.open(tmp_path / "palt.png") as im:
        cases.append((tmp_path / "palt.png", np.asarray(im.convert("RGBA")), ImageInfo("PNG", 3, True, 8)))
    Image.fromarray(rgb).save(tmp_path / "trns.png", transparency=(1, 2, 3))  # OpenCV would add alpha
    cases.append((tmp_path / "trns.png", rgb, ImageInfo("PNG", 3, False, 8)))
    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.tif")
    cases.append((tmp_path / "cmyk.tif", np.asarray(cmyk.convert("RGB")), ImageInfo("TIFF", 3, False, 8)))
    return cases


def test_decode_keeps_uint8_and_values_for_every_mode(tmp_path):
    for path, want, info in _pil_modes(tmp_path):
        arr, got = decode_image(path)
        assert got == info, path.name
        assert arr.dtype == np.uint8 and arr.shape == want.shape and arr.flags.writeable, path.name
        np.testing.assert_array_equal(arr, want, err_msg=path.name)


@pytest.mark.parametrize("ext,fmt", [(".png", "PNG"), (".tif", "TIFF")])
def test_decode_keeps_uint16_gray(tmp_path, ext, fmt):
    src = _u16(1, seed=3)
    Image.fromarray(src).save(tmp_path / f"g{ext}")
    arr, info = decode_image(tmp_path / f"g{ext}")
    assert info == ImageInfo(fmt, 1, False, 16) and arr.dtype == np.uint16
    np.testing.assert_array_equal(arr[..., 0], src)


@pytest.mark.parametrize("c", [3, 4])
def test_decode_16bit_colour_tiff_from_another_writer(tmp_path, c):
    tifffile = pytest.importorskip("tifffile")
    src = _u16(c, seed=c)
    tifffile.imwrite(tmp_path / "c.tif", src, photometric="rgb", extrasamples=["unassalpha"] if c == 4 else None)
    arr, info = decode_image(tmp_path / "c.tif")
    assert info == ImageInfo("TIFF", 3, c == 4, 16) and arr.dtype == np.uint16
    np.testing.assert_array_equal(arr, src)  # RGB(A) order, not OpenCV's BGR(A)


def test_decode_jpeg_colour_order_and_gray(tmp_path):
    src = np.zeros((16, 24, 3), np.uint8)
    src[..., 0] = 220  # red
    Image.fromarray(src).save(tmp_path / "red.jpg", quality=95)
    arr, info = decode_image(tmp_path / "red.jpg")
    assert info == ImageInfo("JPEG", 3, False, 8) and arr.dtype == np.uint8
    assert abs(int(arr[..., 0].mean()) - 220) <= 3 and arr[..., 2].max() <= 10
    with Image.open(tmp_path / "red.jpg") as im:
        assert np.abs(arr.astype(int) - np.asarray(im, dtype=int)).max() <= 2
    Image.fromarray(_u8(1)).save(tmp_path / "g.jpg")
    arr, info = decode_image(tmp_path / "g.jpg")
    assert info == ImageInfo("JPEG", 1, False, 8) and arr.shape == (H, W, 1)
    Image.fromarray(_u8(3)).convert("CMYK").save(tmp_path / "cmyk.jpg")
    arr, info = decode_image(tmp_path / "cmyk.jpg")
    assert info == ImageInfo("JPEG", 3, False, 8) and arr.shape == (H, W, 3)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_png_encode_decode_bit_exact(tmp_path, bits, c):
    src = (_u8 if bits == 8 else _u16)(c, seed=10 + c).reshape(H, W, c)
    info = ImageInfo("PNG", 1 if c <= 2 else 3, c in (2, 4), bits)
    p = tmp_path / "o.png"
    assert encode_image(p, src, info) == str(p)
    arr, back = decode_image(p)
    assert back == info and arr.dtype == src.dtype
    np.testing.assert_array_equal(arr, src)
    with Image.open(p) as im:  # another reader agrees on the channel order (Pillow keeps the high byte of 16 bits)
        ref = np.asarray(im).reshape(H, W, -1)
        ref = ref[..., [0, 3]] if bits == 16 and c == 2 else ref  # Pillow opens 16-bit gray+alpha as RGBA
        np.testing.assert_array_equal(ref.astype(np.uint16), src if bits == 8 or c == 1 else src >> 8)


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("c", [1, 2, 3, 4])
def test_png_deflated_in_strips_on_threads_is_one_valid_stream(tmp_path, monkeypatch, bits, c):
    """A PNG written in many strips (the strip size made small), deflated on three threads: each chunk's
    CRC holds, the IDAT data is one zlib stream whose Adler-32 (combined from the strips') zlib itself
    checks, every row is Sub-filtered, and OpenCV and Pillow read the pixels back."""
    from deploy_kit.runtime import imageio

    monkeypatch.setattr(imageio, "_PNG_STRIP_BYTES", 200)
    monkeypatch.setattr(imageio, "_PNG_THREADS", 3)
    src = (_u8 if bits == 8 else _u16)(c, seed=30 + c).reshape(H, W, c)
    info = ImageInfo("PNG", 1 if c <= 2 else 3, c in (2, 4), bits)
    p = tmp_path / "o.png"
    encode_image(p, src, info)
    data, pos, kinds, idat = p.read_bytes(), 8, [], b""
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body)
        kinds.append(kind)
        idat += body if kind == b"IDAT" else b""
        pos += 12 + n
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and kinds.count(b"IDAT") >= 6
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(H, -1)  # raises on a wrong Adler-32
    assert raw.shape[1] == W * c * bits // 8 + 1 and set(raw[:, 0]) == {1}
    arr, back = decode_image(p)
    assert back == info
    np.testing.assert_array_equal(arr, src)
    with Image.open(p) as im:
        ref = np.asarray(im).reshape(H, W, -1)
        ref = ref[..., [0, 3]] if bits == 16 and c == 2 else ref
        np.testing.assert_array_equal(ref.astype(np.uint16), src if bits == 8 or c == 1 else src >> 8)


def test_adler32_combine_matches_zlib():
    from deploy_kit.runtime.imageio import _adler32_combine

    rng = np.random.default_rng(5)
    for n1, n2 in ((0, 0), (0, 7), (1, 1), (65521, 3), (70000, 200000), (5, 65521 * 3 + 2)):
        a, b = rng.integers(0, 256, n1, dtype=np.uint8).tobytes(), rng.integers(0, 256, n2, dtype=np.uint8).tobytes()
        assert _adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)
    ones = b"\xff" * 100000  # the sums near their modulus
    assert _adler32_combine(zlib.adler32(ones), zlib.adler32(ones), len(ones)) == zlib.adler32(ones + ones)


@pytest.mark.parametrize("c", [1, 3])
def test_tiff_16bit_encode_decode_bit_exact(tmp_path, c):
    src = _u16(c, seed=20 + c).reshape(H, W, c)
    info = ImageInfo("TIFF", c, False, 16)
    encode_image(tmp_path / "o.tif", src, info)
    arr, back = decode_image(tmp_path / "o.tif")
    assert back == info and arr.dtype == np.uint16
    np.testing.assert_array_equal(arr, src)
    tifffile = pytest.importorskip("tifffile")
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "o.tif").reshape(H, W, c), src)


def test_encode_refuses_what_the_format_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match=r"o\.jpg: JPEG cannot hold 16-bit"):
        encode_image(tmp_path / "o.jpg", _u16(3), ImageInfo("PNG", 3, False, 16))
    with pytest.raises(ValueError, match="JPEG cannot hold alpha"):
        encode_image(tmp_path / "o.jpg", _u8(4), ImageInfo("PNG", 3, True, 8))
    with pytest.raises(ValueError, match="uint16"):  # float or 8-bit pixels for a 16-bit output
        encode_image(tmp_path / "o.png", _u8(3), ImageInfo("PNG", 3, False, 16))
    with pytest.raises(ValueError, match="PNG only"):
        encode_image(tmp_path / "o.tif", _u16(4), ImageInfo("TIFF", 3, True, 16))
    assert not list(tmp_path.iterdir())  # nothing written, no temp file left
    arr = _u8(3)
    encode_image(tmp_path / "o.jpg", arr, ImageInfo("PNG", 3, False, 8))  # the extension picks the format
    with Image.open(tmp_path / "o.jpg") as im:
        assert im.format == "JPEG"


def _png(w, h, idat=b""):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(idat)) + chunk(b"IEND", b""))


def _write(path, data):
    path.write_bytes(data)
    return path


def test_decompression_bomb_refused_from_the_header(tmp_path):
    p = tmp_path / "photo.png"
    p.write_bytes(_png(100_000, 100_000))  # 10 gigapixels claimed by a 60-byte file
    assert image_header(p) == (100_000, 100_000)
    saved = Image.MAX_IMAGE_PIXELS
    tracemalloc.start()
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning must not escape either
        with pytest.raises(ValueError) as err:
            decode_image(p)
    elapsed, peak = time.perf_counter() - t, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    msg = str(err.value)
    assert msg == (f"{p}: 100000x100000 = 10000000000 pixels is more than the limit of {DEFAULT_MAX_PIXELS} "
                   "(--max-pixels); raise --max-pixels if the image is genuine")
    assert "\n" not in msg and elapsed < 2 and peak < 5_000_000  # refused before any pixel buffer exists
    assert Image.MAX_IMAGE_PIXELS == saved  # Pillow's own limit is left as it was
    assert DEFAULT_MAX_PIXELS == 2 * Image.MAX_IMAGE_PIXELS  # Pillow's own refusal threshold


def test_max_pixels_is_ours_not_pillows(tmp_path, monkeypatch):
    p = tmp_path / "s.png"
    Image.fromarray(_u8(3)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow alone would refuse this 851-pixel image
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        arr, _ = decode_image(p)
        assert arr.shape == (H, W, 3)
        pal = tmp_path / "p.png"
        Image.fromarray(_u8(3)).convert("P").save(pal)
        assert decode_image(pal)[0].shape == (H, W, 3)  # the Pillow path too
        assert read_image(p, max_pixels=H * W)[0].shape == (H, W, 3)
        with pytest.raises(ValueError, match=f"{W}x{H} = {W * H} pixels is more than the limit of {H * W - 1}"):
            decode_image(p, max_pixels=H * W - 1)


@pytest.mark.parametrize("name", ["t.png", "t.jpg", "t.tif", "t16.tif"])
def test_truncated_file_is_one_line(tmp_path, capfd, name):
    y, x = np.mgrid[0:120, 0:160]
    img = np.stack([x, y, (x + y) // 2], -1).astype(np.uint8)
    full = tmp_path / f"full_{name}"
    if name == "t16.tif":  # 16-bit colour TIFF goes to OpenCV when whole
        img = img.astype(np.uint16) * 257
        pytest.importorskip("tifffile").imwrite(full, img, photometric="rgb")
    else:
        Image.fromarray(img).save(full, quality=95)
    data = full.read_bytes()
    p = tmp_path / name
    p.write_bytes(data[: len(data) * 2 // 3])
    capfd.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError) as err:
            decode_image(p)
    msg = str(err.value)
    assert msg.startswith(f"{p}: ") and "\n" not in msg and "truncated" in msg
    assert capfd.readouterr().err == ""  # no libpng / libjpeg / OpenCV lines on stderr either
    if name != "t.jpg":
        np.testing.assert_array_equal(decode_image(full)[0], img)


def test_not_an_image_and_corrupt_data(tmp_path):
    junk = tmp_path / "notes.png"
    junk.write_text("not a picture")
    for fn in (image_header, decode_image, read_image):
        with pytest.raises(ValueError, match=r"notes\.png: not an image file"):
            fn(junk)
    good = _png(8, 4, bytes(4 * 25))  # 4 rows: filter byte + 8 RGB pixels
    assert decode_image(_write(tmp_path / "good.png", good))[0].shape == (4, 8, 3)
    p = _write(tmp_path / "crc.png", good[:43] + bytes([good[43] ^ 0xFF]) + good[44:])  # IDAT data vs its CRC
    with pytest.raises(ValueError) as err:
        decode_image(p)
    assert str(err.value).startswith(f"{p}: ") and "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError):
        decode_image(tmp_path / "missing.png")


# --- which OpenCV: deploy_kit._deps.opencv, the one place cv2 is imported ----------------------


def test_no_opencv_is_one_line_naming_what_to_install(tmp_path, monkeypatch):
    """No cv2 importable (``sys.modules["cv2"] = None`` makes Python's import fail as for a missing
    module): decoding and encoding, of any format, fail before touching a file with one line naming
    the ``opencv`` extra and the Jetson's system OpenCV; a folder run stops (exit 2 in the CLI) rather
    than skipping each image as unreadable."""
    from deploy_kit.errors import MissingDependencyError
    from deploy_kit.manifest import Manifest
    from deploy_kit.runtime import Restorer, Runner
    from deploy_kit.runtime.restore import restore_images

    for name, fmt in (("a.png", "PNG"), ("a.bmp", "BMP")):
        Image.fromarray(_u8(3)).save(tmp_path / name, format=fmt)
    monkeypatch.setitem(sys.modules, "cv2", None)
    for call in (lambda: decode_image(tmp_path / "a.png"), lambda: decode_image(tmp_path / "a.bmp"),
                 lambda: encode_image(tmp_path / "out.bmp", _u8(3), ImageInfo("BMP", 3, False, 8))):
        with pytest.raises(MissingDependencyError) as err:
            call()
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith("OpenCV (cv2) is not installed"), msg
        assert "pip install 'deploy-kit[opencv]'" in msg and "--system-site-packages" in msg, msg
        assert "nvidia-opencv on JetPack 6" in msg and "python3-opencv on JetPack 7" in msg, msg
    assert not (tmp_path / "out.bmp").exists()

    class Half(Runner):  # a test double (numpy model): restore_images' error handling is under test
        def run(self, x):
            return [x * np.float32(0.5)]

    with Restorer(runner=Half(), manifest=Manifest.for_runner((1, 3, 16, 16))) as r:
        skipped = []
        with pytest.raises(MissingDependencyError):
            restore_images(r, [str(tmp_path / "a.bmp"), str(tmp_path / "a.png")], str(tmp_path / "out"),
                           on_error=skipped.append)
    assert skipped == [], skipped  # not "unreadable image" lines: the run stops
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_cv2_that_fails_to_import_says_why(tmp_path, monkeypatch):
    """A fake cv2 package whose import fails as a numpy-1 build's does under numpy 2 (a test double: it
    checks deploy-kit's message, not OpenCV): one line with the import error, the numpy version and the
    fix."""
    from deploy_kit._deps import opencv
    from deploy_kit.errors import MissingDependencyError

    (tmp_path / "cv2").mkdir()
    (tmp_path / "cv2" / "__init__.py").write_text("raise ImportError('numpy.core.multiarray failed to import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "cv2" or m.startswith("cv2.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(MissingDependencyError) as err:
        opencv()
    msg = str(err.value)
    assert "\n" not in msg and "does not import under numpy " + np.__version__ in msg, msg
    assert "numpy.core.multiarray failed to import" in msg and "pip install 'numpy<2'" in msg, msg


def test_the_importable_cv2_is_the_one_used():
    """Whatever cv2 is importable is the one deploy-kit uses (JetPack's apt build on a Jetson, pip's
    wheel elsewhere): _deps.opencv hands back that very module."""
    from deploy_kit._deps import _EXTRAS, opencv

    assert opencv() is cv2 and _EXTRAS["cv2"] == ("opencv", "opencv-python-headless")
