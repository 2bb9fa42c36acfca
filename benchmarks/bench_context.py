"""Context modes on ground truth: full image vs tiles, global statistics vs TLC, scored on clean images.

Reproduce (about 1 to 2 minutes on one CPU thread, PyTorch 2.13 CPU)::

    python benchmarks/bench_context.py --json context.json

Measured (PyTorch 2.13 CPU, 1 thread, 81.5 s in all; 9 held-out pairs of 384x512, means; tiles
256x256, overlap 32 (the runtime's default), origins on multiples of 8: 6 tiles, pixel factor 2.00;
TLC train size 64, the demos' training patch, so windows of 96 px):

NAFNet demo-w16 (``nafnet-demo-w16-noise25.pth``), ``noise:25``:

======================================  =======  ======  ======================  ===========
mode                                    PSNR dB  SSIM    PSNR vs full global dB  s / image
======================================  =======  ======  ======================  ===========
degraded input (no model)               20.63    0.2646  -                       -
full-image global                       28.78    0.7226  inf (reference)         0.37
full-image TLC                          28.78    0.7240  47.21                   0.43
tiled global                            28.78    0.7235  54.73                   0.42
tiled TLC                               28.78    0.7241  47.30                   0.55
tiled sync:2 (synchronised statistics)  28.79    0.7227  72.47                   0.84
======================================  =======  ======  ======================  ===========

TLC gain over global: full image -0.00 dB PSNR / +0.0014 SSIM; tiled -0.00 dB / +0.0006.

Restormer demo-d12 (``restormer-demo-d12-blur9.pth``), ``blur:9``:

======================================  =======  ======  ======================  ===========
mode                                    PSNR dB  SSIM    PSNR vs full global dB  s / image
======================================  =======  ======  ======================  ===========
degraded input (no model)               26.96    0.8122  -                       -
full-image global                       27.41    0.8207  inf (reference)         1.64
full-image TLC                          27.34    0.8174  46.95                   1.77
tiled global                            27.41    0.8208  56.16                   1.77
tiled TLC                               27.36    0.8183  47.84                   1.85
tiled sync:2 (synchronised statistics)  27.41    0.8207  68.58                   3.17
======================================  =======  ======  ======================  ===========

TLC gain over global: full image -0.07 dB PSNR / -0.0033 SSIM; tiled -0.05 dB / -0.0025.

What it says about these two demos: tiling with global statistics costs nothing measurable against
the clean image (within 0.07 dB per image either way; the tiled output stays 55-56 dB from the
full-image one), and TLC brings no gain: NAFNet ties (TLC ahead on 5 of 9 images, by at most
0.03 dB), Restormer loses on all 9 images (-0.003 to -0.17 dB full image). The TLC paper's
+0.65 dB (Restormer, GoPro) does not appear here. The demos are small, trained briefly on 64 px
patches, and tested at only 6 x 8 patch widths; the paper's gain is for full models tested at
720x1280 after 256 px training. Also measured, on 3 pairs (``--count 3``): with ``--train-size 256``
TLC's 384 px windows cover a whole 256 px tile, so tiled TLC equals tiled global exactly, and the
full-image TLC output is 64-67 dB from the global one (no quality change); with ``--tile 128`` (20
tiles, pixel factor 1.67) tiled global stays within 0.05 dB PSNR of the full image.
Time goes to the Restormer forward passes (about 80 % of the run); SSIM and PSNR are negligible.

Which context a model sees decides what tiling does to it. A model with only local context gives
the same pixels tiled or whole (up to the tile overlap). NAFNet without TLC (its simplified channel
attention averages each feature map over the whole image) and Restormer (channel attention over
all pixels) normalise by statistics of what they are given, so each tile sees its own statistics.
TLC (Test-time Local Converter) replaces those global statistics by local windows frozen at 1.5 x
the training patch size, which makes the model local again. This script scores each way of running
a model against the clean images, so the choice is made on restoration quality, not only on how
close a tiled output is to the full-image one.

Rows (modes), per model:

1. ``full-image global``: the model as trained, the whole image in one call.
2. ``full-image TLC``: the same with TLC (eager, as upstream computes it).
3. ``tiled global``: deploy-kit's own tiling (:func:`deploy_kit.runtime.tiling.tile_run`, raised-cosine
   blending, the runtime's default overlap, origins on the model's size multiple), each tile batch
   through the eager global model.
4. ``tiled TLC``: the same tiles through the eager TLC model.
5. ``tiled sync:2 (synchronised statistics)``: the sync form through the runtime's passes (2).

Columns: PSNR and SSIM of the output against the clean image, PSNR of the output against the
full-image global output (how far a mode moves the picture from the model as trained), and wall
time per image. The degraded input is printed as a first row for scale.

Metrics: outputs are clipped to [0, 1] before scoring (as deploy-kit's own evaluations do).
PSNR is :func:`deploy_kit.metrics.psnr` (data range 1) over all channels. SSIM is Wang et al.
(2004): 11 x 11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 1, population
(co)variances, computed per RGB channel and averaged over the channels, mean over the "valid"
region (the 5 px border where the window leaves the image is excluded, as in the reference MATLAB
code). Every number is a mean over the images.

Images: held-out pairs from :func:`deploy_kit.precision.calibration.eval_pairs` (``calibration/eval.json``,
real photographs never used for the demo training or the calibration sets), degraded with the
variant's task (``noise:25`` for the NAFNet demo, ``blur:9`` for the Restormer demo). The eval
photographs are coffee 400x600, chelsea 300x451, rocket 427x640 and camera 512x512 (gray, repeated
to RGB), so 384x512 is the largest size at which more than one of them gives a crop: coffee, rocket
and camera (chelsea is skipped). Pair k is a seeded crop of photo k mod 3 with its own degradation
draw (fresh noise; a fresh blur angle), so the default 9 pairs are each photo three times.

Models: the trained demo checkpoints in ``deploy_kit/demo/`` by default, loaded the way the
pipeline loads them; ``--weights MODEL=PATH`` runs an official checkpoint instead (its variant is
read from the checkpoint's keys, its degradation from the variant unless ``--degradation MODEL=SPEC``).
TLC's training size is the checkpoint's training patch when a ``.json`` beside the checkpoint records
it (64 for both demos, from ``deploy_kit/demo/train.py``), else the official 256; ``--train-size``
overrides it.

Adding a mode: write ``def my_mode(bundle: ModelBundle, image: np.ndarray) -> np.ndarray`` ((C, H, W)
float32 in, (C, H, W) out) and put it into :data:`MODES` under its row label.

Usage:
  python benchmarks/bench_context.py                                   # both demos, 9 crops of 384x512
  python benchmarks/bench_context.py --models nafnet --count 3 --tile 128 --threads 2
  python benchmarks/bench_context.py --weights nafnet=NAFNet-SIDD-width32.pth --degradation nafnet=noise:25
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_WEIGHTS = {
    "nafnet": os.path.join(REPO, "deploy_kit", "demo", "nafnet-demo-w16-noise25.pth"),
    "restormer": os.path.join(REPO, "deploy_kit", "demo", "restormer-demo-d12-blur9.pth"),
}
OFFICIAL_TRAIN_SIZE = 256  # TLC's default training size (the official GoPro checkpoints)

# SSIM constants (Wang, Bovik, Sheikh, Simoncelli 2004)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


# ---------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------
def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM of two (C, H, W) images, per channel and averaged over the channels.

    Gaussian window 11 x 11, sigma 1.5, K1 0.01, K2 0.03, population (co)variances; the mean is
    taken over the valid region only (pixels whose whole window lies inside the image), so the
    border handling of the blur does not enter the result.

    Args:
        a: first image, (C, H, W) or (H, W), any real dtype.
        b: second image, same shape.
        data_range: the signal's peak-to-peak range (1 for images in [0, 1]).

    Returns:
        SSIM in [-1, 1] (1 for identical images).

    Raises:
        ValueError: shapes differ or an image is smaller than the window.
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        raise ValueError(f"ssim: shapes differ, {a64.shape} vs {b64.shape}")
    if a64.ndim == 2:
        a64, b64 = a64[None], b64[None]
    if a64.shape[-2] < SSIM_WINDOW or a64.shape[-1] < SSIM_WINDOW:
        raise ValueError(f"ssim: image {a64.shape[-2]}x{a64.shape[-1]} is smaller than the {SSIM_WINDOW}x{SSIM_WINDOW} window")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    r = SSIM_WINDOW // 2

    def blur(x: np.ndarray) -> np.ndarray:
        out = cv2.GaussianBlur(x, (SSIM_WINDOW, SSIM_WINDOW), SSIM_SIGMA, sigmaY=SSIM_SIGMA,
                               borderType=cv2.BORDER_REFLECT)
        return out[r:-r, r:-r]

    scores = []
    for x, y in zip(a64, b64):
        mx, my = blur(x), blur(y)
        vx = blur(x * x) - mx * mx
        vy = blur(y * y) - my * my
        cxy = blur(x * y) - mx * my
        num = (2 * mx * my + c1) * (2 * cxy + c2)
        den = (mx * mx + my * my + c1) * (vx + vy + c2)
        scores.append(float(np.mean(num / den)))
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------
@dataclass
class ModelBundle:
    """One loaded model and everything a mode needs to run it.

    Attributes:
        model: registered model name (``nafnet``, ``restormer``).
        variant: the variant the checkpoint matched.
        weights: the checkpoint path.
        adapter: the family's :class:`deploy_kit.models.base.ModelAdapter`.
        loaded: the official module with the checkpoint's weights (``LoadedModel.model``).
        degradation: what the inputs are degraded with.
        train_size: TLC's training size (its windows are 1.5 x this).
        train_size_source: where ``train_size`` came from (printed).
        image_hw: the evaluation image size (the full-image requests' size).
        tile: (th, tw) tile size (the tiled requests' size).
        overlap: the tile overlap (the runtime's default unless told).
        multiple: the model's size multiple; interior tile origins lie on it.
        batch: tiles per model call.
        supports_tlc: whether the family has a TLC form.
        channels: the model's input channel count.
    """

    model: str
    variant: str
    weights: str
    adapter: Any
    loaded: Any
    degradation: Optional[str]
    train_size: int
    train_size_source: str
    image_hw: tuple[int, int]
    tile: tuple[int, int]
    overlap: int
    multiple: int
    batch: int
    supports_tlc: bool
    channels: int
    _modules: dict = field(default_factory=dict, repr=False)

    def module(self, tlc: bool, size: tuple[int, int]):
        """The eager reference module (``adapter.wrap(..., static=False)``) for a request of ``size``.

        Args:
            tlc: TLC at :attr:`train_size` (True) or the model's global statistics (False).
            size: (h, w) the request is built for: the image size for full-image modes, the tile
                size for tiled modes.
        """
        key = (tlc, tuple(size))
        if key not in self._modules:
            from deploy_kit.request import resolve_request

            # no variant: resolved from the checkpoint, as for the loaded model (a "custom" one included)
            req = resolve_request(self.model, weights=self.weights, height=int(size[0]), width=int(size[1]),
                                  tlc=tlc, train_size=self.train_size if tlc else None)
            if (req.tlc is not None) != tlc:
                raise RuntimeError(f"{self.model}: asked for tlc={tlc}, the request has {req.tlc}")
            self._modules[key] = self.adapter.wrap(self.loaded, req, static=False)
        return self._modules[key]

    def run(self, module, x: np.ndarray) -> np.ndarray:
        """Run an eager module on a float32 (N, C, H, W) batch; returns float32 (N, C, H, W)."""
        import torch

        with torch.no_grad():
            out = module(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
        if isinstance(out, (tuple, list)):
            out = out[0]
        return out.numpy().astype(np.float32, copy=False)


def train_size_for(weights: str, given: Optional[int]) -> tuple[int, str]:
    """TLC's training size: ``given``, else the ``patch`` the checkpoint's sidecar .json records, else 256.

    Returns:
        (size, a few words saying where it came from).
    """
    if given is not None:
        return given, "--train-size"
    sidecar = os.path.splitext(weights)[0] + ".json"
    if os.path.isfile(sidecar):
        try:
            with open(sidecar, encoding="utf-8") as fh:
                patch = json.load(fh).get("patch")
        except (OSError, ValueError):
            patch = None
        if isinstance(patch, int) and patch >= 16:
            return patch, f"training patch in {os.path.basename(sidecar)}"
    return OFFICIAL_TRAIN_SIZE, "official default"


def load_bundle(model: str, weights: str, degradation: Optional[str], train_size: Optional[int],
                image_hw: tuple[int, int], tile: tuple[int, int], overlap: int, batch: int) -> ModelBundle:
    """Load a checkpoint as the pipeline does and gather what the modes need.

    Raises:
        SystemExit: not an image-restoration model, or no degradation known for it (a checkpoint of
            no registered variant needs ``--degradation``).
    """
    from deploy_kit.models import get_adapter, get_spec
    from deploy_kit.models.checkpoint import load_request
    from deploy_kit.request import resolve_request

    adapter = get_adapter(model)
    spec = get_spec(model)
    req = resolve_request(model, weights=weights, height=image_hw[0], width=image_hw[1], tlc=False, degradation=degradation)
    loaded = load_request(adapter, req)
    if adapter.output_kind(req) != "image":
        raise SystemExit(f"{model} {req.variant}: not an image-restoration model")
    deg = adapter.input_degradation(req)
    if deg is None:
        raise SystemExit(f"{model} {req.variant} has no task degradation; pass --degradation {model}=SPEC")
    ts, ts_src = train_size_for(weights, train_size)
    stride = int(getattr(loaded.model, "padder_size", 0) or spec.pad_multiple or 1)
    multiple = stride if tile[0] % stride == 0 and tile[1] % stride == 0 else 1
    return ModelBundle(model=model, variant=req.variant, weights=weights, adapter=adapter, loaded=loaded.model,
                       degradation=deg, train_size=ts, train_size_source=ts_src, image_hw=image_hw, tile=tile,
                       overlap=overlap, multiple=multiple, batch=batch, supports_tlc=spec.supports_tlc,
                       channels=adapter.input_channels(req))


# ---------------------------------------------------------------------------------------------
# modes: mode_fn(bundle, image (C, H, W)) -> output (C, H, W)
# ---------------------------------------------------------------------------------------------
ModeFn = Callable[[ModelBundle, np.ndarray], np.ndarray]


def _full(bundle: ModelBundle, image: np.ndarray, tlc: bool) -> np.ndarray:
    module = bundle.module(tlc, image.shape[-2:])
    return bundle.run(module, image[None])[0]


def _tiled(bundle: ModelBundle, image: np.ndarray, tlc: bool) -> np.ndarray:
    from deploy_kit.runtime.tiling import tile_run

    module = bundle.module(tlc, bundle.tile)
    return tile_run(image, lambda tiles: bundle.run(module, tiles), bundle.tile, bundle.overlap, bundle.multiple,
                    batch=bundle.batch)


def full_global(bundle: ModelBundle, image: np.ndarray) -> np.ndarray:
    """The model as trained: the whole image in one call, global statistics."""
    return _full(bundle, image, tlc=False)


def full_tlc(bundle: ModelBundle, image: np.ndarray) -> np.ndarray:
    """The whole image in one call with TLC (local windows of 1.5 x the training size)."""
    return _full(bundle, image, tlc=True)


def tiled_global(bundle: ModelBundle, image: np.ndarray) -> np.ndarray:
    """deploy-kit's tiling; each tile normalised by its own (global-per-tile) statistics."""
    return _tiled(bundle, image, tlc=False)


def tiled_tlc(bundle: ModelBundle, image: np.ndarray) -> np.ndarray:
    """deploy-kit's tiling with the TLC model in every tile."""
    return _tiled(bundle, image, tlc=True)


def tiled_sync(bundle: ModelBundle, image: np.ndarray, passes: int = 2) -> np.ndarray:
    """deploy-kit's tiling with synchronised statistics (deploy_kit/runtime/context.py): the model's
    sync form (deploy_kit/models/sync.py, eager PyTorch) run ``passes`` times by the runtime's own loop."""
    import torch

    from deploy_kit.models.sync import record_layout
    from deploy_kit.request import resolve_request
    from deploy_kit.runtime.context import sync_tile_run

    key = ("sync", bundle.tile)
    if key not in bundle._modules:
        req = resolve_request(bundle.model, weights=bundle.weights, height=bundle.tile[0], width=bundle.tile[1], tlc=False)
        form = bundle.adapter.sync_form(bundle.loaded, req)
        size = sum(n for _, n in record_layout(form, bundle.channels, *bundle.tile))
        bundle._modules[key] = (form, size)
    form, size = bundle._modules[key]

    def run(x, mask, stats, use):
        with torch.no_grad():
            y, out = form(*(torch.from_numpy(np.array(v, np.float32)) for v in (x, mask, stats, use)))
        return y.numpy(), out.numpy()

    return sync_tile_run(image, run, bundle.tile, bundle.overlap, bundle.multiple, passes=passes, stats=size,
                         batch=bundle.batch)


GLOBAL_REFERENCE = "full-image global"
SYNC_MODE = "tiled sync:2 (synchronised statistics)"

#: Row label -> mode function; None is a row not implemented yet (printed as such).
MODES: dict[str, Optional[ModeFn]] = {
    GLOBAL_REFERENCE: full_global,
    "full-image TLC": full_tlc,
    "tiled global": tiled_global,
    "tiled TLC": tiled_tlc,
    SYNC_MODE: tiled_sync,  # 2 passes (the runtime's default)
}

_TLC_MODES = {"full-image TLC", "tiled TLC"}


# ---------------------------------------------------------------------------------------------
# measurement
# ---------------------------------------------------------------------------------------------
@dataclass
class Row:
    """One mode's scores, means over the images (None where not run).

    Attributes:
        mode: row label.
        psnr, ssim: vs the clean image.
        psnr_vs_global: vs the full-image global output (inf for that row itself).
        seconds: wall time per image.
        note: why a row has no numbers.
        per_image: each image's (psnr, ssim, psnr_vs_global, seconds).
    """

    mode: str
    psnr: Optional[float] = None
    ssim: Optional[float] = None
    psnr_vs_global: Optional[float] = None
    seconds: Optional[float] = None
    note: str = ""
    per_image: list = field(default_factory=list)


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def measure(bundle: ModelBundle, pairs: list[tuple[np.ndarray, np.ndarray]], modes: dict[str, Optional[ModeFn]],
            log: Callable[[str], None]) -> list[Row]:
    """Run every mode on every pair and score it.

    Args:
        bundle: the model.
        pairs: (degraded (1, C, H, W), clean (1, C, H, W)) float32 pairs.
        modes: row label -> mode function (None: a placeholder row).
        log: progress printer.

    Returns:
        The degraded-input row, then one row per mode, in ``modes`` order.
    """
    from deploy_kit.metrics import psnr

    if GLOBAL_REFERENCE not in modes or modes[GLOBAL_REFERENCE] is None:
        raise ValueError(f"the modes need '{GLOBAL_REFERENCE}' (every row is compared with it)")
    inputs = Row("degraded input (no model)")
    rows = {label: Row(label) for label in modes}
    for k, (x, clean) in enumerate(pairs):
        image, target = x[0], clean[0]
        inputs.per_image.append((psnr(image, target), ssim(image, target), None, None))
        reference = None
        for label, fn in modes.items():  # GLOBAL_REFERENCE runs first when it is first; else it is run here
            if fn is None:
                continue
            if label in _TLC_MODES and not bundle.supports_tlc:
                rows[label].note = f"{bundle.model} has no TLC form"
                continue
            if reference is None and label != GLOBAL_REFERENCE:
                reference = np.clip(modes[GLOBAL_REFERENCE](bundle, image), 0.0, 1.0)
            t0 = time.perf_counter()
            out = fn(bundle, image)
            seconds = time.perf_counter() - t0
            if out.shape != target.shape:
                raise ValueError(f"mode '{label}' returned {out.shape} for a {image.shape} image; want {target.shape}")
            out = np.clip(out, 0.0, 1.0)
            if label == GLOBAL_REFERENCE:
                reference = out
            rows[label].per_image.append((psnr(out, target), ssim(out, target), psnr(out, reference), seconds))
            log(f"  image {k + 1}/{len(pairs)} {label}: {rows[label].per_image[-1][0]:.2f} dB, {seconds:.2f} s")
    result = [inputs] + [rows[label] for label in modes]
    for row in result:
        if row.per_image:
            cols = list(zip(*row.per_image))
            row.psnr, row.ssim = _mean(list(cols[0])), _mean(list(cols[1]))
            if row is not inputs:
                row.psnr_vs_global, row.seconds = _mean(list(cols[2])), _mean(list(cols[3]))
        elif not row.note:
            row.note = "not implemented yet"
    return result


def _plain(value: Any) -> Any:
    """``value`` with non-finite floats as the strings "inf", "-inf", "nan" (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _fmt(value: Optional[float], spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf (reference)" if value > 0 else "-inf"
    return format(value, spec)


def table(bundle: ModelBundle, rows: list[Row]) -> str:
    """Markdown table for one model (header line, table, TLC-gain lines)."""
    from deploy_kit.runtime.tiling import make_plan

    h, w = bundle.image_hw
    plan = make_plan(h, w, bundle.tile, bundle.overlap, multiple=bundle.multiple)
    lines = [
        f"{bundle.model} {bundle.variant} ({os.path.basename(bundle.weights)}), {bundle.degradation}, {h}x{w}; "
        f"TLC train size {bundle.train_size} ({bundle.train_size_source}; windows {int(1.5 * bundle.train_size)} px "
        f"at full resolution); tiles {bundle.tile[0]}x{bundle.tile[1]}, overlap {bundle.overlap}, origins on multiples "
        f"of {bundle.multiple}: {plan.tiles} tiles, pixel factor {plan.pixel_factor:.2f}",
        "",
        "| mode | PSNR dB | SSIM | PSNR vs full global dB | s / image |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        if r.note and not r.per_image:
            lines.append(f"| {r.mode} | - | - | - | - ({r.note}) |")
            continue
        lines.append(f"| {r.mode} | {_fmt(r.psnr, '.2f')} | {_fmt(r.ssim, '.4f')} | {_fmt(r.psnr_vs_global, '.2f')} | "
                     f"{_fmt(r.seconds, '.2f')} |")
    by = {r.mode: r for r in rows}
    gains = []
    for a, b, what in (("full-image TLC", GLOBAL_REFERENCE, "full image"), ("tiled TLC", "tiled global", "tiled")):
        if by.get(a) and by.get(b) and by[a].psnr is not None and by[b].psnr is not None:
            gains.append(f"{what} {by[a].psnr - by[b].psnr:+.2f} dB PSNR / {by[a].ssim - by[b].ssim:+.4f} SSIM")
    if gains:
        lines += ["", "TLC gain over global: " + "; ".join(gains)]
    return "\n".join(lines)


def _key_value(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise SystemExit(f"{flag} takes MODEL=VALUE; got '{item}'")
        out[key] = value
    return out


def _size(text: str) -> tuple[int, int]:
    h, sep, w = text.lower().partition("x")
    try:
        return (int(h), int(w)) if sep else (int(h), int(h))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"size must be H or HxW; got '{text}'") from exc


def main(argv: Optional[list[str]] = None) -> None:
    from deploy_kit.runtime.tiling import DEFAULT_OVERLAP

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="nafnet,restormer", help="comma-separated: nafnet, restormer")
    ap.add_argument("--weights", action="append", default=[], metavar="MODEL=PATH",
                    help="a checkpoint for MODEL instead of its demo (repeatable)")
    ap.add_argument("--degradation", action="append", default=[], metavar="MODEL=SPEC",
                    help="input degradation for MODEL (default: its variant's task)")
    ap.add_argument("--size", type=_size, default=(384, 512), help="evaluation crop HxW (default 384x512)")
    ap.add_argument("--count", type=int, default=9, help="evaluation pairs (default 9: three per usable photo)")
    ap.add_argument("--seed", type=int, default=1, help="eval_pairs seed (crop positions and degradation noise)")
    ap.add_argument("--tile", type=_size, default=(256, 256), help="tile HxW (default 256x256)")
    ap.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help=f"tile overlap (default {DEFAULT_OVERLAP}, the runtime's)")
    ap.add_argument("--batch", type=int, default=1, help="tiles per model call (default 1)")
    ap.add_argument("--train-size", type=int, help="TLC training size (default: the checkpoint's training patch, else 256)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--quiet", action="store_true", help="no per-image progress")
    a = ap.parse_args(argv)

    import torch

    from deploy_kit.precision.calibration import eval_pairs

    torch.set_num_threads(a.threads)
    weights = {**DEMO_WEIGHTS, **_key_value(a.weights, "--weights")}
    degradations = _key_value(a.degradation, "--degradation")
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    for m in models:
        if m not in DEMO_WEIGHTS:
            raise SystemExit(f"unknown model '{m}'; choose from {', '.join(DEMO_WEIGHTS)}")
    log = (lambda s: None) if a.quiet else (lambda s: print(s, file=sys.stderr, flush=True))
    command = "python benchmarks/bench_context.py " + " ".join(shlex.quote(s) for s in (argv if argv is not None else sys.argv[1:]))
    print(f"`{command.strip()}` (torch {torch.__version__}, {a.threads} thread(s))")
    report: dict[str, Any] = {
        "command": command.strip(), "torch": torch.__version__, "threads": a.threads, "size": list(a.size),
        "count": a.count, "seed": a.seed, "tile": list(a.tile), "overlap": a.overlap, "batch": a.batch,
        "ssim": "Gaussian 11x11 sigma 1.5, K1 0.01, K2 0.03, data range 1, per RGB channel averaged, valid region",
        "outputs": "clipped to [0, 1] before scoring", "models": [],
    }
    started = time.perf_counter()
    for m in models:
        bundle = load_bundle(m, weights[m], degradations.get(m), a.train_size, a.size, a.tile, a.overlap, a.batch)
        pairs = eval_pairs(channels=bundle.channels, height=a.size[0], width=a.size[1], count=a.count,
                           degradation=bundle.degradation, seed=a.seed, scale=1)
        log(f"{m} {bundle.variant}: {len(pairs)} pairs of {a.size[0]}x{a.size[1]}, {bundle.degradation}")
        rows = measure(bundle, pairs, MODES, log)
        print("\n" + table(bundle, rows), flush=True)
        report["models"].append({
            "model": m, "variant": bundle.variant, "weights": os.path.relpath(bundle.weights, REPO)
            if bundle.weights.startswith(REPO) else bundle.weights, "degradation": bundle.degradation,
            "tlc_train_size": bundle.train_size, "tlc_train_size_source": bundle.train_size_source,
            "multiple": bundle.multiple,
            "rows": [{"mode": r.mode, "psnr": r.psnr, "ssim": r.ssim, "psnr_vs_global": r.psnr_vs_global,
                      "seconds_per_image": r.seconds, "note": r.note,
                      "per_image": [dict(zip(("psnr", "ssim", "psnr_vs_global", "seconds"), p)) for p in r.per_image]}
                     for r in rows],
        })
    total = time.perf_counter() - started
    print(f"\ntotal {total:.1f} s")
    report["total_seconds"] = total
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(_plain(report), fh, indent=2, allow_nan=False)
            fh.write("\n")


if __name__ == "__main__":
    main()
