"""Image <-> tensor conversions shared by parity, calibration and the runtime (numpy only)."""

from __future__ import annotations

import os

import numpy as np


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
    arr = arr[..., :3] if channels != 6 else arr
    if channels == 1 and arr.shape[-1] == 3:
        arr = arr @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        arr = arr[..., None]
    elif channels == 3 and arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    if arr.shape[-1] != channels:
        raise ValueError(f"image has {arr.shape[-1]} channels, the engine needs {channels}")
    return np.ascontiguousarray(arr.transpose(2, 0, 1)[None])


def postprocess(out: np.ndarray) -> np.ndarray:
    """float NCHW output in [0, 1] -> uint8 HWC (first batch item; gray squeezed)."""
    img = np.clip(out[0].transpose(1, 2, 0), 0.0, 1.0)
    img = (img * 255.0 + 0.5).astype(np.uint8)
    return img[..., 0] if img.shape[-1] == 1 else img


# --- image files (numpy + Pillow) --------------------------------------------------------------
# Pillow reads and writes 8-bit L/LA/RGB/RGBA and 16-bit gray (I;16), but it reduces 16-bit colour
# PNGs to 8 bits on read and cannot write them; those go through the small PNG codec below.

import struct as _struct
import zlib as _zlib
from dataclasses import dataclass as _dataclass

_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_COLOUR = {0: 1, 2: 3, 4: 2, 6: 4}  # PNG colour type -> samples per pixel
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@_dataclass(frozen=True)
class ImageInfo:
    """What :func:`write_image` needs to write an output the way the input was stored.

    Attributes:
        format: Pillow format name (PNG, TIFF, JPEG, ...).
        colour: 1 (gray) or 3 (RGB) colour channels.
        alpha: the file had an alpha channel (returned as the last channel by :func:`read_image`).
        bits: 8 or 16 bits per sample.
    """

    format: str
    colour: int
    alpha: bool
    bits: int

    @property
    def channels(self) -> int:
        return self.colour + int(self.alpha)


def _png_header(path: str):
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or head[:8] != _PNG_SIG or head[12:16] != b"IHDR":
        return None
    w, h, depth, ctype, _, _, interlace = _struct.unpack(">IIBBBBB", head[16:29])
    return w, h, depth, ctype, interlace


