"""Degradations: what turns a clean photo into a model's input (noise, motion blur, bicubic
downscaling), as in deployment.

Calibration crops, parity samples, quality pairs and the demo training all degrade through here
(``deploy_kit.precision.calibration``, ``deploy_kit.data.samples``, ``deploy_kit.demo.train``).
A ``downscale:S`` step makes a super-resolution model's input: the image shrinks S times
(:func:`degradation_scale`), so callers cut the clean image S times the model's input size.
"""

from __future__ import annotations

import numpy as np

from ..errors import CalibrationError


#: Factors a ``downscale:S`` step takes.
DOWNSCALE_FACTORS = range(2, 9)


def parse_degradation(spec: str | None) -> tuple[tuple[str, float], ...]:
    """``"blur:9+noise:5"`` → (("blur", 9.0), ("noise", 5.0)); None/"none"/"" → ().

    Raises:
        CalibrationError: unknown kind, a bad parameter, or more than one ``downscale`` step.
    """
    if spec is None or spec.strip().lower() in ("", "none", "clean"):
        return ()
    steps = []
    for part in spec.split("+"):
        kind, _, arg = part.strip().partition(":")
        kind = kind.strip().lower()
        try:
            value = float(arg)
        except ValueError:
            value = float("nan")
        if kind == "noise" and 0 <= value <= 255:
            steps.append(("noise", value))
        elif kind == "blur" and value == int(value) and 1 <= value <= 101:
            steps.append(("blur", value))
        elif kind == "downscale" and value in DOWNSCALE_FACTORS and not any(k == "downscale" for k, _ in steps):
            steps.append(("downscale", value))
        else:
            raise CalibrationError(
                f"bad degradation '{spec}' (part '{part.strip()}'); use none, noise:SIGMA (0-255), "
                "blur:K (kernel length 1-101), downscale:S (bicubic, S = 2-8, once), or a combination "
                "such as blur:9+noise:5 or downscale:4+noise:5"
            )
    return tuple(steps)


def degradation_scale(spec: str | None) -> int:
    """How many times smaller a degradation makes the image: S of its ``downscale:S`` step, else 1.

    A super-resolution model of scale S restores the degraded (H, W) image to the clean (S*H, S*W) one.

    Raises:
        CalibrationError: a bad spec (:func:`parse_degradation`).
    """
    return next((int(v) for k, v in parse_degradation(spec) if k == "downscale"), 1)


def resize_bicubic(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic resize of an HWC float image to ``height`` x ``width`` (Pillow, per channel in float32).

    Pillow widens the bicubic kernel by the factor when shrinking (antialiased, like MATLAB's
    ``imresize``, the usual super-resolution benchmark degradation); values are not clipped.
    """
    from PIL import Image

    arr = np.asarray(img, dtype=np.float32)
    chans = [np.asarray(Image.fromarray(np.ascontiguousarray(arr[..., c])).resize((width, height), Image.BICUBIC),
                        dtype=np.float32) for c in range(arr.shape[-1])]
    return np.stack(chans, axis=-1)


def motion_kernel(length: int, angle: float) -> np.ndarray:
    """Normalised line kernel (linear motion of ``length`` pixels at ``angle`` radians), odd size."""
    size = length if length % 2 else length + 1
    k = np.zeros((size, size), dtype=np.float64)
    c = (size - 1) / 2.0
    for t in np.linspace(-(length - 1) / 2.0, (length - 1) / 2.0, 4 * length + 1):
        y, x = c + t * np.sin(angle), c + t * np.cos(angle)
        y0, x0 = int(np.floor(y)), int(np.floor(x))
        fy, fx = y - y0, x - x0
        for dy, wy in ((0, 1 - fy), (1, fy)):
            for dx, wx in ((0, 1 - fx), (1, fx)):
                if 0 <= y0 + dy < size and 0 <= x0 + dx < size:
                    k[y0 + dy, x0 + dx] += wy * wx
    return (k / k.sum()).astype(np.float32)


def degrade(img: np.ndarray, spec: str | None, rng: np.random.Generator) -> np.ndarray:
    """Apply a degradation to an HWC float image in [0, 1]; result clipped to [0, 1], float32.

    Steps run in the order written (``blur:9+noise:5`` blurs, then adds noise, as a camera does).
    ``noise:S`` adds Gaussian noise of std S/255; ``blur:K`` convolves every channel with a
    K-pixel line kernel at an angle drawn from ``rng`` (reflect borders); ``downscale:S`` shrinks the
    image S times (bicubic, :func:`resize_bicubic`): an H x W image becomes H//S x W//S, its bottom
    rows and right columns beyond a multiple of S dropped first, so output pixel (y, x) is centred on
    the clean S x S block at (S*y, S*x).

    Raises:
        CalibrationError: a bad spec, or an image smaller than S x S for ``downscale:S``.
    """
    out = np.asarray(img, dtype=np.float32)
    for kind, value in parse_degradation(spec):
        if kind == "downscale":
            k = int(value)
            h, w = out.shape[0] // k, out.shape[1] // k
            if h < 1 or w < 1:
                raise CalibrationError(f"a {out.shape[0]}x{out.shape[1]} image cannot be downscaled {k} times")
            out = resize_bicubic(out[:h * k, :w * k], h, w)
        elif kind == "blur":
            if int(value) > 1:
                from scipy.ndimage import convolve

                kern = motion_kernel(int(value), float(rng.uniform(0.0, np.pi)))
                out = np.stack([convolve(out[..., c], kern, mode="reflect") for c in range(out.shape[-1])], -1)
        else:
            out = out + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(value / 255.0)
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)
