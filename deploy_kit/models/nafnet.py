"""NAFNet (megvii-research/NAFNet, MIT) with its exact state-dict layout, and NAFNetLocal (TLC).

Written from the architecture description (https://github.com/megvii-research/NAFNet,
https://arxiv.org/abs/2204.04676). LayerNorm2d is
plain tensor ops over the channel axis (eps 1e-6): upstream's custom autograd.Function does not
export on older PyTorch (megvii-research/NAFNet#30), and plain ops let the FP16 pass find the
norm by its node names and keep it FP32.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..specs import ExportRequest, Variant
from ..tlc import LocalAvgPoolEager, LocalAvgPoolStatic, SeparableGlobalMean
from .base import ModelAdapter
from .fastpath import ConvParts, make_fast_form
from .rangesafe import ChannelLayerNorm, set_range_safe
from .registry import NAFNET
from .sync import SyncMean, sync_form_of


class LayerNorm2d(ChannelLayerNorm):
    """LayerNorm over channels at each pixel (biased variance, eps 1e-6), then affine."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__(channels, eps)


class SimpleGate(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2):
        super().__init__()
        dw = c * dw_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = SimpleGate()
        ffn = c * ffn_expand
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = nn.Identity()
        self.dropout2 = nn.Identity()
        self.beta = nn.Parameter(torch.zeros((1, c, 1, 1)))
        self.gamma = nn.Parameter(torch.zeros((1, c, 1, 1)))
        self.parts1: ConvParts | None = None  # export form: models/fastpath.py
        self.parts2: ConvParts | None = None

    def make_fast(self) -> None:
        """Export form: LayerNorm affines folded into conv1/conv4, SimpleGate halves as separate chains."""
        self.parts1 = ConvParts.fold(self.norm1, self.conv1, self.conv2, 2)
        self.parts2 = ConvParts.fold(self.norm2, self.conv4, None, 2)

    def _sca(self, x: torch.Tensor) -> torch.Tensor:
        pool = self.sca[0]
        s = self.sca[1](pool(x))
        finish = getattr(pool, "finish", None)
        return finish(s) if finish is not None else s

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        n = self.norm1(inp)
        if self.parts1 is not None:
            a, g = self.parts1(n)
            x = a * g
        else:
            x = self.sg(self.conv2(self.conv1(n)))
        x = x * self._sca(x)
        x = self.dropout1(self.conv3(x))
        y = inp + x * self.beta
        n = self.norm2(y)
        if self.parts2 is not None:
            a, g = self.parts2(n)
            x = a * g
        else:
            x = self.sg(self.conv4(n))
        return y + self.dropout2(self.conv5(x)) * self.gamma


