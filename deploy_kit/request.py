"""Turn what the user asked for (CLI flags or Python keywords) into one validated ExportRequest.

``deploy-kit export`` and the Python API (:func:`deploy_kit.pipeline.run_export` callers) share
this function, so a flag means the same thing everywhere and every bad combination is rejected
with one line before any work starts. Torch is imported only to read a checkpoint's shapes.
"""

from __future__ import annotations

import os

from .data.degrade import parse_degradation
from .errors import UsageError
from .models import get_adapter
from .models.registry import get_spec
from .specs import PRECISIONS, ExportRequest, TLCConfig


def resolve_request(
    model: str,
    *,
    variant: str | None = None,
    weights: str | None = None,
    height: int | None = None,
    width: int | None = None,
    tlc: bool | None = None,
    train_size: int | None = None,
    precision: str = "fp32",
    degradation: str | None = None,
    options: dict[str, str | None] | None = None,
    seed: int = 0,
    batch: int = 1,
) -> ExportRequest:
    """Resolve defaults (variant from the checkpoint, TLC per variant, size per model) and validate.

    Args:
        model: registered model name.
        variant: variant name, or None (read from ``weights``, else the model's default).
        weights: checkpoint path or None for random weights.
        height, width: export size (default: the model's default size).
        tlc: True/False, or None for the variant's upstream default.
        train_size: TLC training patch size (default 256).
        precision: ``fp32`` | ``fp16`` | ``int8``.
        degradation: parity/calibration input degradation (None: the variant's task).
        options: model-specific options (e.g. ``{"head": "features"}``); None values = default.
        seed: random-weight, noise and calibration seed.
        batch: the static batch dimension N of the exported graph, input (N, C, H, W); >= 1.

    Raises:
        UsageError / CheckpointError: one line saying what is wrong.
    """
    spec = get_spec(model)
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if degradation is not None:
        parse_degradation(degradation)  # a bad spec stops here, with one line
    if variant is not None:
        spec.variant(variant)  # unknown variant: one line listing the known ones
    if weights is not None and not os.path.isfile(weights):
        raise UsageError(f"weights file not found: {weights}")
    known = dict(spec.options)
    given = {k: v for k, v in (options or {}).items() if v is not None}
    for key, value in given.items():
        if key not in known:
            raise UsageError(f"--{key} does not apply to {model}")
        if value not in known[key]:
            raise UsageError(f"unknown {model} {key} '{value}'; choose one of: {', '.join(known[key])}")
    opts = tuple((key, given.get(key, values[0])) for key, values in spec.options)

    if tlc and not spec.supports_tlc:
        raise UsageError(f"{model} has no TLC form; drop --tlc")
    if train_size is not None:
        if not spec.supports_tlc:
            raise UsageError(f"--train-size only applies to models with TLC; {model} has none")
        if tlc is False:
            raise UsageError("--train-size only applies with TLC; drop --no-tlc or --train-size")
        if train_size < 16:
            raise UsageError(f"--train-size must be at least 16; got {train_size}")

    if variant is None and weights is not None:
        # the checkpoint decides the variant (and with it the TLC default)
        from .models.checkpoint import match_variant, read_state_dict  # torch

        variant = match_variant(spec, get_adapter(model).detect_hparams(read_state_dict(weights))).name
    vname = variant or spec.default_variant
    tlc_default = next((v.tlc_default for v in spec.variants if v.name == vname), False)
    use_tlc = spec.supports_tlc and (tlc if tlc is not None else tlc_default)
    h = spec.default_size[0] if height is None else height
    w = spec.default_size[1] if width is None else width
    req = ExportRequest(model, vname, h, w, precision, TLCConfig.from_train_size(train_size or 256) if use_tlc else None,
                        weights, opts, seed, degradation=degradation, batch=batch)
    validate_request(req)
    return req


def validate_request(req: ExportRequest) -> None:
    """Reject impossible requests with one line before any work is done.

    Raises:
        UsageError: a non-positive or oversized size or batch, or an unknown precision.
    """
    if req.height <= 0 or req.width <= 0:
        raise UsageError(f"height and width must be positive integers; got {req.height}x{req.width}")
    if req.height * req.width > 8192 * 8192:
        raise UsageError(f"{req.height}x{req.width} is larger than deploy-kit supports (8192x8192); tile the image instead")
    if isinstance(req.batch, bool) or not isinstance(req.batch, int) or req.batch < 1:
        raise UsageError(f"--batch must be an integer of at least 1; got {req.batch}")
    if req.batch * req.height * req.width > 8192 * 8192:
        # one forward pass holds every element's activations: the same memory bound as one image
        raise UsageError(f"--batch {req.batch} at {req.height}x{req.width} is {req.batch} x {req.height * req.width} "
                         "pixels per pass, more than deploy-kit supports (8192x8192); use a smaller batch")
    if req.precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{req.precision}'; choose one of {', '.join(PRECISIONS)}")
