"""Real sample images from scikit-image's bundled data (available offline, BSD licensed).

Every image used for parity is a real photograph resized (aspect-preserving cover + centre crop)
to the export size, so parity measures the model on image statistics, not only noise. With a
``downscale:S`` degradation (super-resolution inputs) the photo is fitted at S times the export size
and the degradation brings it down to it (:func:`sample_pairs` also returns that clean photo).
"""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from ..runtime.imageio import convert_channels
from .degrade import degradation_scale, degrade

# Colour photographs bundled inside the scikit-image wheel (no download needed).
SAMPLE_FILES = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg", "hubble_deep_field.jpg", "ihc.png")


def sample_dir() -> str:
    import skimage.data

    return os.path.dirname(skimage.data.__file__)


@lru_cache(maxsize=None)
def available_samples() -> tuple[str, ...]:
    """Paths of the bundled sample photographs that exist in the installed scikit-image."""
    d = sample_dir()
    return tuple(os.path.join(d, f) for f in SAMPLE_FILES if os.path.isfile(os.path.join(d, f)))


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """HWC float image -> HWC with ``channels`` channels (gray = ITU-R 601 luma; 6 = stereo pair stand-in)."""
    if img.ndim == 2:
        img = img[..., None]
    img = img[..., :3]
    if channels in (1, 3):
        return convert_channels(img, channels)
    img = convert_channels(img, 3)
    if channels == 6:
        # dual-pixel input (left/right views); a one-pixel shift stands in for the disparity
        return np.concatenate([img, np.roll(img, 1, axis=1)], axis=-1)
    raise ValueError(f"unsupported channel count {channels}")


def load_image(path: str, channels: int) -> np.ndarray:
    """Read an image file as float32 HWC in [0, 1] with ``channels`` channels."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        arr = np.asarray(im, dtype=np.float32) / 255.0
    return to_channels(arr, channels)


def fit(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (cover) and centre-crop an HWC image to exactly height x width."""
    from PIL import Image

    h, w = img.shape[:2]
    scale = max(height / h, width / w)
    nh, nw = max(height, round(h * scale)), max(width, round(w * scale))
    if (nh, nw) != (h, w):
        chans = [
            np.asarray(Image.fromarray(img[..., c]).resize((nw, nh), Image.BICUBIC), dtype=np.float32)
            for c in range(img.shape[-1])
        ]
        img = np.clip(np.stack(chans, axis=-1), 0.0, 1.0)
    top, left = (nh - height) // 2, (nw - width) // 2
    return img[top : top + height, left : left + width]


def sample_images(count: int, channels: int, height: int, width: int, degradation: str | None = None, seed: int = 0) -> list[np.ndarray]:
    """``count`` real sample images as float32 NCHW arrays of shape (1, channels, height, width).

    Args:
        degradation: applied to each image as the model sees it in deployment (``noise:25``,
            ``blur:9``, ``downscale:4``; see :func:`deploy_kit.data.degrade.degrade`); None = clean
            photos. With ``downscale:S`` the photo is fitted at (S*height, S*width) first, so the
            result is still height x width.
        seed: the degradation's random stream (image ``i`` uses ``(seed, i)``), so runs repeat exactly.
    """
    return [x for x, _ in _samples(count, channels, height, width, degradation, seed, clean=False)]


def sample_pairs(count: int, channels: int, height: int, width: int, degradation: str | None = None,
                 seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``count`` (model input, clean photo) pairs of real sample images, float32 NCHW.

    The inputs are :func:`sample_images`' (1, channels, height, width); each clean photo is the image
    before the degradation: (1, channels, S*height, S*width) for a ``downscale:S`` degradation (the
    target of a super-resolution model of scale S), else the input's size.

    Raises:
        RuntimeError: scikit-image's sample photos are missing.
        CalibrationError: a bad degradation spec.
    """
    return list(_samples(count, channels, height, width, degradation, seed, clean=True))


def _samples(count: int, channels: int, height: int, width: int, degradation: str | None, seed: int, *, clean: bool):
    """(input, clean photo or None) per sample image (see :func:`sample_pairs`)."""
    paths = available_samples()
    if not paths:
        raise RuntimeError("scikit-image sample images not found; reinstall scikit-image")
    k = degradation_scale(degradation)
    for i in range(count):
        photo = fit(load_image(paths[i % len(paths)], channels), k * height, k * width)
        img = photo if degradation is None else degrade(photo, degradation, np.random.default_rng((seed, i)))
        yield _nchw(img), (_nchw(photo) if clean else None)


def _nchw(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)