def _unfilter(raw: bytes, h: int, w: int, bpp: int) -> np.ndarray:
    """Undo PNG row filters (None/Sub/Up/Average/Paeth) -> (h, w * bpp) uint8."""
    stride = w * bpp
    data = np.frombuffer(raw, dtype=np.uint8)
    if data.size < h * (stride + 1):
        raise ValueError("truncated PNG image data")
    rows = data[: h * (stride + 1)].reshape(h, stride + 1)
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(h):
        ftype, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 1:  # Sub: running sum per byte position within a pixel
            cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) % 256
        elif ftype == 2:
            cur = (line + prev) % 256
        elif ftype in (3, 4):  # Average / Paeth depend on the decoded left pixel: one pixel at a time
            cur = np.zeros(stride, dtype=np.int32)
            left = np.zeros(bpp, dtype=np.int32)
            upleft = np.zeros(bpp, dtype=np.int32)
            for i in range(0, stride, bpp):
                up = prev[i:i + bpp]
                if ftype == 3:
                    v = (line[i:i + bpp] + (left + up) // 2) % 256
                else:
                    p = left + up - upleft
                    pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
                    pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
                    v = (line[i:i + bpp] + pred) % 256
                cur[i:i + bpp] = v
                left, upleft = v, up
        else:
            raise ValueError(f"bad PNG filter type {ftype}")
        out[y] = cur
        prev = cur
    return out


def _read_png16(path: str, w: int, h: int, ctype: int) -> np.ndarray:
    chunks = []
    with open(path, "rb") as fh:
        fh.read(8)
        while True:
            head = fh.read(8)
            if len(head) < 8:
                break
            n, kind = _struct.unpack(">I4s", head)
            body = fh.read(n)
            fh.read(4)
            if kind == b"IDAT":
                chunks.append(body)
            elif kind == b"IEND":
                break
    spp = _PNG_COLOUR[ctype]
    flat = _unfilter(_zlib.decompress(b"".join(chunks)), h, w, 2 * spp)
    return flat.view(">u2").reshape(h, w, spp).astype(np.uint16)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return _struct.pack(">I", len(body)) + kind + body + _struct.pack(">I", _zlib.crc32(kind + body) & 0xFFFFFFFF)


def _write_png16(path: str, arr: np.ndarray) -> None:
    """16-bit PNG (gray, gray+alpha, RGB or RGBA), filter 0, zlib level 6."""
    h, w, spp = arr.shape
    ctype = {1: 0, 2: 4, 3: 2, 4: 6}[spp]
    rows = np.ascontiguousarray(arr.astype(">u2")).reshape(h, w * spp).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    with open(path, "wb") as fh:
        fh.write(_PNG_SIG)
        fh.write(_png_chunk(b"IHDR", _struct.pack(">IIBBBBB", w, h, 16, ctype, 0, 0, 0)))
        fh.write(_png_chunk(b"IDAT", _zlib.compress(raw, 6)))
        fh.write(_png_chunk(b"IEND", b""))


def read_image(path: str):
    """Read an image file as float32 HWC in [0, 1] (alpha, if any, as the last channel).

    Handles gray (1-bit, L, I;16), gray+alpha, palette, RGB, RGBA, CMYK; 8- and 16-bit PNG and
    TIFF; JPEG.

    Returns:
        (array of shape (H, W, C) with C = info.channels, :class:`ImageInfo`).

    Raises:
        ValueError: a mode this function does not know (e.g. 32-bit float images).
        OSError: not an image file Pillow can open.
    """
    from PIL import Image

    png = _png_header(path)
    if png is not None and png[2] == 16 and png[3] in (2, 4, 6) and png[4] == 0:
        w, h, _, ctype, _ = png
        arr = _read_png16(path, w, h, ctype)
        spp = _PNG_COLOUR[ctype]
        info = ImageInfo("PNG", 1 if spp <= 2 else 3, spp in (2, 4), 16)
        return arr.astype(np.float32) / 65535.0, info
    with Image.open(path) as im:
        fmt = im.format or "PNG"
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            arr = np.asarray(im).astype(np.float32) / 65535.0
            return arr[..., None], ImageInfo(fmt, 1, False, 16)
        if mode == "I":  # 32-bit integer container; PNG/TIFF use it for 16-bit gray
            a = np.asarray(im)
            if a.min() < 0 or a.max() > 65535:
                raise ValueError(f"{path}: 32-bit integer samples are not supported")
            return (a.astype(np.float32) / 65535.0)[..., None], ImageInfo(fmt, 1, False, 16)
        if mode == "P" or mode == "PA":
            im = im.convert("RGBA" if ("transparency" in im.info or mode == "PA") else "RGB")
        elif mode == "1":
            im = im.convert("L")
        elif mode in ("CMYK", "YCbCr", "LAB", "HSV"):
            im = im.convert("RGB")
        elif mode not in ("L", "LA", "RGB", "RGBA"):
            raise ValueError(f"{path}: image mode {mode} is not supported (use 8/16-bit gray, RGB or RGBA)")
        arr = np.asarray(im).astype(np.float32) / 255.0
        mode = im.mode
    if arr.ndim == 2:
        arr = arr[..., None]
    return arr, ImageInfo(fmt, 1 if mode in ("L", "LA") else 3, mode in ("LA", "RGBA"), 8)


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
    return _convert_colour(colour, channels), a


def _convert_colour(colour: np.ndarray, channels: int) -> np.ndarray:
    c = colour.shape[-1]
    if c == channels:
        return np.ascontiguousarray(colour)
    if c == 1 and channels == 3:
        return np.repeat(colour, 3, axis=-1)
    if c == 3 and channels == 1:
        return (colour @ _LUMA)[..., None]
    raise ValueError(f"cannot convert {c} colour channels to {channels}")


def write_image(path: str, arr: np.ndarray, info: ImageInfo, alpha: np.ndarray | None = None) -> str:
    """Write an HWC float image in [0, 1] as the input was stored: format, gray/RGB, alpha, bit depth.

    Args:
        arr: HWC (or HW) float output; its colour is converted to ``info.colour`` (RGB -> luma for a
            gray input, gray -> RGB for a colour one).
        info: from :func:`read_image`.
        alpha: HW1/HW alpha to re-attach (from :func:`to_model_channels`); required when the input
            had alpha, unless ``arr`` already carries it as its last channel.

    The format follows the file extension when Pillow knows it (else ``info.format``); written to a
    temp file and renamed, so a failure leaves no partial file.

    Raises:
        ValueError: alpha missing for an input that had one, or a format that cannot hold the
            image (alpha or 16 bits in JPEG).
    """
    from PIL import Image

    from ..fsutil import atomic_target

    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[..., None]
    if info.alpha and alpha is None and arr.shape[-1] == info.channels:
        arr, alpha = arr[..., :-1], arr[..., -1:]
    out = _convert_colour(arr, info.colour)
    if info.alpha:
        if alpha is None:
            raise ValueError("the input had an alpha channel; pass it to write_image (from to_model_channels)")
        a = np.asarray(alpha, dtype=np.float32)
        out = np.concatenate([out, a if a.ndim == 3 else a[..., None]], axis=-1)
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext, info.format)
    if fmt == "JPEG" and (info.alpha or info.bits != 8):
        raise ValueError(f"JPEG cannot hold {'alpha' if info.alpha else f'{info.bits}-bit samples'}; write a .png")
    top = 65535.0 if info.bits == 16 else 255.0
    q = np.clip(out, 0.0, 1.0) * top + 0.5
    q = q.astype(np.uint16 if info.bits == 16 else np.uint8)
    with atomic_target(path) as tmp:
        if info.bits == 16 and q.shape[-1] > 1:
            if fmt != "PNG":
                raise ValueError(f"16-bit colour is written as PNG only; got {fmt} for {path}")
            _write_png16(tmp, q)
        elif info.bits == 16:
            Image.fromarray(q[..., 0]).save(tmp, format=fmt)
        else:
            Image.fromarray(q[..., 0] if q.shape[-1] == 1 else q).save(tmp, format=fmt)
    return path
