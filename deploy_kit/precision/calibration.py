"""Calibration sets for INT8: real images, cropped at the export size and degraded like model inputs.

A restoration network sees *degraded* images (noisy, blurred), so its activation ranges must be
measured on degraded images too: a denoiser calibrated on clean photos under-estimates the range
of its first layers. A calibration set is therefore ``count`` seeded crops of real images at exactly
the export size (never resized, so noise and texture keep their real statistics), each passed
through the model's degradation (``noise:25``, ``blur:9``, ``blur:9+noise:5``). A super-resolution
model's degradation shrinks the image (``downscale:4``, ``downscale:4+noise:5``): its crops are cut at
S times the export size and come out of the degradation at the export size, the graph's input.

Sources (``load_calibration_set(source, ...)``):

* ``None`` or ``"default"``: the manifest ``calibration/default.json``, photographs bundled with
  scikit-image (works offline). Any other manifest name looks up ``calibration/<name>.json``.
* a manifest ``.json`` path (format in ``calibration/README.md``),
* a directory (its files, not recursive; hidden files ignored),
* a glob (``"shots/**/*.png"``; recursive).

Input rules, applied to every file (each rejected file lands in ``CalibrationSet.skipped`` with
its reason, and too few usable images is a :class:`CalibrationError`, never a silently tiny set):

* image files (PNG, JPEG, TIFF, BMP, WebP, PPM/PGM) of 8-bit modes are converted to the model's
  channel count exactly as parity does (:func:`deploy_kit.data.samples.load_image`): gray is
  repeated to RGB, alpha is dropped, RGB becomes ITU-R 601 luma for 1-channel models, and
  6-channel (dual-pixel) models get the one-pixel-shift stand-in;
* ``.npy`` arrays (HxW, HxWxC or CxHxW; uint8, uint16 or float in [0, 1]) are used as they are
  when C equals the model's channel count, and converted like images when C is 1, 3 or 4;
* "mismatched" means what cannot be converted without guessing: an array with another channel
  count (e.g. 6 channels for a 3-channel model), 16-bit/float image modes (PIL would clip them
  to 8 bits), and other colour modes (LAB, HSV);
* files smaller than the export size are skipped (crops are never upscaled);
* unreadable files are skipped with the decoder's message; files without an image/array
  extension are skipped as non-images.
"""

from __future__ import annotations

import glob as _glob
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np

from ..compare import batch_members, stack_batches
from ..data.degrade import degradation_scale, degrade, parse_degradation
from ..data.samples import load_image, sample_dir, to_channels
from ..errors import CalibrationError

#: Fewest distinct usable images a calibration set may come from. NVIDIA recommends ~500 samples
#: for classification nets; a restoration net sees many positions per crop, and the package-shipped
#: default set has 11 photographs, so 8 is the floor below which ranges are a guess.
MIN_IMAGES = 8

#: Model input channel counts the loader knows how to produce.
SUPPORTED_CHANNELS = (1, 3, 6)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
ARRAY_EXTS = (".npy",)

# 8-bit PIL modes that load_image's convert("RGB") maps without losing information it needs.
_PIL_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "RGBa", "La", "CMYK", "YCbCr"})

MANIFEST_FORMAT = "deploy-kit-calibration/1"
_GLOB_CHARS = set("*?[")


@dataclass
class CalibrationSet:
    """Degraded model inputs for activation-range calibration.

    Attributes:
        arrays: each (1, C, H, W) float32 in [0, 1], the degraded model inputs.
        skipped: (path, reason) for every file not used.
        description: one line: source, count, crop size, degradation.
        digest: sha256 over the arrays' shapes and bytes (part of the range-cache key).
        images: the files the crops came from (in use order).
    """

    arrays: list[np.ndarray]  # (N, C, H, W) for a graph of batch N (see batched)
    skipped: list[tuple[str, str]]
    description: str
    digest: str
    images: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.arrays)


