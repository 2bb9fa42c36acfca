"""Image files in and out of the runtime, and image <-> tensor conversions (numpy at import time).

PNG, JPEG and TIFF pixels are decoded by OpenCV (``cv2``: JetPack ships it on a Jetson; it reads
16-bit colour, which Pillow cannot), and JPEG and TIFF written by it. PNG is written by
:func:`_write_png` (numpy + zlib): OpenCV's fast settings, with strips of rows deflated on several
threads (~10x faster than Pillow's default; see benchmarks/bench_imageio.py). Headers, other
formats and modes, and the few files OpenCV gets wrong go through Pillow. Both are imported inside
the functions so importing the runtime is cheap.

OpenCV is whichever ``cv2`` is importable (``_deps.opencv``: JetPack's apt build or the ``opencv``
extra's pip wheel); it is not a core dependency. Without one, :func:`decode_image` and
:func:`encode_image` fail on their first call, whatever the format, with one line saying what to
install, so a folder of mixed formats never stops half-way through for want of it.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import warnings
import zlib
from dataclasses import dataclass

import numpy as np

from .._deps import opencv
from ..fsutil import atomic_target

#: Largest pixel count :func:`decode_image` accepts unless told otherwise: the size above which
#: Pillow itself refuses a file as a decompression bomb (2 * ``PIL.Image.MAX_IMAGE_PIXELS``).
DEFAULT_MAX_PIXELS = 178_956_970
#: Quality of written JPEGs (a restored photo should not lose its detail to the encoder again).
JPEG_QUALITY = 95

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601 luma weights: RGB -> gray
_GRAY16 = ("I;16", "I;16B", "I;16L", "I;16N")
# Pillow mode -> (colour channels, alpha) for the modes OpenCV decodes as they are stored
_CV_MODES = {"L": (1, False), "LA": (1, True), "RGB": (3, False), "RGBA": (3, True), **{m: (1, False) for m in _GRAY16}}
_PNG_COLOUR_TYPE = {0: (1, False), 2: (3, False), 4: (1, True), 6: (3, True)}  # IHDR -> (colour, alpha)
_CV_EXT = {"JPEG": ".jpg", "TIFF": ".tif"}
_PIL_LOCK = threading.Lock()


def preprocess(img: np.ndarray, channels: int) -> np.ndarray:
    """uint8/float HWC (or HW) image -> float32 NCHW in [0, 1] with ``channels`` channels."""
    arr = np.asarray(img)
    if arr.dtype == np.uint8:
        arr = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        arr = arr.astype(np.float32) / 65535.0
    else:
        arr = arr.astype(np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if channels != 6:
        arr = arr[..., :3]
        if arr.shape[-1] in (1, 3) and channels in (1, 3):
            arr = convert_channels(arr, channels)
    if arr.shape[-1] != channels:
        raise ValueError(f"image has {arr.shape[-1]} channels, the engine needs {channels}")
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])


def postprocess(out: np.ndarray) -> np.ndarray:
    """float NCHW output in [0, 1] -> uint8 HWC (first batch item; gray squeezed)."""
    img = np.clip(out[0].transpose(1, 2, 0), 0.0, 1.0)
    img = (img * 255.0 + 0.5).astype(np.uint8)
    return img[..., 0] if img.shape[-1] == 1 else img


@dataclass(frozen=True)
class ImageInfo:
    """What :func:`encode_image` needs to write an output the way the input was stored.

    Attributes:
        format: Pillow format name (PNG, TIFF, JPEG, ...).
        colour: 1 (gray) or 3 (RGB) colour channels.
        alpha: the file had an alpha channel (the last channel of :func:`decode_image`'s array).
        bits: 8 or 16 bits per sample.
    """

    format: str
    colour: int
    alpha: bool
    bits: int

    @property
    def channels(self) -> int:
        return self.colour + int(self.alpha)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


@contextlib.contextmanager
def _pillow_quiet():
    """Pillow with its bomb check off (the caller applies its own limit first) and its warnings
    silenced: broken metadata warns ("Corrupt EXIF data"), broken pixels raise. Both settings are
    process-wide, hence the lock (and warnings.catch_warnings is not thread-safe either)."""
    from PIL import Image

    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _open(path: str):
    """Pillow's lazy open: reads the header only."""
    from PIL import Image

    with _pillow_quiet():
        try:
            return Image.open(path)
        except Image.UnidentifiedImageError:
            raise ValueError(f"{path}: not an image file, or one too damaged to identify") from None
        except Exception as e:
            if isinstance(e, OSError) and e.errno is not None:
                raise  # missing file, permission: the OS's one-line message names the path
            raise ValueError(f"{path}: corrupt image header ({_one_line(e)})") from e


def image_header(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file, read from its header without decoding the pixels.

    Raises:
        ValueError: not an image, or a corrupt header (one line naming the file).
        OSError: the file cannot be opened.
    """
    with _open(os.fspath(path)) as im:
        return im.height, im.width


def _opencv_layout(im, path: str) -> tuple[int, bool] | None:
    """(colour, alpha) when OpenCV decodes this file as it is stored, else None (Pillow decodes it).

    OpenCV takes PNG and JPEG, and of TIFF only 16-bit colour (Pillow reads that as 8 bits; OpenCV
    premultiplies an 8-bit TIFF's alpha and drops a gray one). Not a transparent colour (tRNS),
    which OpenCV turns into alpha, nor a truncated file: OpenCV 4.x fills a JPEG's missing rows with
    gray and libpng/libtiff print to stderr, where Pillow raises one exception.
    """
    if im.mode not in _CV_MODES or "transparency" in im.info or im.format not in ("PNG", "JPEG", "MPO", "TIFF"):
        return None  # MPO: a camera JPEG with appended previews
    size = os.path.getsize(path)
    if im.format == "TIFF":
        tags = im.tag_v2
        bits = tags.get(258, 8)  # BitsPerSample: one value, or one per sample
        offsets, counts = tags.get(273) or tags.get(324), tags.get(279) or tags.get(325)  # strips or tiles
        whole = bool(offsets and counts) and max(o + n for o, n in zip(offsets, counts)) <= size
        sixteen = max(bits if isinstance(bits, tuple) else (bits,)) == 16
        return _CV_MODES[im.mode] if whole and sixteen and im.mode in ("RGB", "RGBA") else None
    with open(path, "rb") as fh:
        head = fh.read(26)
        fh.seek(max(0, size - 8))
        if not fh.read().endswith(b"IEND\xaeB`\x82" if im.format == "PNG" else b"\xff\xd9"):
            return None
    # Pillow opens a 16-bit gray+alpha PNG as RGBA; the IHDR colour type tells
    return _PNG_COLOUR_TYPE.get(head[25]) if im.format == "PNG" else _CV_MODES[im.mode]


def _cv_decode(path: str, colour: int, alpha: bool) -> np.ndarray:
    cv2 = opencv()

    try:  # imdecode of the bytes, not imread, which cannot open non-ASCII paths on Windows
        arr = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as e:
        raise ValueError(f"{path}: {_one_line(e)}") from e
    if arr is None:  # OpenCV gives no reason; Pillow's account of the damage, if it finds one
        reason = "OpenCV could not decode it"
        try:
            with _open(path) as im, _pillow_quiet():
                im.load()
        except Exception as e:
            reason = _one_line(e)
        raise ValueError(f"{path}: {reason}")
    if arr.ndim == 2:
        arr = arr[..., None]
    c = arr.shape[-1]
    if colour == 1 and c == 4:  # gray+alpha PNG comes back as BGRA with B = G = R
        arr = arr[..., [0, 3]]
    elif c in (3, 4):
        arr = cv2.cvtColor(arr, cv2.COLOR_BGR2RGB if c == 3 else cv2.COLOR_BGRA2RGBA)
    if arr.shape[-1] != colour + int(alpha):
        raise ValueError(f"{path}: OpenCV decoded {c} channels, the header announces {colour + int(alpha)}")
    return arr


def _pil_decode(im, path: str) -> tuple[np.ndarray, int, bool]:
    """(array, colour, alpha) of the modes OpenCV does not take, as :func:`decode_image`."""
    mode = im.mode
    if mode in _GRAY16:
        return np.asarray(im).astype(np.uint16)[..., None], 1, False
    if mode == "I":  # 32-bit integer container; PNG/TIFF use it for 16-bit gray
        a = np.asarray(im)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ValueError(f"{path}: 32-bit integer samples are not supported")
        return a.astype(np.uint16)[..., None], 1, False
    if mode in ("P", "PA"):
        im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
    elif mode == "1":
        im = im.convert("L")
    elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        im = im.convert("RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        raise ValueError(f"{path}: image mode {mode} is not supported (use 8/16-bit gray, RGB or RGBA)")
    arr = np.asarray(im)
    arr = arr if arr.flags.writeable else arr.copy()  # Pillow hands out read-only buffers
    return (arr[..., None] if arr.ndim == 2 else arr), (1 if im.mode in ("L", "LA") else 3), im.mode in ("LA", "RGBA")


def decode_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Decode an image file to its own sample type (uint8 or uint16), with no float conversion.

    Handles gray (1-bit, 8-bit, 16-bit), gray+alpha, palette (with or without transparency), RGB,
    RGBA, CMYK; 8- and 16-bit PNG and TIFF; JPEG; and the other formats Pillow reads.

    Args:
        path: the image file.
        max_pixels: refuse images with more pixels than this, checked on the header before any
            pixel is decoded (decompression bombs); None = :data:`DEFAULT_MAX_PIXELS`.

    Returns:
        (array of shape (H, W, C), :class:`ImageInfo`): C = info.channels in RGB(A) order with
        alpha last; dtype uint8 for 8-bit files (and palette, 1-bit, CMYK), uint16 for 16-bit ones.

    Raises:
        ValueError: not an image, a corrupt or truncated file, more pixels than ``max_pixels``, or a
            mode this function does not know (e.g. 32-bit float); always one line naming the file.
        OSError: the file cannot be opened.
        MissingDependencyError: no OpenCV (``cv2``) imports here (``_deps.opencv``).
    """
    path = os.fspath(path)
    opencv()  # one line naming what to install when there is no cv2, before any file is read
    im = _open(path)
    try:
        w, h = im.size
        limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
        if w * h > limit:
            raise ValueError(f"{path}: {w}x{h} = {w * h} pixels is more than the limit of {limit} (--max-pixels); "
                             "raise --max-pixels if the image is genuine")
        fmt, layout = im.format or "PNG", _opencv_layout(im, path)
        if layout:
            im.close()
            colour, alpha = layout
            arr = _cv_decode(path, colour, alpha)
        else:
            with _pillow_quiet():
                arr, colour, alpha = _pil_decode(im, path)
    except Exception as e:
        if isinstance(e, (ValueError, MemoryError)) or (isinstance(e, OSError) and e.errno is not None):
            raise
        raise ValueError(f"{path}: {_one_line(e)}") from e  # Pillow's truncated / broken data
    finally:
        im.close()
    if arr.shape[:2] != (h, w):
        raise ValueError(f"{path}: decoded {arr.shape[1]}x{arr.shape[0]} pixels, the header says {w}x{h}")
    return arr, ImageInfo(fmt, colour, alpha, 16 if arr.dtype == np.uint16 else 8)


# PNG as OpenCV's speed-tuned writer makes it (modules/imgcodecs/src/grfmt_png.cpp in
# https://github.com/opencv/opencv: Sub filter, zlib level 1, Z_RLE), with the rows deflated in strips on
# several threads, pigz-style: each strip is a raw deflate stream ended by a sync flush (byte-aligned,
# not final), so their concatenation is one valid stream (RFC 1951 3.2.3; Z_RLE matches only the previous
# byte, so strips lose nothing by not sharing a window), and the Adler-32 of the whole is combined from
# the strips' (RFC 1950). Measured on a 12 MP 8-bit photo (benchmarks/bench_imageio.py rows "deploy_kit"):
# the file 0.3 % smaller than OpenCV's, ~10 % less CPU than imwrite with the BGR copy it needs, and the
# strips spread over the free cores (zlib and numpy release the GIL).
_PNG_COLOUR = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> IHDR colour type (https://www.w3.org/TR/png-3/#11IHDR)
_PNG_STRIP_BYTES = 1 << 20  # filtered bytes per strip: enough to keep a thread busy, small for the cache
_PNG_THREADS = max(1, min(4, os.cpu_count() or 1))
_ADLER_BASE = 65521


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _adler32_combine(adler1: int, adler2: int, len2: int) -> int:
    """The Adler-32 of A + B from those of A and B (zlib's adler32_combine, which Python does not expose)."""
    rem = len2 % _ADLER_BASE
    sum1 = adler1 & 0xFFFF
    sum2 = (rem * sum1) % _ADLER_BASE
    sum1 = (sum1 + (adler2 & 0xFFFF) + _ADLER_BASE - 1) % _ADLER_BASE
    sum2 = (sum2 + (adler1 >> 16) + (adler2 >> 16) + _ADLER_BASE - rem) % _ADLER_BASE
    return sum1 | (sum2 << 16)


def _write_png(path: str, arr: np.ndarray) -> None:
    """Write an (H, W, C) uint8/uint16 array (C = 1..4: gray, gray+alpha, RGB, RGBA) as a PNG file."""
    h, w, c = arr.shape
    sample = arr.dtype.itemsize
    bpp = c * sample
    per_strip = max(1, _PNG_STRIP_BYTES // (w * bpp + 1))
    bounds = [(r, min(h, r + per_strip)) for r in range(0, h, per_strip)]

    def strip(i: int) -> tuple[bytes, int, int]:
        r0, r1 = bounds[i]
        # PNG stores 16-bit samples big-endian
        src = np.ascontiguousarray(arr[r0:r1], dtype=">u2" if sample == 2 else np.uint8)
        src = src.reshape(r1 - r0, -1).view(np.uint8)
        out = np.empty((r1 - r0, w * bpp + 1), np.uint8)
        out[:, 0] = 1  # filter type Sub: each byte minus the byte one pixel to its left (mod 256)
        out[:, 1:bpp + 1] = src[:, :bpp]
        np.subtract(src[:, bpp:], src[:, :-bpp], out=out[:, bpp + 1:])
        deflate = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
        body = deflate.compress(out) + deflate.flush(zlib.Z_FINISH if i == len(bounds) - 1 else zlib.Z_SYNC_FLUSH)
        return body, zlib.adler32(out), out.size

    with open(path, "wb") as fh:
        ihdr = struct.pack(">IIBBBBB", w, h, 8 * sample, _PNG_COLOUR[c], 0, 0, 0)  # no interlace
        fh.write(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr))
        fh.write(_png_chunk(b"IDAT", b"\x78\x01"))  # zlib header: deflate, 32 KiB window, "fastest" level
        adler = 1
        if len(bounds) == 1 or _PNG_THREADS == 1:
            parts = map(strip, range(len(bounds)))
            pool = None
        else:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=_PNG_THREADS, thread_name_prefix="deploy-kit-png")
            parts = pool.map(strip, range(len(bounds)))  # zlib and numpy release the GIL
        try:
            for body, a, n in parts:  # in order, each written as it is ready
                adler = _adler32_combine(adler, a, n)
                fh.write(_png_chunk(b"IDAT", body))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        fh.write(_png_chunk(b"IDAT", struct.pack(">I", adler)) + _png_chunk(b"IEND", b""))


def encode_image(path: str | os.PathLike, arr: np.ndarray, info: ImageInfo) -> str:
    """Write an HWC uint8/uint16 image as ``info`` describes: format, gray/RGB, alpha, bit depth.

    The format follows the file extension when Pillow knows it (else ``info.format``). PNG is
    written with OpenCV's speed-tuned settings (zlib level 1, Z_RLE, Sub filter) by :func:`_write_png`,
    its strips deflated on several threads: ~10x faster than Pillow's level 6 for a 12 MP photo, ~5%
    larger. JPEG at quality :data:`JPEG_QUALITY`; TIFF
    uncompressed. Written to a temp file and renamed, so a failure or a kill leaves no partial file.

    Args:
        path: the output file.
        arr: (H, W, info.channels) (or (H, W) for gray), RGB(A) order with alpha last; uint8 for
            8-bit and uint16 for 16-bit output.
        info: from :func:`decode_image`.

    Returns:
        ``path``.

    Raises:
        ValueError: wrong dtype or channel count, or a format that cannot hold the image (alpha or
            16 bits in JPEG; 16-bit gray+alpha or RGBA outside PNG; 16-bit RGB outside PNG/TIFF).
        MissingDependencyError: no OpenCV (``cv2``) imports here (``_deps.opencv``).
    """
    from PIL import Image

    cv2 = opencv()  # before any check: without cv2 no format is written (one line naming what to install)
    path = os.fspath(path)
    arr = np.asarray(arr)
    arr = arr[..., None] if arr.ndim == 2 else arr
    want = np.dtype(np.uint16 if info.bits == 16 else np.uint8)
    if arr.dtype != want or arr.ndim != 3 or arr.shape[-1] != info.channels:
        raise ValueError(f"{path}: expected {want.name} pixels of shape (H, W, {info.channels}) for {info}, "
                         f"got {arr.dtype} {arr.shape}")
    fmt = Image.registered_extensions().get(os.path.splitext(path)[1].lower(), info.format)
    if fmt == "JPEG" and (info.alpha or info.bits != 8):
        what = "alpha" if info.alpha else f"{info.bits}-bit samples"
        raise ValueError(f"{path}: JPEG cannot hold {what}; write a .png")
    c = arr.shape[-1]
    # PNG of any channel count and depth: _write_png. OpenCV: JPEG of 1, 3 or 4 channels, and 16-bit RGB
    # TIFF, which Pillow cannot write (an RGBA TIFF from OpenCV lacks the tag marking alpha); Pillow the rest
    use_cv = (fmt == "JPEG" and c != 2) or (fmt == "TIFF" and info.bits == 16 and c == 3)
    if info.bits == 16 and c > 1 and not (use_cv or fmt == "PNG"):
        raise ValueError(f"{path}: 16-bit {'gray+alpha' if c == 2 else 'colour'} is written as PNG only "
                         f"(16-bit RGB also as TIFF); got {fmt}")
    with atomic_target(path) as tmp:
        if fmt == "PNG":
            _write_png(tmp, arr)
        elif use_cv:
            bgr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR if c == 3 else cv2.COLOR_RGBA2BGRA) if c >= 3 else arr
            params = {"JPEG": [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY], "TIFF": [cv2.IMWRITE_TIFF_COMPRESSION, 1]}[fmt]
            # imwrite picks the encoder by extension, which tmp (".part") lacks; writing straight to a
            # file is faster than imencode to memory and a write
            side = tmp + _CV_EXT[fmt]
            try:
                if not cv2.imwrite(side, bgr, params):
                    raise ValueError(f"{path}: OpenCV could not write a {fmt} image of {arr.dtype} {arr.shape}")
                os.replace(side, tmp)
            except cv2.error as e:
                raise ValueError(f"{path}: {_one_line(e)}") from e
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(side)
        else:
            img = Image.fromarray(arr[..., 0] if c == 1 else arr)
            kw = {"JPEG": {"quality": JPEG_QUALITY}}.get(fmt, {})
            try:
                img.save(tmp, format=fmt, **kw)
            except (OSError, KeyError, ValueError) as e:
                raise ValueError(f"{path}: {fmt} cannot hold a {img.mode} image ({_one_line(e)})") from e
    return path


def read_image(path: str | os.PathLike, *, max_pixels: int | None = None) -> tuple[np.ndarray, ImageInfo]:
    """Read an image file as float32 HWC in [0, 1]: :func:`decode_image`, scaled (same modes and errors).

    Returns:
        (array of shape (H, W, C) with C = info.channels, :class:`ImageInfo`).

    Raises:
        ValueError: see :func:`decode_image`.
        OSError: the file cannot be opened.
    """
    arr, info = decode_image(path, max_pixels=max_pixels)
    out = arr.astype(np.float32)
    out /= 65535.0 if info.bits == 16 else 255.0
    return out, info


def to_model_channels(arr: np.ndarray, channels: int, alpha: bool | None = None):
    """Split alpha off an HWC image and convert its colour to the model's channel count.

    Args:
        arr: HWC float image from :func:`read_image` (C = 1, 2, 3 or 4; 2 and 4 carry alpha).
        channels: the model's input channels (1 or 3).
        alpha: whether the last channel is alpha (default: C is 2 or 4).

    Returns:
        (float32 HWC with ``channels`` channels, alpha as float32 HW1 or None).

    Raises:
        ValueError: a channel count that cannot be converted.
    """
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    c = arr.shape[-1]
    has_alpha = c in (2, 4) if alpha is None else alpha
    a = arr[..., -1:].copy() if has_alpha else None
    colour = arr[..., :-1] if has_alpha else arr
    return convert_channels(colour, channels), a


def convert_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """An HWC (or HW) float image with 1 or 3 colour channels as ``channels`` (1 or 3) channels:
    gray -> RGB repeats it, RGB -> gray is :data:`LUMA`. The one place deploy-kit converts colour.

    Raises:
        ValueError: a channel count that cannot be converted.
    """
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    c = img.shape[-1]
    if c == channels:
        return np.ascontiguousarray(img)
    if c == 1 and channels == 3:
        return np.repeat(img, 3, axis=-1)
    if c == 3 and channels == 1:
        return (img @ LUMA.astype(img.dtype if img.dtype.kind == "f" else np.float32))[..., None]
    raise ValueError(f"cannot convert {c} colour channels to {channels}")


def write_image(path: str, arr: np.ndarray, info: ImageInfo, alpha: np.ndarray | None = None) -> str:
    """Write an HWC float image in [0, 1] as the input was stored, through :func:`encode_image`.

    Args:
        arr: HWC (or HW) float output; its colour is converted to ``info.colour`` (RGB -> luma for a
            gray input, gray -> RGB for a colour one).
        info: from :func:`read_image`.
        alpha: HW1/HW alpha to re-attach (from :func:`to_model_channels`); required when the input
            had alpha, unless ``arr`` already carries it as its last channel.

    Returns:
        ``path``.

    Raises:
        ValueError: alpha missing for an input that had one, or a format that cannot hold the
            image (see :func:`encode_image`).
    """
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if info.alpha and alpha is None and arr.shape[-1] == info.channels:
        arr, alpha = arr[..., :-1], arr[..., -1:]
    out = convert_channels(arr, info.colour)
    if info.alpha:
        if alpha is None:
            raise ValueError("the input had an alpha channel; pass it to write_image (from to_model_channels)")
        a = np.asarray(alpha, dtype=np.float32)
        out = np.concatenate([out, a if a.ndim == 3 else a[..., None]], axis=-1)
    top = 65535.0 if info.bits == 16 else 255.0
    q = np.clip(out, 0.0, 1.0) * top + 0.5
    return encode_image(path, q.astype(np.uint16 if info.bits == 16 else np.uint8), info)