class NAFNet(nn.Module):
    """The official NAFNet topology (additive skips, zero pad bottom/right to 2**levels)."""

    def __init__(self, img_channel=3, width=16, middle_blk_num=1, enc_blk_nums=(), dec_blk_nums=()):
        super().__init__()
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders, self.decoders = nn.ModuleList(), nn.ModuleList()
        self.middle_blks, self.ups, self.downs = nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        chan = width
        for n in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(n)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan) for _ in range(middle_blk_num)])
        for n in dec_blk_nums:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(n)]))
        self.padder_size = 2 ** len(self.encoders)

    def block_levels(self):
        """(block, downscale factor of its feature map) for every NAFBlock."""
        n = len(self.encoders)
        for i, seq in enumerate(self.encoders):
            yield from ((b, 2**i) for b in seq)
        yield from ((b, 2**n) for b in self.middle_blks)
        for i, seq in enumerate(self.decoders):
            yield from ((b, 2 ** (n - 1 - i)) for b in seq)

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        h, w = inp.shape[-2:]
        p = self.padder_size
        x_in = F.pad(inp, (0, (p - w % p) % p, 0, (p - h % p) % p))
        x = self.intro(x_in)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            x = enc(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for dec, up, skip in zip(self.decoders, self.ups, skips[::-1]):
            x = dec(up(x) + skip)
        x = self.ending(x) + x_in
        return x[..., :h, :w]


def _install_sync_mean(block: NAFBlock, state) -> None:
    block.sca[0] = SyncMean(state)


def padded_size(h: int, w: int, multiple: int) -> tuple[int, int]:
    return h + (multiple - h % multiple) % multiple, w + (multiple - w % multiple) % multiple


class NAFNetAdapter(ModelAdapter):
    spec = NAFNET

    def build(self, variant: Variant) -> nn.Module:
        return NAFNet(**variant.kwargs()).eval()

    def detect_hparams(self, sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        need = ("intro.weight", "ending.weight", "middle_blks.0.conv1.weight")
        missing = [k for k in need if k not in sd]
        if missing:
            sample = ", ".join(list(sd)[:3])
            raise CheckpointError(
                f"not a NAFNet checkpoint: missing {', '.join(missing)} (its first keys are: {sample})"
            )

        def count(prefix: str, level: int | None = None) -> int:
            pat = re.compile(rf"^{prefix}\.{level}\.(\d+)\." if level is not None else rf"^{prefix}\.(\d+)\.")
            idx = {int(m.group(1)) for k in sd if (m := pat.match(k))}
            return max(idx) + 1 if idx else 0

        levels = len({int(k.split(".")[1]) for k in sd if k.startswith("downs.")})
        return dict(
            img_channel=int(sd["intro.weight"].shape[1]),
            width=int(sd["intro.weight"].shape[0]),
            middle_blk_num=count("middle_blks"),
            enc_blk_nums=[count("encoders", i) for i in range(levels)],
            dec_blk_nums=[count("decoders", i) for i in range(levels)],
        )

    def global_context(self, req: ExportRequest) -> bool:
        """Without TLC the simplified channel attention averages the whole feature map."""
        return req.tlc is None

    def randomize_(self, model: nn.Module, seed: int) -> None:
        super().randomize_(model, seed)
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                # upstream initialises beta/gamma to 0, which makes every block an identity:
                # random weights for parity must let every branch contribute.
                if name.endswith(("beta", "gamma")):
                    p.copy_(0.1 + 0.2 * torch.rand(p.shape, generator=gen))
            # a small residual keeps the random output image-like (input + correction), so
            # PSNR over data range 1 measures the same thing it does for trained weights
            model.ending.weight.mul_(0.1)

    def in_channels(self, variant: Variant) -> int:
        return int(variant.kwargs()["img_channel"])

    def wrap(self, model: nn.Module, req: ExportRequest, *, static: bool) -> nn.Module:
        import copy

        net = copy.deepcopy(model).eval()
        hp, wp = padded_size(req.height, req.width, net.padder_size)
        for block, down in net.block_levels():
            if req.tlc is not None:
                kernel = req.tlc.kernel(down)
                block.sca[0] = (
                    LocalAvgPoolStatic(kernel, (hp // down, wp // down)) if static else LocalAvgPoolEager(kernel)
                )
            elif static:
                block.sca[0] = SeparableGlobalMean()
        set_range_safe(net, static)
        if static:
            make_fast_form(net)
        return net

    def sync_form(self, model: nn.Module, req: ExportRequest):
        """Every SCA mean exchanged with the other tiles (None with TLC: its context is local already)."""
        if req.tlc is not None:
            return None
        net = self.wrap(model, req, static=True)
        return sync_form_of(net, _install_sync_mean, "zero", net.padder_size)

    def reference_label(self, req: ExportRequest) -> str:
        return " with TLC (integral-image box mean + replicate pad, as upstream)" if req.tlc else ""

    def fp32_islands(self, req: ExportRequest) -> list[str]:
        # none: LayerNorm2d's statistics and the SCA means are range-safe in the export form
        # (models/rangesafe.py, tlc.spatial_mean), so the FP16 graph is FP16 end to end
        return []

    def int8_excluded(self, req: ExportRequest) -> list[str]:
        # the SCA pooling: means as MatMuls with constant 1/w, 1/h vectors, AveragePools, or the
        # TLC box mean's depthwise Convs of 1/K taps are no weighted layer INT8 should quantize
        return [r"/sca\.0/"]


ADAPTER = NAFNetAdapter()