# ---------------------------------------------------------------------------------------------
# manifests
# ---------------------------------------------------------------------------------------------
def manifest_dir() -> str:
    """Directory holding the shipped manifests.

    In an installed wheel they are package data, ``deploy_kit/calibration/`` (pyproject maps the
    top-level ``calibration/`` folder there); in the source tree and in an editable install there
    is no such folder inside the package and ``calibration/`` at the project root is used.
    ``DEPLOY_KIT_CALIBRATION_DIR`` overrides both (for installs that keep the manifests elsewhere).
    """
    env = os.environ.get("DEPLOY_KIT_CALIBRATION_DIR")
    if env:
        return env
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    installed = os.path.join(package, "calibration")
    if os.path.isdir(installed):
        return installed
    return os.path.normpath(os.path.join(package, "..", "calibration"))


def manifest_path(name: str) -> str:
    """Path of the shipped manifest ``name`` (``"default"`` → ``calibration/default.json``)."""
    return os.path.join(manifest_dir(), f"{name}.json")


def read_manifest(path: str) -> dict[str, Any]:
    """Read and validate a manifest; returns it with ``files`` resolved to absolute paths.

    Raises:
        CalibrationError: missing file, invalid JSON, wrong format tag, or no image list.
    """
    if not os.path.isfile(path):
        raise CalibrationError(f"calibration manifest not found: {path}; pass a directory, a glob or an existing .json")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"cannot read calibration manifest {path} ({exc}); fix its JSON") from exc
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise CalibrationError(f"{path} is not a deploy-kit calibration manifest (needs \"format\": \"{MANIFEST_FORMAT}\")")
    entries = data.get("images")
    if not isinstance(entries, list) or not entries:
        raise CalibrationError(f"calibration manifest {path} lists no images (\"images\": [...] is empty or missing)")
    root = _manifest_root(str(data.get("root", ".")), path)
    files = []
    for e in entries:
        rel = e.get("file") if isinstance(e, dict) else e
        if not isinstance(rel, str) or not rel:
            raise CalibrationError(f"calibration manifest {path}: every image needs a \"file\" string (got {e!r})")
        files.append(os.path.join(root, rel))
    data["files"] = files
    return data


def manifest_files(name: str) -> list[str]:
    """Basenames listed by a shipped manifest (used to keep evaluation/training/calibration disjoint)."""
    return [os.path.basename(p) for p in read_manifest(manifest_path(name))["files"]]


def _manifest_root(root: str, manifest: str) -> str:
    if root == "skimage:data":  # scikit-image's bundled data directory (offline, installed with it)
        return sample_dir()
    if os.path.isabs(root):
        return root
    return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(manifest)), root))


def _resolve_source(source: str | None) -> tuple[list[str], str, dict[str, Any]]:
    """source → (candidate files, label for messages, manifest dict or {})."""
    if source is None:
        source = "default"
    if source.endswith(".json") or (
        os.sep not in source and "/" not in source and not os.path.exists(source) and not (set(source) & _GLOB_CHARS)
    ):
        path = source if source.endswith(".json") else manifest_path(source)
        if not source.endswith(".json") and not os.path.isfile(path):
            raise CalibrationError(
                f"calibration source '{source}' is neither a path nor a known set (no {path}); "
                "pass a directory, a glob, a manifest .json, or 'default'"
            )
        m = read_manifest(path)
        return m["files"], f"manifest {m.get('name', os.path.basename(path))}", m
    if os.path.isdir(source):
        names = sorted(n for n in os.listdir(source) if not n.startswith("."))
        files = [os.path.join(source, n) for n in names if os.path.isfile(os.path.join(source, n))]
        if not files:
            raise CalibrationError(f"calibration directory {source} is empty; put at least {MIN_IMAGES} images in it")
        return files, f"directory {source}", {}
    if os.path.isfile(source):
        raise CalibrationError(
            f"calibration source {source} is a single file; pass a directory or a glob with at least {MIN_IMAGES} images"
        )
    if set(source) & _GLOB_CHARS:
        files = sorted(p for p in _glob.glob(source, recursive=True) if os.path.isfile(p))
        if not files:
            raise CalibrationError(f"calibration glob '{source}' matches no files; check the pattern (quote it in the shell)")
        return files, f"glob {source}", {}
    raise CalibrationError(
        f"calibration source not found: {source}; pass a directory, a glob, a manifest .json, or 'default'"
    )


