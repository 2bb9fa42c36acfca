"""Restore image files of any size through a fixed-size runner (tiling + format-preserving I/O).

numpy + Pillow only: this is what ``deploy-kit run`` does on the device.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, Optional

import numpy as np

from .imageio import read_image, to_model_channels, write_image
from .tiling import DEFAULT_OVERLAP, make_plan, tile_run

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".ppm", ".pgm")


def collect_images(paths: Iterable[str]) -> list[str]:
    """Image files named directly, plus the images inside named folders (not recursive), in order.

    Raises:
        FileNotFoundError: a path that does not exist.
    """
    found: list[str] = []
    for p in paths:
        if os.path.isdir(p):
            found += sorted(os.path.join(p, f) for f in os.listdir(p)
                            if f.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(os.path.join(p, f)))
        elif os.path.isfile(p):
            found.append(p)
        else:
            raise FileNotFoundError(p)
    return found


def image_size(path: str) -> tuple[int, int]:
    """(height, width) without decoding the pixels."""
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def tiles_for(path: str, tile: tuple[int, int], overlap: int, multiple: int) -> int:
    h, w = image_size(path)
    return len(make_plan(h, w, tile, overlap, multiple=multiple).positions)


def restore_file(runner, src: str, dst: str, *, channels: int, tile: tuple[int, int], overlap: int = DEFAULT_OVERLAP,
                 multiple: int = 1, progress: Optional[Callable[[int, int], None]] = None) -> tuple[int, int]:
    """Read ``src``, run it tile by tile through ``runner`` (first output), write ``dst`` like ``src``.

    Args:
        runner: a :class:`~deploy_kit.runtime.runners.Runner` taking (1, channels, *tile).
        channels: the model's input channels (gray/RGB conversion and alpha are handled here).

    Returns:
        (height, width) of the image.
    """
    arr, info = read_image(src)
    colour, alpha = to_model_channels(arr, channels, info.alpha)
    chw = np.ascontiguousarray(colour.transpose(2, 0, 1), dtype=np.float32)
    out = tile_run(chw, lambda x: runner.run(x)[0], tile, overlap, multiple, progress=progress)
    write_image(dst, np.clip(out.transpose(1, 2, 0), 0.0, 1.0), info, alpha)
    return chw.shape[1], chw.shape[2]
