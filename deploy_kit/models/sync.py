"""Synchronised statistics: the export form in which a tile's global statistics come from the whole image.

NAFNet's simplified channel attention (a mean over every pixel) and Restormer's channel attention
(q·kᵀ per head and the squared norms of q and k, sums over every pixel) see only their own tile when
an image is tiled, so tiles cannot equal the full image. In the sync form every such site

* outputs its statistics summed over the tile's *core* region (``mask`` = 1: the cores of all tiles
  partition the image, so every pixel is counted once; halos and padding are 0), divided by the
  tile's own pixel count at the site's resolution (means, not sums: they stay in FP16's range);
* uses, instead of its own tile's statistics, the injected whole-image ones (``stats_in``) where
  ``use`` is 1; with ``use`` 0 it computes exactly what the ordinary graph computes.

The runtime (deploy_kit/runtime/context.py) runs the tiles once with ``use`` 0, adds the tiles'
outputs scaled by tile area / image area — which makes them whole-image means — and runs them again
with those injected; each further pass refines the estimates, since every site's input depends on
the statistics of the sites before it.

Graph I/O: ``input`` (N, C, H, W), ``mask`` (N, 1, H, W), ``stats_in`` (N, S), ``use`` (N, 1) →
``output`` and ``stats_out`` (N, S); S and the site layout are recorded in the manifest.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..runtime.context import SYNC_INPUTS, SYNC_OUTPUTS
from ..tlc import spatial_mean

INPUTS, OUTPUTS = SYNC_INPUTS, SYNC_OUTPUTS  # one naming, shared with the runtime


class SyncState:
    """What the sites of one sync-form model share during one forward pass."""

    def __init__(self) -> None:
        self.mask: torch.Tensor | None = None
        self.stats: torch.Tensor | None = None
        self.use: torch.Tensor | None = None
        self.offset = 0
        self.out: list[torch.Tensor] = []
        self.sites: list[tuple[str, int]] = []  # (kind, length) in call order, recorded on the first pass
        self.size: tuple[int, int] = (0, 0)  # the input's (H, W), Python ints (traced shapes would become graph ops)
        self._recording = True

    def begin(self, mask: torch.Tensor, stats: torch.Tensor, use: torch.Tensor) -> None:
        self.mask, self.stats, self.use, self.offset, self.out = mask, stats, use, 0, []

    def end(self) -> torch.Tensor:
        self._recording = False
        outs, self.out, self.mask, self.stats, self.use = self.out, [], None, None, None
        return torch.cat(outs, 1)

    def mask_at(self, h: int, w: int) -> torch.Tensor:
        """The core mask at a site's resolution (N, 1, h, w): zero-padded like the model pads its
        input, then average-pooled by the site's downscale factor."""
        m = self.mask
        mh, mw = self.size
        fh, fw = (mh + h - 1) // h, (mw + w - 1) // w  # the model padded its input up to (h*fh, w*fw)
        if (h * fh, w * fw) != (mh, mw):
            m = F.pad(m, (0, w * fw - mw, 0, h * fh - mh))
        return F.avg_pool2d(m, (fh, fw)) if fh > 1 or fw > 1 else m

    def exchange(self, kind: str, core: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        """Output a site's core statistics and return what it should use: its own (``use`` 0) or the injected ones.

        Args:
            kind: the site's kind, recorded with its length (the manifest's layout).
            core: (N, L) core-region statistics of this tile.
            local: (N, L) the statistics the ordinary graph uses (the whole tile's).
        """
        n, length = int(core.shape[0]), int(core.shape[1])
        if self._recording:
            self.sites.append((kind, length))
        self.out.append(core)
        injected = self.stats[:, self.offset:self.offset + length]
        self.offset += length
        u = self.use.reshape(n, 1)
        return local + u * (injected - local)

    @property
    def length(self) -> int:
        return sum(n for _, n in self.sites)


class SyncMean(nn.Module):
    """NAFNet's SCA pooling in sync form: a global mean over H and W (N, C, 1, 1)."""

    def __init__(self, state: SyncState):
        super().__init__()
        self.state = state

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = (int(v) for v in x.shape)
        local = spatial_mean(x).reshape(n, c)
        core = spatial_mean(x * self.state.mask_at(h, w)).reshape(n, c)  # a mean: no FP16 partial sum past max x
        return self.state.exchange("mean", core, local).reshape(n, c, 1, 1)


class SyncChannelAttention(nn.Module):
    """Restormer's channel attention in sync form (installed as ``Attention.window``).

    Per head, softmax(temperature · G / (|q| |k|ᵀ)) · v with G = mean over pixels of q kᵀ (d x d)
    and |q|², |k|² the means of the squares: the same as upstream's L2-normalised q·kᵀ (every
    term is scaled by the pixel count alike; eps scaled by it too).
    """

    def __init__(self, state: SyncState, eps: float = 1e-12):
        super().__init__()
        self.state, self.eps = state, eps

    def forward(self, core, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        attn_module = core.__self__  # the Attention whose core this replaces (its heads, temperature)
        b, c, h, w = (int(v) for v in q.shape)
        heads, hw = attn_module.num_heads, h * w
        d = c // heads
        q, k, v = (t.reshape(b, heads, d, hw) for t in (q, k, v))
        m = self.state.mask_at(h, w).reshape(b, 1, 1, hw)
        # means over the pixels as sums of (q / sqrt(hw)) (k / sqrt(hw)): no FP16 partial sum grows past max |q k|
        qs, ks = q * (1.0 / hw ** 0.5), k * (1.0 / hw ** 0.5)

        def stats(weight: torch.Tensor | None) -> torch.Tensor:
            qw = qs if weight is None else qs * weight
            g = qw @ ks.transpose(-2, -1)
            nq = (qw * qs).sum(-1)
            nk = ((ks if weight is None else ks * weight) * ks).sum(-1)
            return torch.cat([g.reshape(b, -1), nq.reshape(b, -1), nk.reshape(b, -1)], 1)

        used = self.state.exchange("attention", stats(m), stats(None))
        g = used[:, : heads * d * d].reshape(b, heads, d, d)
        nq = used[:, heads * d * d: heads * d * (d + 1)].reshape(b, heads, d, 1)
        nk = used[:, heads * d * (d + 1):].reshape(b, heads, 1, d)
        eps = self.eps / hw ** 0.5
        scores = g / (nq.clamp_min(0).sqrt().clamp_min(eps) * nk.clamp_min(0).sqrt().clamp_min(eps))
        attn = (scores * attn_module.temperature).softmax(dim=-1)
        return (attn @ v).reshape(b, c, h, w)


class SyncForm(nn.Module):
    """A model in sync form: ``(input, mask, stats_in, use) -> (output, stats_out)``.

    Args:
        pad: how the model pads a whole image up to its size multiple itself (``zero`` for NAFNet,
            ``reflect`` for Restormer, ``none``): the runtime pads the image the same way before
            tiling it, so the statistics cover what the full-image model's cover.
        multiple: that size multiple.
    """

    def __init__(self, net: nn.Module, state: SyncState, pad: str = "none", multiple: int = 1):
        super().__init__()
        self.net, self.state, self.pad, self.multiple = net, state, pad, multiple

    def forward(self, x: torch.Tensor, mask: torch.Tensor, stats_in: torch.Tensor, use: torch.Tensor):
        self.state.begin(mask, stats_in, use)
        y = self.net(x)
        return y, self.state.end()


def sync_form_of(net: nn.Module, install, pad: str, multiple: int) -> SyncForm:
    """A family's export form with its global-statistics sites replaced: ``install(block, state)``
    for every ``(block, level)`` of ``net.block_levels()``."""
    state = SyncState()
    for block, _ in net.block_levels():
        install(block, state)
    return SyncForm(net, state, pad=pad, multiple=multiple)


def record_layout(form: SyncForm, channels: int, height: int, width: int) -> list[tuple[str, int]]:
    """Run the sync form once at the export size to learn its sites (kind, length) in call order.

    It also fixes the input size the sync form is built for (call it again for another size).
    The injected statistics are not known yet: a zero-length ``stats_in`` would fail, so the pass
    feeds a generous zero vector with ``use`` 0 (it is ignored).
    """
    state = form.state
    state.sites, state._recording, state.size = [], True, (int(height), int(width))
    x = torch.zeros(1, channels, height, width)
    with torch.no_grad():
        form(x, torch.ones(1, 1, height, width), torch.zeros(1, 1 << 24), torch.zeros(1, 1))
    return list(state.sites)
