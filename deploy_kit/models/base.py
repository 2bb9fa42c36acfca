"""The one small interface every architecture file implements (imports torch: load lazily).

A model file (``nafnet.py``, ``restormer.py``, ``pvt.py``) defines the official PyTorch modules
and one ``ADAPTER`` object, an instance of a :class:`ModelAdapter` subclass. The pipeline only
talks to adapters, so adding a model never touches export/precision/engine/parity code.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from ..data.degrade import parse_degradation
from ..data.samples import sample_images
from ..specs import ExportRequest, ModelSpec, Variant


class ModelAdapter:
    """Bridges one architecture to the pipeline. Subclasses override the marked methods."""

    spec: ModelSpec

    def validate(self, req: ExportRequest) -> None:
        """Reject a request this model cannot serve (size rules), before any work is done.

        Raises:
            UsageError: one line saying what is wrong and what to use instead.
        """
        return None

    # --- construction ---------------------------------------------------------------
    def build(self, variant: Variant) -> nn.Module:
        """Return the official architecture for ``variant`` (eval mode, FP32, CPU)."""
        raise NotImplementedError

    def detect_hparams(self, state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        """Recover constructor kwargs from checkpoint keys/shapes.

        Raises:
            CheckpointError: the keys are not this architecture's (say which keys are missing).
        """
        raise NotImplementedError

    def official_init_(self, model: nn.Module) -> None:
        """Re-initialise a freshly built model the way the official training code does.

        The base case is PyTorch's own layer defaults plus the constructors' exact zeros and ones
        (NAFNet's beta/gamma = 0, LayerNorm weight 1 / bias 0, Restormer's temperature = 1), which
        ``build`` already gives; a family whose official code runs its own init (PVT) overrides
        this. Such weights share many exactly equal tensors, which changes what the simplifier
        merges and what the FP16 converter meets (tests/integration/test_official_init.py) — tests use both kinds.
        """
        return None

    def randomize_(self, model: nn.Module, seed: int) -> None:
        """Random weights where every branch contributes (no zero-initialised residual scales)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(_default_random(name, p, gen))

    # --- shapes and I/O ---------------------------------------------------------------
    def in_channels(self, variant: Variant) -> int:
        return int(variant.kwargs().get("img_channel", variant.kwargs().get("inp_channels", 3)))

    def input_channels(self, req: ExportRequest) -> int:
        """The request's input channels (its variant's)."""
        return self.in_channels(self.resolve_variant(req))

    def input_names(self, req: ExportRequest) -> list[str]:
        return ["input"]

    def output_names(self, req: ExportRequest) -> list[str]:
        return ["output"]

    def global_context(self, req: ExportRequest) -> bool:
        """Whether the exported graph pools over the whole image (so tiles cannot reproduce the
        full-image output exactly: each sees its own statistics). Recorded in the manifest; ``run``
        warns when it tiles such a graph."""
        return False

    def input_normalisation(self, req: ExportRequest) -> str:
        """What the graph itself does to its [0, 1] input before the network (manifest ``input``)."""
        return "none"

    def output_kind(self, req: ExportRequest) -> str:
        """``"image"`` (PSNR in [0,1]), ``"logits"`` or ``"features"`` (cosine)."""
        return "image"

    # --- the two forms parity compares ---------------------------------------------------
    def wrap(self, model: nn.Module, req: ExportRequest, *, static: bool) -> nn.Module:
        """Return a module mapping the (1, C, H, W) input to the output(s) at the request size.

        Args:
            model: the loaded official model.
            req: the export request (size, TLC, options).
            static: False gives the eager reference (TLC as upstream computes it, shape-generic);
                True gives the export form (TLC unrolled to static ops for exactly H x W).
        """
        raise NotImplementedError

    def sync_form(self, model: nn.Module, req: ExportRequest):
        """The export form with synchronised statistics (deploy_kit/models/sync.py), or None when the
        model has no global statistics it can exchange (its context is local, or not supported)."""
        return None

    def reference_label(self, req: ExportRequest) -> str:
        """How the eager reference computes TLC (printed in reports)."""
        return " with TLC" if req.tlc else ""

    def fp32_islands(self, req: ExportRequest) -> list[str]:
        """Regexes on ONNX node names whose nodes stay FP32 inside FP16 graphs: overflow sites no
        range-safe rewrite (models/rangesafe.py) covers yet."""
        return []

    def int8_excluded(self, req: ExportRequest) -> list[str]:
        """Regexes on node names INT8 never quantizes (e.g. a mean written as a MatMul with a constant
        1/N vector is no weighted layer); default: the FP32 islands."""
        return self.fp32_islands(req)

    def sample_inputs(self, req: ExportRequest, count: int = 2) -> list[np.ndarray]:
        """Representative inputs as float32 NCHW: real sample photographs with the model's channel
        count, degraded as the model sees them in deployment (:meth:`input_degradation`)."""
        return sample_images(count, self.input_channels(req), req.height, req.width, self.input_degradation(req), req.seed)

    def input_degradation(self, req: ExportRequest) -> str | None:
        """What parity and calibration images are degraded with: ``req.degradation`` if given,
        else the variant's task default (``noise:25`` for a denoiser); None means clean photos."""
        spec = req.degradation
        if spec is None and req.variant != "custom":  # checkpoint-shaped "custom" variants have no task
            spec = self.spec.variant(req.variant).get_extra("degradation")

        return spec if parse_degradation(spec) else None  # "none"/"clean"/"" parse to no steps

    def resolve_variant(self, req: ExportRequest) -> Variant:
        """The request's variant; a checkpoint's "custom" hyper-parameters travel in ``req.hparams``."""
        if req.variant == "custom" and req.hparams:
            return Variant("custom", req.hparams)
        return self.spec.variant(req.variant)


def _default_random(name: str, p: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Kaiming-like weights, small non-zero biases, norms near 1, scales clearly non-zero."""
    if p.ndim >= 2:
        fan_in = max(1, p[0].numel())
        return torch.randn(p.shape, generator=gen) * (1.0 / fan_in) ** 0.5
    if name.endswith("weight"):  # norm affine weights
        return 1.0 + 0.1 * torch.randn(p.shape, generator=gen)
    return 0.05 * torch.randn(p.shape, generator=gen)