# ---------------------------------------------------------------------------------------------
# reading one file (the one loader: images go through samples.load_image, as parity does)
# ---------------------------------------------------------------------------------------------
def probe(path: str, channels: int) -> tuple[tuple[int, int] | None, str | None]:
    """Cheap header check: ((height, width), None) when usable, else (None, reason)."""
    ext = os.path.splitext(path)[1].lower()
    if ext in ARRAY_EXTS:
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # noqa: BLE001 - numpy raises several types for a bad file
            return None, f"unreadable array ({_first_line(exc)})"
        hwc, reason = _array_layout(arr.shape, channels)
        return (hwc[0], hwc[1]) if hwc else None, reason
    if ext not in IMAGE_EXTS:
        return None, f"not an image (extension '{ext or 'none'}')"
    try:
        from PIL import Image

        with Image.open(path) as im:
            mode, (w, h) = im.mode, im.size
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for a corrupt file
        return None, f"unreadable image ({_first_line(exc)})"
    if mode not in _PIL_MODES:
        hint = "save it as an 8-bit PNG/JPEG or as a .npy in [0, 1]"
        return None, f"mismatched pixel format: PIL mode {mode} (16-bit/float/other colour space); {hint}"
    return (h, w), None


def read_input(path: str, channels: int) -> np.ndarray:
    """Read one calibration/evaluation file as float32 HWC in [0, 1] with ``channels`` channels.

    Images go through :func:`deploy_kit.data.samples.load_image` (the conversion parity uses).

    Raises:
        CalibrationError: the file cannot be decoded or converted (message says which and why).
    """
    _check_channels(channels)
    ext = os.path.splitext(path)[1].lower()
    if ext in ARRAY_EXTS:
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as exc:  # noqa: BLE001
            raise CalibrationError(f"cannot read {path} ({_first_line(exc)}); re-save it with numpy.save") from exc
        return _array_to_hwc(arr, channels, path)
    try:
        return load_image(path, channels).astype(np.float32, copy=False)
    except Exception as exc:  # noqa: BLE001 - truncated/corrupt data surfaces only at decode time
        raise CalibrationError(f"cannot decode {path} ({_first_line(exc)}); remove or re-save the file") from exc


def _array_layout(shape: Sequence[int], channels: int) -> tuple[tuple[int, int, int] | None, str | None]:
    """Interpret an array shape as HWC; (None, reason) when it is not an image or mismatched."""
    if len(shape) == 2:
        return (shape[0], shape[1], 1), None
    if len(shape) != 3:
        return None, f"array of shape {tuple(shape)} is not an image (need HxW, HxWxC or CxHxW)"
    convertible = {1, 3, 4, channels}
    if shape[-1] in convertible and shape[-1] <= 8:
        c, hw = shape[-1], (shape[0], shape[1])
    elif shape[0] in convertible and shape[0] <= 8:
        c, hw = shape[0], (shape[1], shape[2])
    else:
        c = min(shape[0], shape[-1])
        return None, (
            f"mismatched channel count: array of shape {tuple(shape)} has {c} channels, the model takes "
            f"{channels} (arrays must have {channels} channels, or 1/3/4 to be converted)"
        )
    return (hw[0], hw[1], c), None


