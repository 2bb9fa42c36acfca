"""Export-form rewrites that make the emitted graph cheaper to run, exact in real arithmetic.

Used only by the models' export forms (``wrap(static=True)``), like :mod:`.rangesafe`; the eager
reference keeps the upstream layer order, so parity still compares two independent computations.
Why (measured with benchmarks/bench_speed.py): ONNX Runtime on CPU spends most of NAFNet's and Restormer's non-conv time in
full-tensor elementwise passes and copies, and the two below remove some of each per block:

* :func:`fold_affine_1x1` — ``conv1x1(w·n + b)`` is ``conv1x1'(n)`` with W' = W·diag(w) and
  b' = b_conv + W·b, so a LayerNorm's affine costs no pass of its own. Neither ONNX Runtime nor
  onnxsim folds a Mul/Add *into the next* Conv (only a Conv's own following Mul/Add).
* :class:`ConvParts` — ``chunk(dwconv3x3(conv1x1(n)), k)`` computed as k independent
  1×1 → depthwise chains on the output-channel slices of both convs (a depthwise conv's channels
  are independent, and each output channel of a 1×1 conv is its own dot product): the same values
  without the Split copy, and each part stays in ONNX Runtime's blocked (NCHWc) conv layout.

Both change only the order of FP32 roundings in the folded products (measured: parity with the
eager reference unchanged at the 1e-6 level; tests/unit/test_fastpath.py).
"""

from __future__ import annotations

import torch
from torch import nn


def fold_affine_1x1(conv: nn.Conv2d, weight: torch.Tensor | None, bias: torch.Tensor | None):
    """(W', b') of a 1×1 ``conv`` applied to ``weight·n + bias`` (per-channel affine), as a conv of n."""
    w = conv.weight
    folded_w = w * weight.view(1, -1, 1, 1) if weight is not None else w
    folded_b = conv.bias
    if bias is not None:
        shift = w[:, :, 0, 0] @ bias
        folded_b = shift if folded_b is None else folded_b + shift
    return folded_w, folded_b


def _conv_like(conv: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, groups: int = 1) -> nn.Conv2d:
    out = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[-2:]), stride=conv.stride,
                    padding=conv.padding, dilation=conv.dilation, groups=groups, bias=bias is not None)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias)
    return out.eval()


class ConvParts(nn.Module):
    """``chunk(depthwise(pointwise(norm(x))), parts, dim=1)`` as ``parts`` independent conv chains.

    Built once from the trained layers (:meth:`fold`): the norm's affine goes into each 1×1 conv
    slice, the depthwise conv is cut into the matching channel slices. ``forward(n)`` takes the
    *normalised* map (the norm's ``affine_folded`` is set) and returns the list of parts.
    """

    def __init__(self, chains: list[nn.Module]):
        super().__init__()
        self.chains = nn.ModuleList(chains)

    @classmethod
    def fold(cls, norm: nn.Module, pointwise: nn.Conv2d, depthwise: nn.Conv2d | None, parts: int) -> "ConvParts":
        """Fold ``norm``'s affine (``weight``/``bias`` attributes) into ``pointwise`` and split the chain.

        Marks ``norm.affine_folded``; the caller must run ``norm`` then this module in place of
        norm → pointwise → depthwise → chunk.
        """
        w, b = fold_affine_1x1(pointwise, norm.weight, getattr(norm, "bias", None))
        step = w.shape[0] // parts
        chains = []
        with torch.no_grad():
            for i in range(parts):
                sl = slice(i * step, (i + 1) * step)
                layers = [_conv_like(pointwise, w[sl], None if b is None else b[sl])]
                if depthwise is not None:
                    dw_b = None if depthwise.bias is None else depthwise.bias[sl]
                    layers.append(_conv_like(depthwise, depthwise.weight[sl], dw_b, groups=step))
                chains.append(nn.Sequential(*layers) if len(layers) > 1 else layers[0])
        norm.affine_folded = True
        return cls(chains)

    def forward(self, n: torch.Tensor) -> list[torch.Tensor]:
        return [chain(n) for chain in self.chains]


def make_fast_form(module: nn.Module) -> int:
    """Build the fast export form of every submodule that offers one (``make_fast()``); returns the count.

    Call on the export copy only (``wrap(static=True)``), after the weights are loaded: the folded
    convs are copies taken now.
    """
    blocks = [m for m in module.modules() if hasattr(m, "make_fast")]
    for m in blocks:
        m.make_fast()
    return len(blocks)
