"""Train the small demo checkpoints shipped in this folder (CPU, one thread, a few minutes).

The demo checkpoints give INT8/FP16 parity and the quality table *trained* weights to measure:
random weights make activation ranges (and so INT8 error) unrepresentative. They are real
restoration models, only small: trained on the images of ``calibration/train.json`` (photographs
bundled with scikit-image) with the same degradation code the calibration set uses
(:func:`deploy_kit.data.degrade.degrade`), and evaluated on the held-out
``calibration/eval.json`` images.

Usage (from the project root)::

    OMP_NUM_THREADS=1 python -m deploy_kit.demo.train --model nafnet --degradation noise:25 \\
        --iters 700 --out deploy_kit/demo/nafnet-demo-w16-noise25.pth

The checkpoint is ``{'params': state_dict}`` (the BasicSR layout official NAFNet/Restormer
weights use), so ``deploy-kit export nafnet --weights <file>`` loads it like an official one.
A ``.json`` record next to it keeps the configuration, timing and PSNR figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from deploy_kit.data.degrade import degrade
from deploy_kit.metrics import psnr
from deploy_kit.models import get_adapter
from deploy_kit.precision.calibration import eval_pairs, manifest_path, read_input, read_manifest
from deploy_kit.specs import Variant

# Architecture of each demo, as constructor kwargs of the official class (read back from the
# checkpoint keys by the adapter, so it needs no registry entry).
DEMO_HPARAMS: dict[str, dict[str, Any]] = {
    # ~0.29 M parameters, 3 levels: about 0.4 s per batch of 8x64x64 on one CPU thread.
    "nafnet": dict(img_channel=3, width=16, middle_blk_num=1, enc_blk_nums=[1, 1, 1], dec_blk_nums=[1, 1, 1]),
    # ~0.46 M parameters, official layout at dim 12 with one block per level: ~0.7 s per batch.
    "restormer": dict(
        inp_channels=3, out_channels=3, dim=12, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1,
        heads=[1, 2, 4, 8], ffn_expansion_factor=2.66, bias=False, LayerNorm_type="WithBias",
        dual_pixel_task=False,
    ),
}


def build(model_name: str, hparams: dict[str, Any] | None = None):
    """The demo architecture with PyTorch's default initialisation (beta/gamma zero, as upstream)."""
    adapter = get_adapter(model_name)
    variant = Variant.make("demo", hparams or DEMO_HPARAMS[model_name])
    return adapter.build(variant).train()


def load_training_images(channels: int, min_side: int) -> list[np.ndarray]:
    """HWC float images of calibration/train.json (the same loader calibration uses)."""
    files = read_manifest(manifest_path("train"))["files"]
    imgs = [read_input(p, channels) for p in files]
    return [im for im in imgs if min(im.shape[:2]) >= min_side]


def batches(images: list[np.ndarray], batch: int, patch: int, degradation: str, seed: int):
    """Endless (degraded, clean) NCHW float32 batches: random crops, flips and 90° rotations."""
    rng = np.random.default_rng(seed)
    while True:
        clean, noisy = [], []
        for _ in range(batch):
            img = images[int(rng.integers(len(images)))]
            t = int(rng.integers(0, img.shape[0] - patch + 1))
            l = int(rng.integers(0, img.shape[1] - patch + 1))
            crop = img[t : t + patch, l : l + patch]
            crop = np.rot90(crop, int(rng.integers(4)))
            if rng.integers(2):
                crop = crop[:, ::-1]
            crop = np.ascontiguousarray(crop, dtype=np.float32)
            clean.append(crop.transpose(2, 0, 1))
            noisy.append(degrade(crop, degradation, rng).transpose(2, 0, 1))
        yield np.stack(noisy), np.stack(clean)


def evaluate(model, degradation: str, size: int, count: int, channels: int) -> tuple[float, float]:
    """Mean (input PSNR, output PSNR) over held-out eval pairs (output clipped to [0, 1])."""
    import torch

    pairs = eval_pairs(channels=channels, height=size, width=size, count=count, degradation=degradation)
    model.eval()
    ins, outs = [], []
    with torch.no_grad():
        for x, y in pairs:
            out = model(torch.from_numpy(x)).clamp(0, 1).numpy()
            ins.append(psnr(x, y))
            outs.append(psnr(out, y))
    return float(np.mean(ins)), float(np.mean(outs))


def train(
    model_name: str,
    degradation: str,
    iters: int,
    out: str,
    *,
    batch: int = 8,
    patch: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    eval_size: int = 256,
    eval_count: int = 8,
    log_every: int = 50,
) -> dict[str, Any]:
    """Train one demo model and write ``out`` (``{'params': sd}``) plus ``out`` with ``.json``.

    Returns:
        The training record written to the ``.json`` sidecar.
    """
    import torch

    torch.manual_seed(seed)
    hparams = DEMO_HPARAMS[model_name]
    channels = int(hparams.get("img_channel", hparams.get("inp_channels", 3)))
    model = build(model_name, hparams)
    images = load_training_images(channels, patch)
    data = batches(images, batch, patch, degradation, seed)
    # AdamW + cosine decay, betas (0.9, 0.9) and weight decay 0 as in NAFNet's option files.
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.9), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iters, eta_min=lr * 1e-3)
    t0 = time.time()
    running = 0.0
    for it in range(1, iters + 1):
        x, y = next(data)
        pred = model(torch.from_numpy(x))
        loss = torch.nn.functional.l1_loss(pred, torch.from_numpy(y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running += loss.item()
        if it % log_every == 0:
            print(f"iter {it}/{iters}  l1 {running / log_every:.4f}  {time.time() - t0:.0f}s", flush=True)
            running = 0.0
    train_s = time.time() - t0
    psnr_in, psnr_out = evaluate(model, degradation, eval_size, eval_count, channels)
    model.eval()
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    torch.save({"params": sd}, tmp)
    os.replace(tmp, out)
    record = {
        "model": model_name,
        "hparams": hparams,
        "parameters": int(sum(v.numel() for v in sd.values())),
        "degradation": degradation,
        "training_images": [os.path.basename(p) for p in _train_files()],
        "iterations": iters,
        "batch": batch,
        "patch": patch,
        "loss": "L1",
        "optimizer": f"AdamW lr {lr:g} betas (0.9, 0.9), cosine to {lr * 1e-3:g}",
        "seed": seed,
        "threads": torch.get_num_threads(),
        "train_seconds": round(train_s, 1),
        "eval": {
            "pairs": eval_count,
            "size": f"{eval_size}x{eval_size}",
            "images": "calibration/eval.json (held out)",
            "input_psnr": round(psnr_in, 2),
            "output_psnr": round(psnr_out, 2),
        },
        "file_bytes": os.path.getsize(out),
        "torch": torch.__version__,
    }
    with open(os.path.splitext(out)[0] + ".json", "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=2)
        fh.write("\n")
    print(json.dumps(record["eval"]), f"train {train_s:.0f}s", flush=True)
    return record


def _train_files() -> list[str]:
    return read_manifest(manifest_path("train"))["files"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="nafnet", choices=sorted(DEMO_HPARAMS))
    p.add_argument("--degradation", default="noise:25")
    p.add_argument("--iters", type=int, default=700)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--patch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    train(a.model, a.degradation, a.iters, a.out, batch=a.batch, patch=a.patch, lr=a.lr, seed=a.seed)


if __name__ == "__main__":
    main()