def _array_to_hwc(arr: np.ndarray, channels: int, path: str) -> np.ndarray:
    layout, reason = _array_layout(arr.shape, channels)
    if layout is None:
        raise CalibrationError(f"{path}: {reason}")
    if arr.ndim == 2:
        arr = arr[..., None]
    elif arr.shape[-1] != layout[2] or arr.shape[:2] != layout[:2]:
        arr = np.moveaxis(arr, 0, -1)
    if arr.dtype == np.uint8:
        img = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        img = arr.astype(np.float32) / 65535.0
    elif np.issubdtype(arr.dtype, np.floating):
        img = arr.astype(np.float32)
        lo, hi = float(np.nanmin(img)), float(np.nanmax(img))
        if not np.isfinite(img).all() or lo < -1e-3 or hi > 1 + 1e-3:
            raise CalibrationError(f"{path}: float values span [{lo:.3g}, {hi:.3g}]; scale them to [0, 1]")
        img = np.clip(img, 0.0, 1.0)
    else:
        raise CalibrationError(f"{path}: dtype {arr.dtype} is not an image type; use uint8, uint16 or float in [0, 1]")
    if img.shape[-1] == channels:
        return np.ascontiguousarray(img)
    return np.ascontiguousarray(to_channels(img, channels), dtype=np.float32)


def to_nchw(img: np.ndarray) -> np.ndarray:
    """HWC float image → contiguous float32 (1, C, H, W), the layout every exported model takes."""
    return np.ascontiguousarray(np.asarray(img, dtype=np.float32).transpose(2, 0, 1)[None])


# ---------------------------------------------------------------------------------------------
# sets
# ---------------------------------------------------------------------------------------------
def _check_channels(channels: int) -> None:
    if channels not in SUPPORTED_CHANNELS:
        raise CalibrationError(
            f"the model takes {channels} input channels; calibration supports {', '.join(map(str, SUPPORTED_CHANNELS))}"
        )


def _check_size(height: int, width: int) -> None:
    if int(height) < 1 or int(width) < 1:
        raise CalibrationError(f"export size {height}x{width} is not positive")


def _usable(files: Iterable[str], channels: int, height: int, width: int, skipped: list[tuple[str, str]]) -> list[str]:
    ok = []
    for path in files:
        hw, reason = probe(path, channels)
        if hw is None:
            skipped.append((path, reason or "unusable"))
        elif hw[0] < height or hw[1] < width:
            skipped.append((path, f"{hw[0]}x{hw[1]} is smaller than the export size {height}x{width} (crops are never upscaled)"))
        else:
            ok.append(path)
    return ok


def _crops(
    paths: list[str], count: int, channels: int, height: int, width: int, seed: int, skipped: list[tuple[str, str]]
) -> tuple[list[np.ndarray], list[str]]:
    """``count`` seeded crops, round-robin over ``paths`` (a seeded subset when there are more).

    Crop k comes from image k mod n at a position drawn from ``default_rng([seed, k])``, so the
    result depends only on (files, count, seed, size). Files that fail to decode are skipped and
    replaced by the next candidate.
    """
    rng = np.random.default_rng([seed, 0x5EED])
    order = list(paths)
    if len(order) > count:
        pick = sorted(rng.choice(len(order), size=count, replace=False).tolist())
        chosen = set(pick)
        # the rest stay behind as replacements for files that fail to decode
        order = [order[i] for i in pick] + [p for i, p in enumerate(order) if i not in chosen]
    images: list[tuple[str, np.ndarray]] = []
    want = min(count, len(order))
    for path in order:
        if len(images) == want:
            break
        try:
            img = read_input(path, channels)
        except CalibrationError as exc:
            skipped.append((path, str(exc)))
            continue
        if img.shape[0] < height or img.shape[1] < width:  # header lied (e.g. EXIF-less odd file)
            skipped.append((path, f"{img.shape[0]}x{img.shape[1]} is smaller than the export size {height}x{width}"))
            continue
        images.append((path, img))
    out = []
    for k in range(count if images else 0):
        _, img = images[k % len(images)]
        r = np.random.default_rng([seed, k])
        top = int(r.integers(0, img.shape[0] - height + 1))
        left = int(r.integers(0, img.shape[1] - width + 1))
        out.append(np.ascontiguousarray(img[top : top + height, left : left + width]))
    return out, [p for p, _ in images]


