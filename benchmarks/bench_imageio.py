"""Image decode/encode speed on a 12-megapixel photo: Pillow, OpenCV, imagecodecs, the old PNG codec.

The runtime restores whole camera photos, so reading and writing them is part of every request.
This script measures, on one 4000x3000 photo-like image:

  (a) decode and encode wall time (median of ``--repeats`` runs, file on local disk) and file size
      for PNG 8-bit RGB, PNG 16-bit RGB, JPEG quality 95 and TIFF 16-bit RGB, per library and
      setting. PNG is written at zlib level 1 and 6 by every library, so they compare at equal
      levels as well as at their defaults (Pillow: 6; OpenCV: 1 with zlib's Z_RLE strategy).
  (b) whether a library releases the GIL: the same job twice in a row vs in two threads at once,
      best of ``--repeats`` (speed-up ~2 on 2 free cores = the GIL is released; ~1 = it is held).
      Two reference rows show both cases on the machine as it is at the time: zlib.compress
      (releases the GIL) and a pure-Python loop (holds it). The load average is printed at the
      start and the end, since other processes on a shared machine distort every figure.

OpenCV works in BGR order; its times include the RGB<->BGR swap (cv2.cvtColor) the runtime needs.
Decoded pixels are compared with the source for every lossless codec (a mismatch aborts the run).

The test image: scikit-image's bundled sample photographs (astronaut, coffee, chelsea, motorcycle;
the same ones deploy_kit.data.samples uses) resized bicubically to 2000x1500 each and tiled 2x2,
plus mild Gaussian sensor noise (sigma 2/255), quantised to 8 or 16 bits (the 16-bit one keeps
noisy low bits, as a real sensor's do). Photo-like content matters: PNG's size and speed depend on
how well it compresses, and pure noise would not. Without scikit-image a smooth synthetic scene
(gradients, discs, a sine pattern) stands in. On 2 cores the whole run takes about 4 minutes.

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


def timed(fn, repeats: int) -> tuple[float, float]:
    """(median wall s, median CPU s of this process) of ``fn()``. On a shared machine the CPU time
    is the steadier figure: other processes lengthen the wall time, not the CPU time a codec needs."""
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return sorted(walls)[repeats // 2], sorted(cpus)[repeats // 2]

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


def dk_codec(fmt: str, bits: int):
    """deploy_kit.runtime.imageio's decode_image / encode_image (what the runtime calls)."""
    from deploy_kit.runtime.imageio import ImageInfo, decode_image, encode_image

    info = ImageInfo(fmt, 3, False, bits)
    return (lambda path, arr: encode_image(path, arr, info)), (lambda path: decode_image(path)[0])


def dk_png_one_thread(bits: int):
    """encode_image's PNG writer with its strips deflated on one thread (what its threads add)."""
    from deploy_kit.runtime import imageio

    enc, dec = dk_codec("PNG", bits)

    def one(path, arr):
        saved, imageio._PNG_THREADS = imageio._PNG_THREADS, 1
        try:
            enc(path, arr)
        finally:
            imageio._PNG_THREADS = saved

    return one, dec


def _has_imagecodecs() -> bool:
    """imagecodecs is a comparison only (not a deploy-kit dependency): its rows are left out without it."""
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


