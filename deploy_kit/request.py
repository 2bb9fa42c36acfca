"""Turn what the user asked for (CLI flags or Python keywords) into one validated ExportRequest.

``deploy-kit export`` and the Python API (:func:`deploy_kit.pipeline.run_export` callers) share
this function, so a flag means the same thing everywhere and every bad combination is rejected
with one line before any work starts. Torch is imported only to read a checkpoint's shapes.
"""

from __future__ import annotations

import os
import re

from . import onnxsource
from .data.degrade import degradation_scale, parse_degradation
from .errors import UsageError
from .manifest import file_sha256
from .models import get_adapter
from .models.registry import get_spec
from .specs import PRECISIONS, ExportRequest, TLCConfig, UserSource


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
        _check_superres_degradation(degradation, 1)  # a bad spec stops here, with one line
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


def resolve_user_request(
    source: str,
    *,
    module: bool,
    init_args: str | None = None,
    weights: str | None = None,
    height: int | None = None,
    width: int | None = None,
    channels: int | None = None,
    scale: int | None = None,
    pad_multiple: int | None = None,
    value_range: float = 1.0,
    tlc: bool | None = None,
    train_size: int | None = None,
    precision: str = "fp32",
    degradation: str | None = None,
    seed: int = 0,
    batch: int = 1,
) -> ExportRequest:
    """The request for a user's own model: ``FILE.py:NAME`` / ``package.module:NAME`` or an ONNX file.

    What the flags leave open is inferred by a probe run (the module's first convolution and
    forward passes, deploy_kit/models/user.py; the ONNX graph's dims and one ONNX Runtime run,
    deploy_kit/onnxsource.py).

    Args:
        source: the module reference, or the ONNX file's path.
        module: True for a module reference, False for an ONNX file.
        init_args: the module's constructor keyword arguments as a JSON object.
        channels, scale, pad_multiple: as the flags say, or None to infer them.
        value_range: 1 (the model takes [0, 1]) or 255.
        The rest: as :func:`resolve_request`.

    Raises:
        UsageError / CheckpointError: one line saying what is wrong or which flag to pass.
    """
    import json

    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if degradation is not None:
        parse_degradation(degradation)
    if value_range not in (1, 255):
        raise UsageError(f"--value-range must be 1 (inputs in [0, 1]) or 255 (inputs in [0, 255]); got {value_range:g}")
    for flag, value in (("--channels", channels), ("--scale", scale), ("--pad-multiple", pad_multiple)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1; got {value}")
    if weights is not None and not os.path.isfile(weights):
        raise UsageError(f"weights file not found: {weights}")
    if train_size is not None and train_size < 16:
        raise UsageError(f"--train-size must be at least 16; got {train_size}")
    if not module:
        return _onnx_request(source, weights=weights, height=height, width=width, channels=channels, scale=scale,
                             pad_multiple=pad_multiple, value_range=value_range, tlc=tlc, train_size=train_size,
                             precision=precision, degradation=degradation, seed=seed, batch=batch)
    if train_size is not None and not tlc:
        raise UsageError("--train-size only applies with --tlc")
    from .models.user import build_module, load_weights, parse_init_args, probe_module  # torch

    args = parse_init_args(init_args)
    h, w = height or 256, width or 256
    if h <= 0 or w <= 0:
        raise UsageError(f"height and width must be positive integers; got {h}x{w}")
    model = build_module(source, args, seed)
    if weights:
        load_weights(model, weights)  # a wrong checkpoint stops here, before the probe
    ch, out_ch, s, multiple, pools, flat = probe_module(model, channels=channels, scale=scale, pad_multiple=pad_multiple,
                                                        height=h, width=w)
    _check_superres_degradation(degradation, s)
    if tlc and not pools:
        flat_note = f" ({flat} global means without keepdim, which TLC cannot replace)" if flat else ""
        raise UsageError(f"--tlc: no global average pooling found in {source} (nn.AdaptiveAvgPool2d(1), "
                         f"x.mean((-2, -1), keepdim=True)){flat_note}; drop --tlc")
    where, _, attr = source.rpartition(":")
    ref = f"{os.path.abspath(where)}:{attr}" if where.endswith(".py") else source  # verify re-imports it from anywhere
    src = UserSource("module", ref, attr.lower(), json.dumps(args, sort_keys=True), ch, out_ch, s, multiple, float(value_range),
                     file_sha256(where) if where.endswith(".py") else None, pools)
    tlc_cfg = TLCConfig.from_train_size(train_size or 256) if tlc else None
    req = ExportRequest("module", attr.lower(), h, w, precision, tlc_cfg, weights, (), seed, degradation=degradation,
                        batch=batch, source=src)
    validate_request(req)
    return req


def _onnx_request(path: str, *, weights, height, width, channels, scale, pad_multiple, value_range, tlc, train_size,
                  precision, degradation, seed, batch) -> ExportRequest:
    import tempfile

    if weights:
        raise UsageError("--weights does not apply to an ONNX file (its weights are inside it)")
    if value_range != 1:
        raise UsageError("--value-range applies to --module; an ONNX file is run as is, so its input must be [0, 1]")
    if tlc or train_size:
        raise UsageError("--tlc rewrites a PyTorch module's pooling; export the module with --module FILE.py:NAME instead")
    dims, _, _ = onnxsource.inspect(path)
    n, c, gh, gw = dims
    h, w = height or gh, width or gw
    if h is None or w is None:
        raise UsageError(f"{path} has a dynamic height or width; pass --height and --width")
    ch = c or channels
    if ch is None:
        raise UsageError(f"{path} has a dynamic channel dimension; pass --channels")
    if channels is not None and c is not None and channels != c:
        raise UsageError(f"--channels {channels} but {path} takes {c} channels")
    if n is not None and n != batch:
        raise UsageError(f"{path} is fixed at batch {n}; pass --batch {n} or export it with a dynamic batch")
    multiple = pad_multiple or 1
    if h % multiple or w % multiple:
        raise UsageError(f"--height/--width {h}x{w} must be multiples of --pad-multiple {multiple}")
    with tempfile.TemporaryDirectory(prefix="dk-onnx-probe-") as tmp:
        fixed = os.path.join(tmp, "probe.onnx")
        onnxsource.fix_dims(path, fixed, 1, h, w)
        out_ch, s = onnxsource.probe(fixed, ch, h, w)
    if scale is not None and scale != s:
        raise UsageError(f"--scale {scale} but {path} outputs {s}x its input")
    _check_superres_degradation(degradation, s)
    name = re.sub(r"[^a-z0-9_.-]+", "-", os.path.splitext(os.path.basename(path))[0].lower()).strip("-.") or "model"
    src = UserSource("onnx", os.path.abspath(path), name, "{}", ch, out_ch, s, multiple, float(value_range),
                     file_sha256(path), 0)
    req = ExportRequest("onnx", name, h, w, precision, None, None, (), seed, degradation=degradation, batch=batch,
                        source=src)
    validate_request(req)
    return req


def _check_superres_degradation(degradation: str | None, scale: int) -> None:
    """A x``scale`` model's inputs are photos shrunk ``scale`` times: a given --degradation must say so."""
    if degradation is None:
        return
    got = degradation_scale(degradation)
    if got != scale and scale == 1:
        raise UsageError(f"--degradation '{degradation}' shrinks the input {got}x, but the model's output is its "
                         "input's size; downscale:S is for super-resolution models")
    if got != scale:
        raise UsageError(f"the model upscales x{scale}, so --degradation must shrink its inputs as much: "
                         f"e.g. 'downscale:{scale}' or 'downscale:{scale}+noise:5'; got '{degradation}'")
