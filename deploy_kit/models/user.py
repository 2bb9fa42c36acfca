"""Your own model: an ``nn.Module`` from your code (``export --module``) or an ONNX file (``export model.onnx``).

A user's model has no family file, so what a family's spec says is read from flags or found by a
probe run (:func:`probe_module`) and travels in the request (:class:`deploy_kit.specs.UserSource`):
input and output channels, the output scale (super-resolution), the size multiple, the value range.
Importing the user's Python file runs it, as ``python FILE.py`` would.

The module's export form is the module itself with the graph's [0, 1] I/O scaled to its value range,
and with ``--tlc`` every global average pooling replaced by TLC's local pooling
(:class:`deploy_kit.tlc.GlobalPoolSites`). An ONNX file's reference is that graph in ONNX Runtime
FP32; the pipeline loads it without torch (deploy_kit/onnxsource.py), so its adapter only names
the I/O.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import sys
from typing import Any, Callable

import torch
from torch import nn

from ..data.degrade import parse_degradation
from ..errors import CheckpointError, UsageError
from ..specs import ExportRequest, UserSource, Variant
from ..tlc import GlobalPoolSites, LocalAvgPoolStatic, record_global_pools, tlc_kernels
from .base import ModelAdapter
from .checkpoint import LoadedModel, key_mismatches, read_state_dict
from .registry import get_spec
from .sync import SyncForm, SyncMean, SyncState

#: (multiple, probe size) pairs: each size is a multiple of its multiple and of no larger one here,
#: so the first that runs and comes out scaled on both axes is the model's size rule
_MULTIPLES = ((1, 49), (2, 50), (4, 52), (8, 56), (16, 80), (32, 96), (64, 192))


def import_factory(ref: str) -> Callable[..., Any]:
    """The class or function ``ref`` names: ``path/to/file.py:NAME`` or ``package.module:NAME``.

    Raises:
        UsageError: a malformed reference, a missing file or name, or an import that raised.
    """
    where, sep, name = ref.rpartition(":")
    if not sep or not where or not name.isidentifier():
        raise UsageError(f"--module {ref!r}: expected FILE.py:NAME or package.module:NAME")
    try:
        if where.endswith(".py"):
            if not os.path.isfile(where):
                raise UsageError(f"--module: file not found: {where}")
            mod_name = "deploy_kit_user_" + os.path.splitext(os.path.basename(where))[0]
            spec = importlib.util.spec_from_file_location(mod_name, os.path.abspath(where))
            module = importlib.util.module_from_spec(spec)
            folder = os.path.dirname(os.path.abspath(where))
            sys.path.insert(0, folder)  # its sibling imports resolve as when it runs as a script
            try:
                spec.loader.exec_module(module)
            finally:
                sys.path.remove(folder)
        else:
            module = importlib.import_module(where)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code may raise anything
        raise UsageError(f"--module: importing {where} raised {type(exc).__name__}: {str(exc)[:200]}") from exc
    factory = getattr(module, name, None)
    if not callable(factory):
        raise UsageError(f"--module: {where} has no class or function named {name}")
    return factory


def parse_init_args(text: str | None) -> dict[str, Any]:
    """``--init-args`` JSON: an object of keyword arguments.

    Raises:
        UsageError: not JSON, or not an object.
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--init-args is not JSON ({exc.msg} at character {exc.pos}); e.g. '{{\"scale\": 4}}'") from None
    if not isinstance(value, dict):
        raise UsageError("--init-args must be a JSON object of keyword arguments, e.g. '{\"scale\": 4}'")
    return value


def build_module(ref: str, init_args: dict[str, Any], seed: int = 0) -> nn.Module:
    """Construct the user's model (its own initialisation, under ``seed``), eval mode, FP32.

    Raises:
        UsageError: the constructor raised or did not return an ``nn.Module``.
    """
    factory = import_factory(ref)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        try:
            model = factory(**init_args)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"--module: {ref}(**init_args) raised {type(exc).__name__}: {str(exc)[:200]}") from exc
    if not isinstance(model, nn.Module):
        raise UsageError(f"--module: {ref} returned {type(model).__name__}, not a torch.nn.Module")
    return model.float().eval()