def contenders():
    """(format, bits, library, setting, ext, encode(path, arr), decode(path), lossless)."""
    import cv2

    P, T, Q = cv2.IMWRITE_PNG_COMPRESSION, cv2.IMWRITE_TIFF_COMPRESSION, cv2.IMWRITE_JPEG_QUALITY

    def cv(*params):
        return lambda p, a: cv_encode(p, a, params)

    def pil(**kw):
        return lambda p, a: pil_encode(p, a, **kw)

    rows = []
    for bits in (8, 16):
        fmt = f"PNG {bits}-bit RGB"
        png = [("Pillow", "level 6 (default)", pil(), pil_decode), ("Pillow", "level 1", pil(compress_level=1), pil_decode)]
        if bits == 16:  # Pillow cannot write 16-bit colour (reported below)
            png = [("old own codec", "level 6, filter None", old_write_png16, old_read_png16)]
        # OpenCV's default (no parameter) is level 1, zlib's Z_RLE strategy and the Sub filter only;
        # passing a level switches to zlib's default strategy and libpng's adaptive filters
        png += [("OpenCV", "level 1 + RLE (default)", cv(), cv_decode), ("OpenCV", "level 1", cv(P, 1), cv_decode),
                ("OpenCV", "level 6", cv(P, 6), cv_decode),
                *([("imagecodecs png", "level 1", ic_encode("png", level=1), ic_decode("png")),
                   ("imagecodecs png", "level 6", ic_encode("png", level=6), ic_decode("png"))] if _has_imagecodecs() else []),
                ("deploy_kit", "encode_image (Sub, level 1 + RLE, strips on threads)", *dk_codec("PNG", bits)),
                ("deploy_kit", "the same on 1 thread", *dk_png_one_thread(bits))]
        rows += [(fmt, bits, lib, setting, ".png", enc, dec, True) for lib, setting, enc, dec in png]
    fmt = "JPEG q95 RGB"  # all three use 4:2:0 chroma subsampling at quality 95
    rows += [(fmt, 8, "Pillow", "4:2:0", ".jpg", pil(quality=95), pil_decode, False),
             (fmt, 8, "OpenCV", "4:2:0", ".jpg", cv(Q, 95), cv_decode, False),
             *([(fmt, 8, "imagecodecs jpeg8", "4:2:0", ".jpg", ic_encode("jpeg8", level=95), ic_decode("jpeg8"), False)]
               if _has_imagecodecs() else []),
             (fmt, 8, "deploy_kit", "encode_image", ".jpg", *dk_codec("JPEG", 8), False)]
    fmt = "TIFF 16-bit RGB"
    rows += [(fmt, 16, "OpenCV", "LZW (default)", ".tif", cv(), cv_decode, True),
             (fmt, 16, "OpenCV", "none", ".tif", cv(T, 1), cv_decode, True),
             (fmt, 16, "OpenCV", "deflate", ".tif", cv(T, 8), cv_decode, True),
             *([(fmt, 16, "imagecodecs tiff", "none", ".tif", ic_encode("tiff"), ic_decode("tiff"), True)]
               if _has_imagecodecs() else []),
             (fmt, 16, "deploy_kit", "encode_image (none)", ".tif", *dk_codec("TIFF", 16), True)]
    return rows


# --- measurement ---------------------------------------------------------------------------------

def _imagecodecs_version() -> str:
    if not _has_imagecodecs():
        return "not installed (its rows are left out)"
    import imagecodecs

    return imagecodecs.__version__


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
    """(two in a row, two in threads at once), best of ``repeats`` each: the minimum is the figure
    least disturbed by other processes on the machine."""
    seq, par = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        fn()
        seq.append(time.perf_counter() - t)
        par.append(in_two_threads(fn))
    return min(seq), min(par)


def load_average() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", default="4000x3000", help="WIDTHxHEIGHT")
    ap.add_argument("--work", default=None, help="keep the files (~1.7 GB at full size) in this folder "
                    "(default: a temp folder, removed at the end)")
    args = ap.parse_args(argv)
    if args.work is None:
        with tempfile.TemporaryDirectory(prefix="bench_imageio.") as work:
            return run(args, work)
    return run(args, args.work)


