"""Image decode/encode speed on a 12-megapixel photo: Pillow, OpenCV, imagecodecs, the old PNG codec.

The runtime restores whole camera photos, so reading and writing them is part of every request.
This script measures, on one 4000x3000 photo-like image:

  (a) decode and encode wall time (median of ``--repeats`` runs, file on local disk) and file size
      for PNG 8-bit RGB, PNG 16-bit RGB, JPEG quality 95 and TIFF 16-bit RGB, per library and
      setting (PNG at zlib level 1 and 6, so libraries compare at equal levels as well as at their
      defaults: Pillow 6, OpenCV 1, imagecodecs 6 unless told);
  (b) whether a library releases the GIL: the same job twice in a row vs in two threads at once
      (speed-up ~2 on 2 free cores = the GIL is released; ~1 = it is held).

OpenCV works in BGR order; its times include the RGB<->BGR swap (cv2.cvtColor) the runtime needs.
Decoded pixels are compared with the source for every lossless codec (a mismatch aborts the run).

The test image: scikit-image's bundled sample photographs (astronaut, coffee, chelsea, motorcycle;
the same ones deploy_kit.data.samples uses) resized bicubically to 2000x1500 each and tiled 2x2,
plus mild Gaussian sensor noise (sigma 2/255). The 16-bit version is resized in float and
quantised to 16 bits before the same noise, so its low bits are noisy as a real sensor's are.
Without scikit-image a smooth synthetic scene (gradients, discs, a sine pattern) stands in.

Usage: python benchmarks/bench_imageio.py [--repeats 3] [--size 4000x3000] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import struct
import sys
import tempfile
import threading
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import median_time  # noqa: E402

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "motorcycle_left.png")


# --- the test image ------------------------------------------------------------------------------

def _resize_float(img: np.ndarray, h: int, w: int) -> np.ndarray:
    from PIL import Image

    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c])).resize((w, h), Image.BICUBIC)) for c in range(3)]
    return np.stack(chans, axis=-1)


def photo(h: int, w: int) -> tuple[np.ndarray, str]:
    """(float32 HWC RGB in [0, 1] without noise, description)."""
    from PIL import Image

    try:
        import skimage.data

        d = os.path.dirname(skimage.data.__file__)
        tiles = []
        for name in PHOTOS:
            with Image.open(os.path.join(d, name)) as im:
                src = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
            tiles.append(_resize_float(src, h // 2, w // 2))
        top, bottom = np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)
        img = np.concatenate([top, bottom], axis=0)
        return np.clip(img, 0.0, 1.0), "4 scikit-image sample photos, bicubic-resized and tiled 2x2"
    except (ImportError, OSError):
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        img = np.stack([x / w, y / h, 0.5 + 0.25 * np.sin(x / 37.0) * np.cos(y / 53.0)], axis=-1)
        for cy, cx, r, col in ((0.3, 0.3, 0.15, (0.9, 0.2, 0.1)), (0.6, 0.7, 0.2, (0.1, 0.3, 0.8))):
            disc = (y / h - cy) ** 2 + (x / w - cx) ** 2 < r * r
            img[disc] = col
        return img, "synthetic scene (gradients, discs, sine pattern)"


def quantise(img: np.ndarray, bits: int, rng) -> np.ndarray:
    top = 255.0 if bits == 8 else 65535.0
    noisy = img + rng.normal(0.0, 2.0 / 255.0, img.shape).astype(np.float32)  # mild sensor noise
    return (np.clip(noisy, 0.0, 1.0) * top + 0.5).astype(np.uint8 if bits == 8 else np.uint16)


# --- the hand-written 16-bit PNG codec deploy_kit/runtime/imageio.py carried before (for comparison)

def _old_unfilter(raw: bytes, h: int, w: int, bpp: int, rows_limit: int | None = None) -> np.ndarray:
    stride = w * bpp
    rows = np.frombuffer(raw, dtype=np.uint8)[: h * (stride + 1)].reshape(h, stride + 1)
    n = h if rows_limit is None else rows_limit
    out = np.zeros((n, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(n):
        ftype, line = rows[y, 0], rows[y, 1:].astype(np.int32)
        if ftype == 0:
            cur = line
        elif ftype == 1:
            cur = np.cumsum(line.reshape(w, bpp), axis=0).reshape(-1) % 256
        elif ftype == 2:
            cur = (line + prev) % 256
        else:  # Average / Paeth: one pixel at a time, as the old code did
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
        out[y] = cur
        prev = cur
    return out


def _old_idat(path: str) -> tuple[int, int, bytes]:
    chunks, w, h = [], 0, 0
    with open(path, "rb") as fh:
        fh.read(8)
        while True:
            head = fh.read(8)
            if len(head) < 8:
                break
            n, kind = struct.unpack(">I4s", head)
            body = fh.read(n)
            fh.read(4)
            if kind == b"IHDR":
                w, h = struct.unpack(">II", body[:8])
            elif kind == b"IDAT":
                chunks.append(body)
            elif kind == b"IEND":
                break
    return h, w, zlib.decompress(b"".join(chunks))


def old_read_png16(path: str, rows_limit: int | None = None) -> np.ndarray:
    h, w, raw = _old_idat(path)
    flat = _old_unfilter(raw, h, w, 6, rows_limit)
    return flat.view(">u2").reshape(flat.shape[0], w, 3).astype(np.uint16)


def old_write_png16(path: str, arr: np.ndarray) -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    h, w, spp = arr.shape
    rows = np.ascontiguousarray(arr.astype(">u2")).reshape(h, w * spp).view(np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], axis=1).tobytes()
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)))
        fh.write(chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


# --- the contenders ------------------------------------------------------------------------------

def _read_bytes(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _write_bytes(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def pil_decode(path):
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im)


def pil_encode(path, arr, **kw):
    from PIL import Image

    Image.fromarray(arr).save(path, **kw)


def cv_decode(path):
    import cv2

    a = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    return cv2.cvtColor(a, cv2.COLOR_BGR2RGB)


def cv_encode(path, arr, params=()):
    import cv2

    if not cv2.imwrite(path, cv2.cvtColor(arr, cv2.COLOR_RGB2BGR), list(params)):
        raise OSError(f"cv2.imwrite failed for {path}")


def ic_decode(kind):
    import imagecodecs

    fn = getattr(imagecodecs, f"{kind}_decode")
    return lambda path: fn(_read_bytes(path))


def ic_encode(kind, **kw):
    import imagecodecs

    fn = getattr(imagecodecs, f"{kind}_encode")
    return lambda path, arr: _write_bytes(path, fn(arr, **kw))


def contenders():
    """(format, bits, library, setting, ext, encode(path, arr) or None, decode(path) or None, lossless)."""
    import cv2

    P, S, T = cv2.IMWRITE_PNG_COMPRESSION, cv2.IMWRITE_PNG_STRATEGY, cv2.IMWRITE_TIFF_COMPRESSION
    rows = []
    for bits in (8, 16):
        fmt = f"PNG {bits}-bit RGB"
        if bits == 8:
            rows.append((fmt, bits, "Pillow", "level 6 (default)", ".png", pil_encode, pil_decode, True))
            rows.append((fmt, bits, "Pillow", "level 1", ".png", lambda p, a: pil_encode(p, a, compress_level=1), pil_decode, True))
        else:
            rows.append((fmt, bits, "old own codec", "level 6, filter None", ".png", old_write_png16, old_read_png16, True))
        rows.append((fmt, bits, "OpenCV", "level 1 (default)", ".png", cv_encode, cv_decode, True))
        rows.append((fmt, bits, "OpenCV", "level 6", ".png", lambda p, a: cv_encode(p, a, (P, 6)), cv_decode, True))
        rows.append((fmt, bits, "imagecodecs png", "level 1", ".png", ic_encode("png", level=1), ic_decode("png"), True))
        rows.append((fmt, bits, "imagecodecs png", "level 6", ".png", ic_encode("png", level=6), ic_decode("png"), True))
        rows.append((fmt, bits, "OpenCV", "level 6, zlib default strategy", ".png",
                     lambda p, a: cv_encode(p, a, (P, 6, S, cv2.IMWRITE_PNG_STRATEGY_DEFAULT)), cv_decode, True))
        if bits == 8:  # libspng decodes 16-bit colour only to RGBA16, so it is left out there
            rows.append((fmt, bits, "imagecodecs spng", "default", ".png", ic_encode("spng"), ic_decode("spng"), True))
    rows.append(("JPEG q95 RGB", 8, "Pillow", "4:2:0", ".jpg", lambda p, a: pil_encode(p, a, quality=95), pil_decode, False))
    rows.append(("JPEG q95 RGB", 8, "OpenCV", "4:2:0", ".jpg", lambda p, a: cv_encode(p, a, (cv2.IMWRITE_JPEG_QUALITY, 95)), cv_decode, False))
    rows.append(("JPEG q95 RGB", 8, "imagecodecs jpeg8", "default", ".jpg", ic_encode("jpeg8", level=95), ic_decode("jpeg8"), False))
    fmt = "TIFF 16-bit RGB"
    rows.append((fmt, 16, "OpenCV", "LZW (default)", ".tif", cv_encode, cv_decode, True))
    rows.append((fmt, 16, "OpenCV", "none", ".tif", lambda p, a: cv_encode(p, a, (T, 1)), cv_decode, True))
    rows.append((fmt, 16, "OpenCV", "deflate", ".tif", lambda p, a: cv_encode(p, a, (T, 8)), cv_decode, True))
    rows.append((fmt, 16, "imagecodecs tiff", "none", ".tif", ic_encode("tiff"), ic_decode("tiff"), True))
    return rows


# --- measurement ---------------------------------------------------------------------------------

def in_two_threads(fn) -> float:
    """Wall time of ``fn()`` run in two threads at once."""
    errors = []

    def job():
        try:
            fn()
        except BaseException as e:  # re-raised below so a failing codec is not timed as fast
            errors.append(e)

    threads = [threading.Thread(target=job) for _ in range(2)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - t


def gil_speedup(fn, repeats: int) -> tuple[float, float]:
    """(two in a row, two in threads) median seconds."""
    seq = median_time(lambda: (fn(), fn()), repeats, warmup=0)
    par = sorted(in_two_threads(fn) for _ in range(repeats))[repeats // 2]
    return seq, par


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT")
    ap.add_argument("--work", default=None, help="folder for the files (default: a temp folder)")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.size.lower().split("x"))
    import cv2
    import imagecodecs
    import PIL

    work = args.work or tempfile.mkdtemp(prefix="bench_imageio.")
    os.makedirs(work, exist_ok=True)
    t0 = time.perf_counter()
    base, what = photo(h, w)
    rng = np.random.default_rng(0)
    imgs = {8: quantise(base, 8, rng), 16: quantise(base, 16, rng)}
    del base
    print(f"image: {w}x{h} RGB, {what}, + Gaussian noise sigma 2/255; {os.cpu_count()} CPUs; "
          f"Pillow {PIL.__version__}, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), "
          f"imagecodecs {imagecodecs.__version__}, numpy {np.__version__}; median of {args.repeats}\n")

    results, files = [], {}
    for fmt, bits, lib, setting, ext, enc, dec, lossless in contenders():
        src = imgs[bits]
        path = os.path.join(work, f"{lib}-{setting}-{bits}{ext}".replace(" ", "_").replace("(", "").replace(")", "").replace(",", ""))
        t_enc = median_time(lambda: enc(path, src), args.repeats, warmup=0)
        size = os.path.getsize(path)
        back = dec(path)
        if back.dtype != src.dtype or back.shape != src.shape or (lossless and not np.array_equal(back, src)):
            raise SystemExit(f"{lib} {setting} {fmt}: decoded {back.shape} {back.dtype} differs from the source")
        t_dec = median_time(lambda: dec(path), args.repeats, warmup=0)
        results.append((fmt, lib, setting, t_dec, t_enc, size, src.nbytes))
        files[(fmt, lib, setting)] = path
        print(f"  {fmt:16s} {lib:17s} {setting:22s} decode {t_dec * 1e3:7.0f} ms  encode {t_enc * 1e3:7.0f} ms  "
              f"{size / 1e6:6.1f} MB", flush=True)

    # the old codec on a PNG it did not write: libpng/Pillow pick Paeth/Average filters per row,
    # which the old decoder undid one pixel at a time in Python; time 12 rows and scale up
    other = files[("PNG 16-bit RGB", "OpenCV", "level 1 (default)")]
    n_rows = 12
    t_rows = median_time(lambda: old_read_png16(other, rows_limit=n_rows), 1, warmup=0)
    old_foreign = t_rows * h / n_rows

    print(f"\n## (a) {w}x{h} RGB decode / encode (ms, median of {args.repeats}) and file size\n")
    print("| format | library | setting | decode ms | encode ms | size MB | % of raw |")
    print("|---|---|---|---:|---:|---:|---:|")
    for fmt, lib, setting, t_dec, t_enc, size, raw in results:
        print(f"| {fmt} | {lib} | {setting} | {t_dec * 1e3:.0f} | {t_enc * 1e3:.0f} | {size / 1e6:.1f} | {100 * size / raw:.0f} |")
    print(f"| PNG 16-bit RGB | old own codec | decoding OpenCV's file (Paeth rows) | ~{old_foreign * 1e3:.0f} "
          f"(est. from {n_rows} rows) | - | - | - |")
    for fmt, ext in (("PNG 16-bit RGB", ".png"), ("TIFF 16-bit RGB", ".tif")):
        got = pil_decode(files[(fmt, "OpenCV", "none" if ext == ".tif" else "level 1 (default)")])
        print(f"| {fmt} | Pillow | - | n/a: gives {got.dtype} {got.shape[-1]} channels | n/a: cannot write 16-bit colour | - | - |")

    print("\n## (b) GIL: the same job twice in a row vs in two threads at once (speed-up ~2 = releases the GIL)\n")
    print("| job | library | 2 in a row ms | 2 threads ms | speed-up |")
    print("|---|---|---:|---:|---:|")
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # OpenCV's own pool would parallelise cvtColor and blur the GIL measure
    gil_jobs = [
        ("PNG 8-bit RGB", "Pillow", "level 1"), ("PNG 8-bit RGB", "OpenCV", "level 1 (default)"),
        ("PNG 8-bit RGB", "imagecodecs png", "level 1"), ("PNG 16-bit RGB", "old own codec", "level 6, filter None"),
        ("PNG 16-bit RGB", "OpenCV", "level 1 (default)"), ("PNG 16-bit RGB", "imagecodecs png", "level 1"),
        ("JPEG q95 RGB", "Pillow", "4:2:0"), ("JPEG q95 RGB", "OpenCV", "4:2:0"), ("JPEG q95 RGB", "imagecodecs jpeg8", "default"),
    ]
    by_key = {(r[0], r[2], r[3]): r for r in contenders()}
    try:
        for key in gil_jobs:
            fmt, bits, lib, setting, ext, enc, dec, _ = by_key[key]
            path, src = files[key], imgs[bits]
            seq, par = gil_speedup(lambda: dec(path), args.repeats)
            print(f"| decode {fmt} | {lib} | {seq * 1e3:.0f} | {par * 1e3:.0f} | {seq / par:.2f}x |", flush=True)
            # each thread writes a file of its own
            seq, par = gil_speedup(lambda: enc(f"{path}.{threading.get_ident()}{ext}", src), args.repeats)
            print(f"| encode {fmt} | {lib} | {seq * 1e3:.0f} | {par * 1e3:.0f} | {seq / par:.2f}x |", flush=True)
    finally:
        cv2.setNumThreads(cv_threads)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; files in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