def load_weights(model: nn.Module, weights: str) -> None:
    """Load a checkpoint strictly (``weights_only``; ``params``/``params_ema``/``state_dict``/``model`` unwrapped).

    Raises:
        CheckpointError: unreadable, or keys/shapes that do not match (the first ones named).
    """
    sd = read_state_dict(weights)
    problems = key_mismatches(model.state_dict(), sd, "the model has")
    if problems:
        raise CheckpointError(f"{weights} does not fit the module: {'; '.join(problems)}; check --init-args")
    model.load_state_dict(sd, strict=True)


def _first_conv_channels(model: nn.Module) -> int | None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            return int(m.in_channels)
    return None


def _forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """The model's single image output on ``x``, or None when it fails at this size."""
    try:
        with torch.no_grad():
            y = model(x)
    except Exception:  # noqa: BLE001 - a size the model cannot take
        return None
    return y if isinstance(y, torch.Tensor) and y.dim() == 4 else None


def probe_module(model: nn.Module, *, channels: int | None, scale: int | None, pad_multiple: int | None,
                 height: int, width: int) -> tuple[int, int, int, int, int, int]:
    """Infer what the flags did not say: (channels, out_channels, scale, pad_multiple, pools, flat pools).

    Channels come from the first convolution; the size multiple is the first of 1, 2, 4 … 64 at
    whose probe size the model runs and scales both axes alike; the scale and output channels come
    from a forward pass at the export size; global pools are counted on that pass.

    Raises:
        UsageError: one line naming the flag to pass when something cannot be inferred.
    """
    ch = channels or _first_conv_channels(model)
    if ch is None:
        raise UsageError("cannot tell the input channels (no Conv2d found); pass --channels")
    if pad_multiple is None:
        for m, size in _MULTIPLES:
            y = _forward(model, torch.rand(1, ch, size, size))
            if y is not None and y.shape[-2] == y.shape[-1] and y.shape[-1] % size == 0:
                pad_multiple = m
                break
        else:
            raise UsageError("the module runs at none of the probe sizes 49..192 with input "
                             f"(1, {ch}, s, s); pass --channels and --pad-multiple")
    if height % pad_multiple or width % pad_multiple:
        raise UsageError(f"--height/--width {height}x{width} must be multiples of {pad_multiple} (the model's size "
                         f"multiple); e.g. {height // pad_multiple * pad_multiple or pad_multiple}x"
                         f"{width // pad_multiple * pad_multiple or pad_multiple}")
    x = torch.rand(1, ch, height, width)
    sites = GlobalPoolSites("record")
    with torch.no_grad(), sites:
        try:
            y = model(x)
        except Exception as exc:  # noqa: BLE001
            raise UsageError(f"the module fails on a (1, {ch}, {height}, {width}) input: {type(exc).__name__}: "
                             f"{str(exc)[:160]}; check --channels/--height/--width") from exc
    if not isinstance(y, torch.Tensor) or y.dim() != 4:
        raise UsageError(f"the module returns {type(y).__name__}, not one (N, C, H, W) image tensor; wrap it so it does")
    sh, sw = y.shape[-2] / height, y.shape[-1] / width
    if sh != sw or sh < 1 or sh != int(sh):
        raise UsageError(f"the output is {tuple(y.shape)} for a {height}x{width} input: not an integer scale >= 1 "
                         "on both axes; deploy-kit exports image-to-image models")
    if scale is not None and scale != int(sh):
        raise UsageError(f"--scale {scale} but the module's output is {int(sh)}x its input")
    return ch, int(y.shape[1]), int(sh), pad_multiple, len(sites.sizes), sites.flat