def run(args, work: str) -> int:
    """Measure, print the tables; the files go to ``work``."""
    w, h = (int(v) for v in args.size.lower().split("x"))
    import cv2
    import PIL

    os.makedirs(work, exist_ok=True)
    t0, load0 = time.perf_counter(), load_average()
    base, what = photo(h, w)
    rng = np.random.default_rng(0)
    imgs = {8: quantise(base, 8, rng), 16: quantise(base, 16, rng)}
    del base
    print(f"image: {w}x{h} RGB, {what}, + Gaussian noise sigma 2/255; {os.cpu_count()} CPUs; "
          f"Pillow {PIL.__version__}, OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads), "
          f"imagecodecs {_imagecodecs_version()}, numpy {np.__version__}; median of {args.repeats}\n")

    results, files = [], {}
    for fmt, bits, lib, setting, ext, enc, dec, lossless in contenders():
        src = imgs[bits]
        path = os.path.join(work, f"{lib}-{setting}-{bits}{ext}".replace(" ", "_").replace("(", "").replace(")", "").replace(",", ""))
        t_enc, c_enc = timed(lambda: enc(path, src), args.repeats)
        size = os.path.getsize(path)
        back = dec(path)
        if back.dtype != src.dtype or back.shape != src.shape or (lossless and not np.array_equal(back, src)):
            raise SystemExit(f"{lib} {setting} {fmt}: decoded {back.shape} {back.dtype} differs from the source")
        t_dec, c_dec = timed(lambda: dec(path), args.repeats)
        results.append((fmt, lib, setting, t_dec, c_dec, t_enc, c_enc, size, src.nbytes))
        files[(fmt, lib, setting)] = path
        print(f"  {fmt:16s} {lib:17s} {setting:30s} decode {t_dec * 1e3:6.0f} ms (CPU {c_dec * 1e3:6.0f})  "
              f"encode {t_enc * 1e3:6.0f} ms (CPU {c_enc * 1e3:6.0f})  {size / 1e6:6.1f} MB", flush=True)

    # the old codec on a PNG it did not write: libpng/Pillow pick Paeth/Average filters per row,
    # which the old decoder undid one pixel at a time in Python; time a few rows and scale up
    other = files[("PNG 16-bit RGB", "OpenCV", "level 1 + RLE (default)")]
    n_rows = 20
    t_rows = median_time(lambda: old_read_png16(other, rows_limit=n_rows), 1, warmup=0)
    old_foreign = t_rows * h / n_rows

    print(f"\n## (a) {w}x{h} RGB decode / encode: wall ms and the process's CPU ms, median of {args.repeats}; "
          "file size\n")
    print("| format | library | setting | decode ms | (CPU ms) | encode ms | (CPU ms) | size MB | % of raw |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for fmt, lib, setting, t_dec, c_dec, t_enc, c_enc, size, raw in results:
        print(f"| {fmt} | {lib} | {setting} | {t_dec * 1e3:.0f} | {c_dec * 1e3:.0f} | {t_enc * 1e3:.0f} | "
              f"{c_enc * 1e3:.0f} | {size / 1e6:.1f} | {100 * size / raw:.0f} |")
    print(f"| PNG 16-bit RGB | old own codec | decoding OpenCV's file (Paeth rows) | ~{old_foreign * 1e3:.0f} "
          f"(est. from {n_rows} rows) | | - | | - | - |")
    for fmt, ext in (("PNG 16-bit RGB", ".png"), ("TIFF 16-bit RGB", ".tif")):
        got = pil_decode(files[(fmt, "OpenCV", "none" if ext == ".tif" else "level 1 + RLE (default)")])
        print(f"| {fmt} | Pillow | - | n/a: gives {got.dtype} {got.shape[-1]} channels | | n/a: cannot write "
              "16-bit colour | | - | - |")

    print(f"\n## (b) GIL: the same job twice in a row vs in two threads at once, best of {args.repeats} "
          "(speed-up ~2 on 2 free cores = releases the GIL)\n")
    print("| job | library | 2 in a row ms | 2 threads ms | speed-up |")
    print("|---|---|---:|---:|---:|")
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # OpenCV's own pool would parallelise cvtColor and blur the GIL measure
    gil_jobs = [
        ("PNG 8-bit RGB", "Pillow", "level 1"), ("PNG 8-bit RGB", "OpenCV", "level 1 + RLE (default)"),
        ("PNG 8-bit RGB", "imagecodecs png", "level 1"), ("PNG 8-bit RGB", "deploy_kit", "the same on 1 thread"),
        ("PNG 16-bit RGB", "OpenCV", "level 1 + RLE (default)"),
        ("JPEG q95 RGB", "Pillow", "4:2:0"), ("JPEG q95 RGB", "OpenCV", "4:2:0"), ("JPEG q95 RGB", "imagecodecs jpeg8", "4:2:0"),
        ("TIFF 16-bit RGB", "OpenCV", "none"), ("TIFF 16-bit RGB", "imagecodecs tiff", "none"),
    ]
    by_key = {(r[0], r[2], r[3]): r for r in contenders()}
    raw = imgs[8].tobytes()
    try:
        # reference points on this machine: zlib releases the GIL on large buffers, a Python loop holds it
        seq, par = gil_speedup(lambda: zlib.compress(raw, 1), args.repeats)
        print(f"| reference: zlib.compress level 1, {len(raw) / 1e6:.0f} MB | (releases) | {seq * 1e3:.0f} | {par * 1e3:.0f} | {seq / par:.2f}x |", flush=True)
        seq, par = gil_speedup(lambda: sum(range(5_000_000)), args.repeats)
        print(f"| reference: Python loop | (holds) | {seq * 1e3:.0f} | {par * 1e3:.0f} | {seq / par:.2f}x |", flush=True)
        for key in gil_jobs:
            if key not in by_key:  # imagecodecs not installed
                continue
            fmt, bits, lib, setting, ext, enc, dec, _ = by_key[key]
            path, src = files[key], imgs[bits]
            seq, par = gil_speedup(lambda: dec(path), args.repeats)
            print(f"| decode {fmt} | {lib} | {seq * 1e3:.0f} | {par * 1e3:.0f} | {seq / par:.2f}x |", flush=True)
            # each thread writes a file of its own
            seq, par = gil_speedup(lambda: enc(f"{path}.{threading.get_ident()}{ext}", src), args.repeats)
            print(f"| encode {fmt} | {lib} | {seq * 1e3:.0f} | {par * 1e3:.0f} | {seq / par:.2f}x |", flush=True)
    finally:
        cv2.setNumThreads(cv_threads)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s; load average (1/5/15 min) at start {load0}, at the end "
          f"{load_average()} (above the CPU count = other processes competed for the CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
