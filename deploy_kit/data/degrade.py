"""Degradations: what turns a clean photo into a model's input (noise, motion blur), as in deployment.

Calibration crops, parity samples, quality pairs and the demo training all degrade through here
(``deploy_kit.precision.calibration``, ``deploy_kit.data.samples``, ``deploy_kit.demo.train``).
"""

from __future__ import annotations

import numpy as np

from ..errors import CalibrationError


def parse_degradation(spec: str | None) -> tuple[tuple[str, float], ...]:
    """``"blur:9+noise:5"`` → (("blur", 9.0), ("noise", 5.0)); None/"none"/"" → ().

    Raises:
        CalibrationError: unknown kind or a bad parameter.
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
        else:
            raise CalibrationError(
                f"bad degradation '{spec}' (part '{part.strip()}'); use none, noise:SIGMA (0-255), "
                "blur:K (kernel length 1-101), or a combination such as blur:9+noise:5"
            )
    return tuple(steps)


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
    K-pixel line kernel at an angle drawn from ``rng`` (reflect borders).
    """
    out = np.asarray(img, dtype=np.float32)
    for kind, value in parse_degradation(spec):
        if kind == "blur":
            if int(value) > 1:
                from scipy.ndimage import convolve

                kern = motion_kernel(int(value), float(rng.uniform(0.0, np.pi)))
                out = np.stack([convolve(out[..., c], kern, mode="reflect") for c in range(out.shape[-1])], -1)
        else:
            out = out + rng.standard_normal(out.shape, dtype=np.float32) * np.float32(value / 255.0)
        out = np.clip(out, 0.0, 1.0).astype(np.float32)
    return np.ascontiguousarray(out, dtype=np.float32)
