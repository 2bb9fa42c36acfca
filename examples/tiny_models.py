"""Three small restoration networks of our own making, in the styles users bring to deploy-kit.

Each exercises a different path of ``deploy-kit export --module examples/tiny_models.py:NAME``:

* ``TinySwin``: windowed self-attention over 8 x 8 windows, every other block shifted, LayerNorm
  over tokens (SwinIR style): softmax and token LayerNorm in FP16; size multiple 8.
* ``TinyRRDB``: residual-in-residual dense blocks and a x4 PixelShuffle upsampler (Real-ESRGAN
  style): super-resolution, output 4x the input.
* ``SEUNet``: a U-Net whose blocks carry squeeze-and-excitation (global average pooling): its
  context is the whole image, and ``--tlc`` makes it local; size multiple 4.

The weights are whatever the constructors draw (deploy-kit seeds them); they are untrained.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int):
        super().__init__()
        self.heads, self.window, self.shift = heads, window, shift
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        b, c, h, w = x.shape
        ws, nh = self.window, self.heads
        t = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        if self.shift:
            t = torch.roll(t, (-self.shift, -self.shift), (1, 2))
        win = t.reshape(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        q, k, v = self.qkv(self.norm1(win)).reshape(-1, ws * ws, 3, nh, c // nh).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1)) * (c // nh) ** -0.5
        y = (attn.softmax(-1) @ v).transpose(1, 2).reshape(-1, ws * ws, c)
        win = win + self.proj(y)
        win = win + self.mlp(self.norm2(win))
        t = win.reshape(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        if self.shift:
            t = torch.roll(t, (self.shift, self.shift), (1, 2))
        return t.permute(0, 3, 1, 2)


class TinySwin(nn.Module):
    """Shallow conv -> shifted-window transformer blocks -> conv, global residual."""

    def __init__(self, channels: int = 3, dim: int = 16, depth: int = 2, heads: int = 2, window: int = 8):
        super().__init__()
        self.head = nn.Conv2d(channels, dim, 3, padding=1)
        self.blocks = nn.Sequential(*[_WindowAttention(dim, heads, window, window // 2 if i % 2 else 0)
                                      for i in range(depth)])
        self.tail = nn.Conv2d(dim, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.tail(self.blocks(self.head(x)))


class _Dense(nn.Module):
    def __init__(self, nf: int, gc: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(nf + i * gc, gc if i < 2 else nf, 3, padding=1) for i in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for i, conv in enumerate(self.convs):
            y = conv(torch.cat(feats, 1))
            if i < 2:
                feats.append(F.leaky_relu(y, 0.2))
        return x + 0.2 * y


class TinyRRDB(nn.Module):
    """Residual-in-residual dense blocks, then two x2 PixelShuffle stages (x4 by default)."""

    def __init__(self, channels: int = 3, nf: int = 16, gc: int = 8, blocks: int = 2, scale: int = 4):
        super().__init__()
        self.first = nn.Conv2d(channels, nf, 3, padding=1)
        self.body = nn.Sequential(*[nn.Sequential(_Dense(nf, gc), _Dense(nf, gc)) for _ in range(blocks)])
        self.trunk = nn.Conv2d(nf, nf, 3, padding=1)
        ups = []
        for _ in range({2: 1, 4: 2}[scale]):
            ups += [nn.Conv2d(nf, 4 * nf, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.2)]
        self.up = nn.Sequential(*ups)
        self.last = nn.Conv2d(nf, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.first(x)
        return self.last(self.up(f + self.trunk(self.body(f))))


class _SEBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 3, padding=1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Conv2d(c, max(4, c // 4), 1), nn.ReLU(), nn.Conv2d(max(4, c // 4), c, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        gate = self.fc(self.pool(y)) * 0.5 + self.fc(y.mean((-2, -1), keepdim=True)) * 0.5  # both spellings
        return x + y * gate


class SEUNet(nn.Module):
    """A two-level U-Net of squeeze-and-excitation blocks, global residual."""

    def __init__(self, channels: int = 3, width: int = 16):
        super().__init__()
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.enc1, self.enc2 = _SEBlock(width), _SEBlock(2 * width)
        self.down1, self.down2 = nn.Conv2d(width, 2 * width, 2, 2), nn.Conv2d(2 * width, 4 * width, 2, 2)
        self.mid = _SEBlock(4 * width)
        self.up2 = nn.Sequential(nn.Conv2d(4 * width, 8 * width, 1), nn.PixelShuffle(2))
        self.up1 = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 1), nn.PixelShuffle(2))
        self.dec2, self.dec1 = _SEBlock(2 * width), _SEBlock(width)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(self.inp(x))
        e2 = self.enc2(self.down1(e1))
        m = self.mid(self.down2(e2))
        d2 = self.dec2(self.up2(m) + e2)
        d1 = self.dec1(self.up1(d2) + e1)
        return x + self.out(d1)


class PointwiseSE(nn.Module):
    """1 x 1 convolutions and squeeze-and-excitation only: a global-context model whose every pixel
    sees no neighbour, so tiles with synchronised statistics equal the full image exactly
    (``run --context sync``); tests use it for that."""

    def __init__(self, channels: int = 3, width: int = 8):
        super().__init__()
        self.inp, self.out = nn.Conv2d(channels, width, 1), nn.Conv2d(width, channels, 1)
        self.mid = nn.Sequential(nn.Conv2d(width, width, 1), nn.GELU(), nn.Conv2d(width, width, 1))
        self.fc = nn.Sequential(nn.Conv2d(width, width, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.inp(x)
        g = self.mid(f * self.fc(F.adaptive_avg_pool2d(f, 1)))
        return x + self.out(g * self.fc(g.mean((-2, -1), keepdim=True)))