class _Exportable(nn.Module):
    """The user's module with [0, 1] graph I/O and, with TLC, its global pools made local."""

    def __init__(self, model: nn.Module, value_range: float, mode: str | None, kernels, pools, replace=None):
        super().__init__()
        self.model, self.value_range, self.mode, self.kernels = model, float(value_range), mode, kernels
        self.pools = nn.ModuleList(pools or [])
        self.replace = replace

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.value_range != 1.0:
            x = x * self.value_range
        if self.mode is None:
            y = self.model(x)
        else:
            with GlobalPoolSites(self.mode, self.kernels, list(self.pools), self.replace):
                y = self.model(x)
        return y / self.value_range if self.value_range != 1.0 else y


class UserModuleAdapter(ModelAdapter):
    """A user's ``nn.Module``: everything from ``req.source``."""

    def __init__(self, kind: str):
        self.spec = get_spec(kind)

    def source(self, req: ExportRequest) -> UserSource:
        if req.source is None:
            raise UsageError(f"a '{req.model}' request needs --module or an .onnx file")
        return req.source

    def build(self, variant: Variant) -> nn.Module:
        raise UsageError("a user model is built from its request (UserModuleAdapter.load)")

    def load(self, req: ExportRequest) -> LoadedModel:
        """The module, with ``--weights`` loaded strictly or its own initialisation under the seed."""
        src = self.source(req)
        model = build_module(src.ref, json.loads(src.init_args), req.seed)
        if req.weights:
            load_weights(model, req.weights)
            note = f"weights {os.path.basename(req.weights)}"
        else:
            note = f"the module's own initialisation (seed {req.seed}), untrained; pass --weights for real output"
        return LoadedModel(model.eval(), Variant(src.name, ()), req.weights, note)

    def input_channels(self, req: ExportRequest) -> int:
        return self.source(req).channels

    def global_context(self, req: ExportRequest) -> bool:
        return req.tlc is None and self.source(req).global_pools > 0

    def output_kind(self, req: ExportRequest) -> str:
        return "image" if self.source(req).out_channels in (1, 3) else "features"

    def input_degradation(self, req: ExportRequest) -> str | None:
        spec = req.degradation
        if spec is None:
            scale = self.source(req).scale
            spec = f"downscale:{scale}" if scale > 1 else None
        return spec if spec and parse_degradation(spec) else None

    def wrap(self, model: nn.Module, req: ExportRequest, *, static: bool) -> nn.Module:
        src = self.source(req)
        net = copy.deepcopy(model).eval()
        if req.tlc is None:
            return _Exportable(net, src.value_range, None, None, None).eval()
        kernels = tlc_kernels(net, src.channels, req.tlc.train_size, req.tlc.base_size)
        pools = None
        if static:
            sizes = record_global_pools(net, torch.zeros(1, src.channels, req.height, req.width)).sizes
            pools = [LocalAvgPoolStatic(k, s) for k, s in zip(kernels, sizes)]
        return _Exportable(net, src.value_range, "static" if static else "eager", kernels, pools).eval()

    def reference_label(self, req: ExportRequest) -> str:
        return " with TLC (each global average pool made local, integral-image box mean)" if req.tlc else ""

    def sync_form(self, model: nn.Module, req: ExportRequest):
        """Every global average pool exchanged with the other tiles (deploy_kit/models/sync.py)."""
        src = self.source(req)
        if req.tlc is not None or not src.global_pools:
            return None
        state = SyncState()
        mean = SyncMean(state)
        net = _Exportable(copy.deepcopy(model).eval(), src.value_range, "replace", None, None, mean)
        return SyncForm(net, state)


class OnnxSourceAdapter(UserModuleAdapter):
    """A user's ONNX file: the pipeline loads and references it without torch (deploy_kit/onnxsource.py)."""

    def load(self, req: ExportRequest) -> LoadedModel:
        raise UsageError("an ONNX source is not a PyTorch module")

    def wrap(self, model: nn.Module, req: ExportRequest, *, static: bool) -> nn.Module:
        raise UsageError("an ONNX source is not a PyTorch module")

    def reference_label(self, req: ExportRequest) -> str:
        return ""


ADAPTERS = {"module": UserModuleAdapter("module"), "onnx": OnnxSourceAdapter("onnx")}