def _digest(arrays: Sequence[np.ndarray]) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(repr((a.shape, str(a.dtype))).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def load_calibration_set(
    source: str | None,
    *,
    channels: int,
    height: int,
    width: int,
    count: int = 32,
    seed: int = 0,
    degradation: str | None = None,
) -> CalibrationSet:
    """Build the calibration inputs for one export.

    Args:
        source: None/"default" (shipped set), a manifest name or .json path, a directory, or a glob.
        channels: the model's input channel count (1, 3, or 6).
        height, width: the export size (the graph's input); every array has exactly this size (crops
            are cut at S times it for a ``downscale:S`` degradation, which brings them down to it).
        count: number of crops (model inputs); images are used round-robin when fewer.
        seed: crop positions and degradation noise derive from it (same seed → same arrays).
        degradation: None/"none", "noise:SIGMA", "blur:K", "downscale:S", or combinations ("blur:9+noise:5").

    Returns:
        The set: arrays (1, C, H, W) float32 in [0, 1], skipped files with reasons, a one-line
        description, and the sha256 digest of the arrays.

    Raises:
        CalibrationError: bad source (missing, empty directory, glob without matches), bad
            degradation, unsupported channel count, ``count`` below :data:`MIN_IMAGES`, or fewer than
            :data:`MIN_IMAGES` usable images (the message counts the skip reasons).
    """
    _check_channels(channels)
    _check_size(height, width)
    steps = parse_degradation(degradation)  # fail on a bad spec before touching any file
    if count < MIN_IMAGES:
        raise CalibrationError(f"calibration count {count} is below the minimum of {MIN_IMAGES}; ask for at least {MIN_IMAGES}")
    files, label, _ = _resolve_source(source)
    skipped: list[tuple[str, str]] = []
    factor = degradation_scale(degradation)  # crops are cut at factor x the export size, the degradation shrinks them
    usable = _usable(files, channels, factor * height, factor * width, skipped)
    crops, used = _crops(usable, count, channels, factor * height, factor * width, seed, skipped)
    if len(used) < MIN_IMAGES:
        raise CalibrationError(
            f"{label}: only {len(used)} usable image(s) of {len(files)} file(s), need at least {MIN_IMAGES} "
            f"({_summarise(skipped)}); add images of at least {factor * height}x{factor * width}"
        )
    arrays = []
    deg = "+".join(f"{k}:{v:g}" for k, v in steps) or "none"
    for k, crop in enumerate(crops):
        degraded = degrade(crop, deg, np.random.default_rng([seed, k, 1])) if steps else crop
        arrays.append(to_nchw(degraded))
    size = f"{height}x{width}" if factor == 1 else f"{factor * height}x{factor * width} (downscaled to {height}x{width})"
    description = (
        f"{label}: {len(arrays)} crops {size} from {len(used)} images"
        f"{f' ({len(skipped)} files skipped)' if skipped else ''}, degradation {deg}, seed {seed}"
    )
    return CalibrationSet(arrays=arrays, skipped=skipped, description=description, digest=_digest(arrays), images=used)


def batched(calib: CalibrationSet, batch: int) -> CalibrationSet:
    """The same crops stacked into batches of ``batch`` for a graph of that static batch size.

    Crops keep their order; the last batch is filled up by repeating crops from the first (so
    MinMax ranges are exactly those of the unbatched set; histogram methods count the few
    repeated crops twice).

    Args:
        calib: a set of single crops (1, C, H, W), from :func:`load_calibration_set`.
        batch: the graph's batch N (>= 1).

    Returns:
        A new set whose arrays are (N, C, H, W) (the set itself when N is 1); digest recomputed,
        description saying the batching.

    Raises:
        CalibrationError: ``batch`` below 1 or the set's arrays are not single crops.
    """
    if batch < 1:
        raise CalibrationError(f"calibration batch must be at least 1; got {batch}")
    if batch == 1:
        return calib
    if any(a.shape[0] != 1 for a in calib.arrays):
        raise CalibrationError("calibration arrays are batched already; batch single crops (1, C, H, W) only")

    arrays = stack_batches(calib.arrays, batch_members(len(calib.arrays), batch))
    return CalibrationSet(arrays=arrays, skipped=list(calib.skipped),
                          description=f"{calib.description}, in {len(arrays)} batches of {batch}",
                          digest=_digest(arrays), images=list(calib.images))


def eval_pairs(
    *, channels: int, height: int, width: int, count: int, degradation: str | None, seed: int = 1,
    scale: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Held-out (degraded input, clean target) pairs, float32 in [0, 1]: inputs (1, C, H, W), targets
    (1, C, S*H, S*W) for a ``downscale:S`` degradation (a super-resolution model's pairs), else (1, C, H, W).

    The clean target is cropped at S times the export size and degraded into the input, so the two
    align pixel block for pixel. The images come from ``calibration/eval.json``, which shares no file
    with the default calibration set (``default.json``) nor with the demo training list (``train.json``).

    Args:
        height, width: the export size (the graph's input).
        scale: the model's output scale, when known (the manifest's ``scale``): checked against the
            degradation's S, so a super-resolution model is never measured against targets of the
            wrong size. None: S, whatever it is.

    Raises:
        CalibrationError: no evaluation image is at least S*``height`` x S*``width``, a ``scale`` the
            degradation does not make, or bad arguments.
    """
    _check_channels(channels)
    _check_size(height, width)
    factor = degradation_scale(degradation)
    if scale is not None and scale != factor:
        raise CalibrationError(
            f"the model's output is {scale} x its input but degradation '{degradation}' makes targets {factor} x the input; "
            f"use a degradation with downscale:{scale}" if scale > 1 else
            f"the model's output is the input's size but degradation '{degradation}' downscales {factor} times; "
            f"drop downscale:{factor}"
        )
    if count < 1:
        raise CalibrationError(f"evaluation count {count} must be at least 1")
    m = read_manifest(manifest_path("eval"))
    skipped: list[tuple[str, str]] = []
    usable = _usable(m["files"], channels, factor * height, factor * width, skipped)
    crops, used = _crops(usable, count, channels, factor * height, factor * width, seed, skipped)
    if not used:
        raise CalibrationError(
            f"no held-out evaluation image is at least {factor * height}x{factor * width} ({_summarise(skipped)}); "
            "use a smaller size"
        )
    pairs = []
    for k, clean in enumerate(crops):
        noisy = degrade(clean, degradation, np.random.default_rng([seed, k, 1]))
        pairs.append((to_nchw(noisy), to_nchw(clean)))
    return pairs


def _summarise(skipped: list[tuple[str, str]]) -> str:
    """'skipped: 3 non-image files, 1 unreadable/corrupt; e.g. a.txt: not an image (…)' (one line)."""
    if not skipped:
        return "no file was skipped"
    counts: dict[str, int] = {}
    example: dict[str, str] = {}
    for path, reason in skipped:
        if "smaller than the export size" in reason:
            key = "smaller than the export size"
        elif reason.startswith("not an image"):
            key = "non-image files"
        elif "mismatched" in reason:
            key = "mismatched channels/pixel format"
        elif reason.startswith(("unreadable", "cannot decode", "cannot read")):
            key = "unreadable/corrupt"
        else:
            key = reason[:60]
        counts[key] = counts.get(key, 0) + 1
        example.setdefault(key, f"{os.path.basename(path)}: {reason}")
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return "skipped: " + ", ".join(f"{n} {k}" for k, n in ranked) + f"; e.g. {example[ranked[0][0]][:200]}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else exc.__class__.__name__)[:160]
