"""Load official checkpoints safely and pick the variant they were trained as."""

from __future__ import annotations

import os
import warnings
import zipfile
from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ..errors import CheckpointError
from ..specs import ModelSpec, Variant
from .base import ModelAdapter

# BasicSR writes {'params': sd} (or params_ema), DeiT/PVT {'model': sd}, MPRNet {'state_dict': sd}.
_WRAPPER_KEYS = ("params_ema", "params", "model", "state_dict", "net", "network")


@dataclass
class LoadedModel:
    """A ready model plus how it was obtained (printed in the run summary and manifest)."""

    model: nn.Module
    variant: Variant
    weights: str | None
    note: str


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Read a checkpoint with ``torch.load(weights_only=True)`` and unwrap it to a flat state dict.

    Raises:
        CheckpointError: missing file, not a torch checkpoint, no tensor dict inside, or a tensor
            holding NaN/Inf (the first such key is named: a diverged run is a bad input, not a
            parity failure found minutes later).
    """
    if not os.path.isfile(path):
        raise CheckpointError(f"weights file not found: {path}")
    # torch.save stores its records uncompressed; a zip that inflates far past its own size is a
    # zip bomb (torch would inflate every record into memory before any check)
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError):
        declared = 0  # not a zip (legacy format) or a damaged one: torch.load says which below
    size = os.path.getsize(path)
    if declared > 2 * size + (64 << 20):
        raise CheckpointError(f"{path} inflates to {declared / 2**30:.1f} GiB from {size / 2**20:.1f} MiB (torch.save "
                              "never compresses: a zip bomb or a repacked file); pass an official .pth file")
    # a bad file can make torch warn before it raises (random bytes read as pickle protocol 133:
    # "Detected pickle protocol ..."): the one error line below says it all, so its warnings are
    # dropped; a good file's are passed on
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise CheckpointError(
                f"cannot read {path} as a PyTorch checkpoint ({first[:160]}); pass an official .pth file"
            ) from exc
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)

    def is_state_dict(d: Any) -> bool:  # names (str) -> tensors
        return isinstance(d, Mapping) and bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                          for k, v in d.items())

    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if is_state_dict(inner):
                obj = inner
                break
    if not is_state_dict(obj):
        raise CheckpointError(
            f"{path} holds no state dict (expected tensors by name, or such a dict under 'params'/'model'/'state_dict')"
        )
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items()}
    for key, value in sd.items():
        odd = ("sparse" if value.layout != torch.strided else "nested" if value.is_nested
               else "meta (no data)" if value.is_meta else None)
        if odd:
            raise CheckpointError(f"{path}: tensor '{key}' is {odd}; a model checkpoint holds dense tensors — "
                                  "pass an official .pth file")
        if value.is_floating_point() or value.is_complex():
            if value.is_floating_point() and value.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
                value = value.float()  # float8 & co: no isfinite kernel
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(
                    f"{path}: tensor '{key}' holds {bad} NaN/Inf value{'s' if bad > 1 else ''}; the checkpoint is "
                    "damaged or from a diverged run — use another one"
                )
    return sd


def key_mismatches(expected: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor], needs: str) -> list[str]:
    """What keeps ``sd`` from loading strictly into a model whose state dict is ``expected``: missing and
    unexpected keys and shape mismatches, each with its first examples (empty when it fits).

    Args:
        needs: how the message names the model's shape, e.g. ``"gopro-w32 needs"``.
    """
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} keys (e.g. {', '.join(unexpected[:3])})")
    wrong = [k for k, v in expected.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    if wrong:
        k = wrong[0]
        problems.append(f"{len(wrong)} shape mismatches (e.g. {k} is {tuple(sd[k].shape)}, {needs} {tuple(expected[k].shape)})")
    return problems


def match_variant(spec: ModelSpec, hparams: dict[str, Any]) -> Variant:
    """The registered variant with exactly these hyper-parameters, else a 'custom' one."""
    frozen = Variant.make("custom", hparams)
    for v in spec.variants:
        if v.hparams == frozen.hparams:
            return v
    return Variant.make("custom", hparams, summary="hyper-parameters read from the checkpoint")


def load_model(adapter: ModelAdapter, variant_name: str | None, weights: str | None, seed: int = 0,
               init: str = "active") -> LoadedModel:
    """Build the model, from a checkpoint or with random (non-degenerate) weights.

    Args:
        adapter: the architecture's adapter.
        variant_name: requested variant, or None to infer it from the checkpoint (or use the default).
        weights: checkpoint path or None for random weights.
        seed: random-weight seed.
        init: without ``weights``: ``active`` (every residual branch contributes: what parity
            needs) or ``official`` (the official code's initialisation, exact zeros and ones
            included: what an untrained official checkpoint holds).

    Raises:
        CheckpointError: unreadable file, other architecture, or a checkpoint that contradicts
            the requested variant (missing/unexpected keys listed).
    """
    spec = adapter.spec
    if weights is None:
        variant = spec.variant(variant_name or spec.default_variant)
        if init == "official":
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                model = adapter.build(variant)
                adapter.official_init_(model)
            return LoadedModel(model.eval(), variant, None, f"official initialisation (seed {seed}), untrained")
        model = adapter.build(variant)
        adapter.randomize_(model, seed)
        return LoadedModel(model.eval(), variant, None, f"random weights (seed {seed}); pass --weights for real output")

    sd = read_state_dict(weights)
    detected = match_variant(spec, adapter.detect_hparams(sd))
    variant = spec.variant(variant_name) if variant_name else detected
    model = adapter.build(variant)
    problems = key_mismatches(model.state_dict(), sd, f"{variant.name} needs")
    if problems:
        hint = f"; the checkpoint looks like '{detected.name}', drop --variant" if variant_name and detected.name != variant_name else ""
        raise CheckpointError(f"{weights} does not fit {spec.name} {variant.name}: {'; '.join(problems)}{hint}")
    model.load_state_dict(sd, strict=True)
    note = f"weights {os.path.basename(weights)}"
    if not variant_name:
        twins = [v.name for v in spec.variants if v.hparams == variant.hparams and v.name != variant.name]
        note += " (variant inferred from the checkpoint"
        note += f"; same architecture as {', '.join(twins)}: pass --variant to name it)" if twins else ")"
    return LoadedModel(model.eval(), variant, weights, note)


def load_request(adapter: ModelAdapter, req) -> LoadedModel:
    """The model a request names: its family's variant and ``--weights``, or a user's own module.

    Raises:
        CheckpointError / UsageError: as :func:`load_model` (or the user adapter's ``load``) raises them.
    """
    own = getattr(adapter, "load", None)  # a user's module builds from the request itself (models/user.py)
    if own is not None:
        return own(req)
    return load_model(adapter, None if req.variant == "custom" else req.variant, req.weights, req.seed)
