"""PVT v1 and v2 (whai362/PVT, Apache-2.0) with their exact state-dict layouts and export forms.

Written from the architecture description (https://github.com/whai362/PVT, https://arxiv.org/abs/2102.12122; no upstream code
copied). Keys: ``patch_embed{1..4}.proj/.norm``, ``pos_embed{1..4}``, ``block{i}.{j}.norm1``,
``.attn.q/.kv/.proj``, ``.attn.sr/.attn.norm`` (stages with SR ratio > 1), ``.norm2``,
``.mlp.fc1/.fc2``, then ``norm``, ``cls_token``, ``head``.

Two heads (``--head``):

* ``cls`` (default): the classifier, ``logits`` (1, num_classes).
* ``features``: the detection backbone of upstream ``detection/pvt.py``: four NCHW maps at
  strides 4/8/16/32 (``feat1``..``feat4``), no cls token (so the cls slot of ``pos_embed4`` is
  dropped), no final norm, no head.

Positional embeddings at other sizes follow upstream's refactored ``_get_pos_embed``: the
embedding is viewed as its training grid (``img_size // stride``) and bilinearly resized
(``align_corners=False``, no antialias) to the grid of the input; the stage-4 cls slot is kept as
is. Upstream decides "resize or not" by comparing with the *stage-1* patch count, which makes it
run identity-size resizes at the training size and crash at e.g. 448x448 (stage 2 then has
stage 1's training patch count). Here a stage is resized exactly when its grid differs from its
training grid; an identity-size bilinear resize is an exact copy, so the numbers equal upstream
wherever upstream runs.

The wrapped module (:meth:`PVTAdapter.wrap`) takes a [0, 1] RGB image and applies the ImageNet
mean/std normalisation itself (its first ops), like the other deploy-kit models. With
``static=True`` the resized embeddings are computed once and stored as constant buffers, so the
exported graph has no Resize of parameters (pytorch/pytorch#124884).

PVT v2 (``v2-*`` variants, https://arxiv.org/abs/2106.13797) shares the blocks: overlapping patch embeddings, a
depthwise conv in the MLP (``mlp.dwconv.dwconv``), ``norm{i}`` per stage, no positional
embeddings. b2-li's ``AdaptiveAvgPool2d(7)`` becomes :class:`StaticAdaptiveAvgPool` in the static
form. Height and width must be multiples of 32 for every variant (:func:`check_size`).
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..data.samples import sample_images
from ..errors import CheckpointError, UsageError
from ..specs import ExportRequest, Variant
from .base import ModelAdapter
from .pvt_spec import PVT
from .rangesafe import layernorm_scale_log2, set_range_safe

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TOTAL_STRIDE = 32
POOL_SIZE = 7  # PVT v2 linear SRA: AdaptiveAvgPool2d(7)


# --------------------------------------------------------------------------------------------
# official modules
# --------------------------------------------------------------------------------------------
class Mlp(nn.Module):
    """fc1, GELU, fc2 (v1). With ``dwconv`` (v2): fc1, [ReLU if linear], 3x3 depthwise, GELU, fc2."""

    def __init__(self, dim: int, hidden: int, dwconv: bool = False, linear: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        if dwconv:
            self.dwconv = DWConv(hidden)
        self.relu = nn.ReLU() if linear else None
        self.act = nn.GELU()  # exact (erf) form, as upstream
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(x)
        if self.relu is not None:
            x = self.relu(x)
        if hasattr(self, "dwconv"):
            x = self.dwconv(x, h, w)
        return self.fc2(self.act(x))


class DWConv(nn.Module):
    """PVT v2's 3x3 depthwise conv on the token map (key ``mlp.dwconv.dwconv``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        return self.dwconv(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class SRAttention(nn.Module):
    """Spatial-reduction attention: keys/values from the token map shrunk R x R by a strided conv."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, sr_ratio: int, linear: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr_ratio
        self.linear = linear
        if linear:  # PVT v2 linear SRA: pool to 7x7, 1x1 conv, LayerNorm, GELU (every stage)
            self.pool = nn.AdaptiveAvgPool2d(POOL_SIZE)
            self.sr = nn.Conv2d(dim, dim, kernel_size=1, stride=1)
            self.norm = nn.LayerNorm(dim)
            self.act = nn.GELU()
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)  # default eps 1e-5, as upstream

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        nh = self.num_heads
        q = self.q(x).reshape(b, n, nh, c // nh).transpose(1, 2)  # (B, nh, N, d)
        if self.linear:
            m = x.transpose(1, 2).reshape(b, c, h, w)
            m = self.sr(self.pool(m)).flatten(2).transpose(1, 2)
            m = self.act(self.norm(m))
        elif self.sr_ratio > 1:
            m = x.transpose(1, 2).reshape(b, c, h, w)
            m = self.sr(m).flatten(2).transpose(1, 2)
            m = self.norm(m)
        else:
            m = x
        kv = self.kv(m).reshape(b, -1, 2, nh, c // nh).permute(2, 0, 3, 1, 4)  # (2, B, nh, M, d)
        k, v = kv[0], kv[1]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, sr_ratio, v2: bool = False, linear: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SRAttention(dim, num_heads, qkv_bias, sr_ratio, linear)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dwconv=v2, linear=linear)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), h, w)
        return x + self.mlp(self.norm2(x), h, w)


class PatchEmbed(nn.Module):
    """Patches -> tokens (B, N, C) -> LayerNorm (eps 1e-5).

    v1: non-overlapping P x P patches. v2 (``overlap``): kernel P, the given stride, padding P//2.
    """

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int, stride: int | None = None):
        super().__init__()
        self.patch_size = patch_size
        self.stride = stride or patch_size
        self.padding = 0 if stride is None else patch_size // 2
        self.grid = (img_size // patch_size, img_size // patch_size)  # v1 training grid
        self.num_patches = self.grid[0] * self.grid[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, self.stride, self.padding)
        self.norm = nn.LayerNorm(embed_dim)

    def out_size(self, n: int) -> int:
        return (n + 2 * self.padding - self.patch_size) // self.stride + 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


def resize_pos_embed(pos: torch.Tensor, train_grid: tuple[int, int], grid: tuple[int, int]) -> torch.Tensor:
    """Upstream ``_get_pos_embed`` semantics for one stage (patch slots only).

    Args:
        pos: (1, th*tw, C) embedding laid out row-major on the training grid.
        train_grid: (th, tw).
        grid: (h, w) of the input's token map.

    Returns:
        (1, h*w, C); ``pos`` itself when the grids are equal (a same-size bilinear resize is an
        exact copy, so this equals upstream's identity-size interpolate).
    """
    if tuple(grid) == tuple(train_grid):
        return pos
    th, tw = train_grid
    c = pos.shape[-1]
    img = pos.reshape(1, th, tw, c).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=tuple(grid), mode="bilinear", align_corners=False)
    return img.flatten(2).transpose(1, 2)


class PyramidVisionTransformer(nn.Module):
    """The official PVT v1 classifier (``classification/pvt.py`` layout and semantics).

    ``forward`` is the eager upstream form: it takes an ImageNet-normalised image (any size whose
    sides are multiples of 32) and resizes the positional embeddings at forward time.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 4,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims=(64, 128, 320, 512),
        num_heads=(1, 2, 5, 8),
        mlp_ratios=(8, 8, 4, 4),
        qkv_bias: bool = True,
        depths=(2, 2, 2, 2),
        sr_ratios=(8, 4, 2, 1),
    ):
        super().__init__()
        self.num_classes = num_classes
        self.depths = list(depths)
        self.embed_dims = list(embed_dims)
        size, chans = img_size, in_chans
        for i in range(4):
            p = patch_size if i == 0 else 2
            pe = PatchEmbed(size, p, chans, embed_dims[i])
            setattr(self, f"patch_embed{i + 1}", pe)
            slots = pe.num_patches + (1 if i == 3 else 0)  # stage 4 carries the cls slot
            setattr(self, f"pos_embed{i + 1}", nn.Parameter(torch.zeros(1, slots, embed_dims[i])))
            blocks = [Block(embed_dims[i], num_heads[i], mlp_ratios[i], qkv_bias, sr_ratios[i]) for _ in range(depths[i])]
            setattr(self, f"block{i + 1}", nn.ModuleList(blocks))
            size, chans = size // p, embed_dims[i]
        self.norm = nn.LayerNorm(embed_dims[3], eps=1e-6)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dims[3]))
        self.head = nn.Linear(embed_dims[3], num_classes) if num_classes > 0 else nn.Identity()

    # -- pieces shared by the eager and the static forms --------------------------------------
    def patch_embed(self, i: int) -> PatchEmbed:
        return getattr(self, f"patch_embed{i + 1}")

    def stage_pos_embed(self, i: int, grid: tuple[int, int], with_cls: bool) -> torch.Tensor:
        """Stage ``i``'s (0-based) positional embedding resized to ``grid`` (cls slot first if asked)."""
        pos = getattr(self, f"pos_embed{i + 1}")
        if i < 3:
            return resize_pos_embed(pos, self.patch_embed(i).grid, grid)
        patch = resize_pos_embed(pos[:, 1:], self.patch_embed(3).grid, grid)
        return torch.cat([pos[:, :1], patch], dim=1) if with_cls else patch

    def run(self, x: torch.Tensor, with_cls: bool, pos_embeds=None):
        """Run the four stages.

        Args:
            x: normalised image (B, C, H, W).
            with_cls: classifier form (cls token before stage 4) or detection form.
            pos_embeds: four precomputed embeddings for exactly this size, or None to resize
                at forward time.

        Returns:
            (list of the four NCHW stage outputs, stage-4 tokens incl. the cls token or None).
        """
        feats, tokens = [], None
        for i in range(4):
            t, h, w = self.patch_embed(i)(x)
            cls = with_cls and i == 3
            pos = pos_embeds[i] if pos_embeds is not None else self.stage_pos_embed(i, (h, w), cls)
            if cls:
                t = torch.cat([self.cls_token.expand(t.shape[0], -1, -1), t], dim=1)
            t = t + pos
            for blk in getattr(self, f"block{i + 1}"):
                t = blk(t, h, w)
            if cls:
                tokens = t
                t = t[:, 1:]
            # The returned map and the next stage's input are built by two different op
            # sequences on purpose: a graph output that also feeds another node is mis-typed by
            # onnxconverter-common 1.16 convert_float_to_float16(keep_io_types=True) (the
            # consumer Conv gets the FP32 output, "Type parameter (T) of Optype (Conv) bound to
            # different types"), and distinct ops cannot be merged back into one tensor.
            feats.append(t.transpose(1, 2).reshape(t.shape[0], -1, h, w))
            if i < 3:
                x = t.reshape(t.shape[0], h, w, -1).permute(0, 3, 1, 2)
        return feats, tokens

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(tokens)[:, 0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, tokens = self.run(x, with_cls=True)
        return self.classify(tokens)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Detection-backbone form (upstream ``detection/pvt.py``): four NCHW maps."""
        return self.run(x, with_cls=False)[0]


class PyramidVisionTransformerV2(nn.Module):
    """The official PVT v2 classifier (``classification/pvt_v2.py`` layout and semantics).

    Overlapping patch embeddings (7/4/3 then 3/2/1), no positional embeddings or cls token, a 3x3
    depthwise conv in every MLP, ``norm{i}`` after each stage, mean of the stage-4 tokens into
    ``head``. ``linear=True`` is ``pvt_v2_b2_li``. The module itself runs at any size; the
    adapter still asks for multiples of 32, like v1, so every variant follows one rule.
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        embed_dims=(64, 128, 320, 512),
        num_heads=(1, 2, 5, 8),
        mlp_ratios=(8, 8, 4, 4),
        qkv_bias: bool = True,
        depths=(3, 4, 6, 3),
        sr_ratios=(8, 4, 2, 1),
        linear: bool = False,
    ):
        super().__init__()
        self.num_classes = num_classes
        chans = in_chans
        for i in range(4):
            pe = PatchEmbed(0, 7 if i == 0 else 3, chans, embed_dims[i], stride=4 if i == 0 else 2)
            setattr(self, f"patch_embed{i + 1}", pe)
            blocks = [
                Block(embed_dims[i], num_heads[i], mlp_ratios[i], qkv_bias, sr_ratios[i], v2=True, linear=linear)
                for _ in range(depths[i])
            ]
            setattr(self, f"block{i + 1}", nn.ModuleList(blocks))
            setattr(self, f"norm{i + 1}", nn.LayerNorm(embed_dims[i], eps=1e-6))
            chans = embed_dims[i]
        self.head = nn.Linear(embed_dims[3], num_classes) if num_classes > 0 else nn.Identity()

    def patch_embed(self, i: int) -> PatchEmbed:
        return getattr(self, f"patch_embed{i + 1}")

    def grids(self, height: int, width: int) -> list[tuple[int, int]]:
        """Token-map size of each stage for an input of height x width."""
        out = []
        for i in range(4):
            pe = self.patch_embed(i)
            height, width = pe.out_size(height), pe.out_size(width)
            out.append((height, width))
        return out

    def run(self, x: torch.Tensor, with_cls: bool = False, pos_embeds=None):
        """The four normed NCHW stage maps and the normed stage-4 tokens (no cls token in v2)."""
        feats, t = [], None
        for i in range(4):
            t, h, w = self.patch_embed(i)(x)
            for blk in getattr(self, f"block{i + 1}"):
                t = blk(t, h, w)
            t = getattr(self, f"norm{i + 1}")(t)
            # two op sequences on purpose (see PyramidVisionTransformer.run)
            feats.append(t.transpose(1, 2).reshape(t.shape[0], -1, h, w))
            if i < 3:
                x = t.reshape(t.shape[0], h, w, -1).permute(0, 3, 1, 2)
        return feats, t

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(tokens.mean(dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.run(x)[1])

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.run(x)[0]


def adaptive_pool_matrix(n: int, out: int) -> torch.Tensor:
    """(out, n) averaging matrix of PyTorch's adaptive average pooling along one axis.

    Bin i covers [floor(i*n/out), ceil((i+1)*n/out)) -- PyTorch's rule, valid for any n
    (including n < out, where bins repeat, and n not divisible by out, where they overlap).
    """
    m = torch.zeros(out, n, dtype=torch.float64)
    for i in range(out):
        start, end = (i * n) // out, -((-(i + 1) * n) // out)
        m[i, start:end] = 1.0 / (end - start)
    return m.float()


class StaticAdaptiveAvgPool(nn.Module):
    """``AdaptiveAvgPool2d(out)`` for one fixed input size: two MatMuls with constant matrices.

    The TorchScript exporter only exports adaptive pooling when the output size divides the input
    (pytorch/pytorch#42653, #64806, #109370), and PVT v2-li pools every stage to 7x7, so e.g. a
    256x256 input (grids 64/32/16/8) cannot be exported as is. Separable row/column averaging
    matrices are exact for every size and are plain GEMMs for TensorRT.
    """

    def __init__(self, out: int, size: tuple[int, int]):
        super().__init__()
        self.register_buffer("rows", adaptive_pool_matrix(size[0], out), persistent=False)
        self.register_buffer("cols_t", adaptive_pool_matrix(size[1], out).t().contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(torch.matmul(self.rows, x), self.cols_t)


# --------------------------------------------------------------------------------------------
# the module the pipeline exports
# --------------------------------------------------------------------------------------------
class RangeSafeLayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` whose export form normalises x·2^-s with eps·2^-2s (the same function).

    The ONNX LayerNormalization op keeps its statistics in FP32 by spec (stash_type 1) and its
    epsilon is an FP32 attribute, but a TensorRT FP16 normalization layer may compute them in
    FP16 (NVIDIA/TensorRT#4338): the power-of-two scale keeps x and its variance in range there
    too, with no FP32 island. ``s`` per site from the FP32 reference (models/rangesafe.py).
    Installed on the wrapper's copy of the model; the state dict is unchanged.
    """

    range_safe = False
    scale_log2 = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.range_safe or not self.scale_log2:
            return super().forward(x)
        s = 2.0 ** -self.scale_log2
        return F.layer_norm(x * s, self.normalized_shape, self.weight, self.bias, self.eps * s * s)

    @staticmethod
    def range_statistic(x: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the scaled input must fit: the largest per-token variance and max |x|."""
        return {"var": x.var(-1, unbiased=False).max(), "abs": x.abs().max()}

    def choose_scale_log2(self, stats: dict[str, float]) -> int:
        return layernorm_scale_log2(stats.get("var", 0.0), stats.get("abs", 0.0), self.normalized_shape[-1], self.eps)


class PVTWrapped(nn.Module):
    """[0, 1] RGB image -> logits, or the four stage maps; ImageNet normalisation inside (v1 and v2).

    Args:
        net: the official model (used as is; the wrapper is built on a copy).
        head: ``"cls"`` or ``"features"``.
        size: (H, W) to precompute the positional embeddings (v1) or the 7x7 pooling matrices
            (v2-li) for (static form), or None for the eager form, which resizes/pools at forward
            time for whatever size it is given.
    """

    def __init__(self, net: nn.Module, head: str, size: tuple[int, int] | None):
        super().__init__()
        self.net = net
        for m in net.modules():  # range-safe in the export form (off in the eager reference)
            if type(m) is nn.LayerNorm:
                m.__class__ = RangeSafeLayerNorm
        set_range_safe(net, size is not None)
        self.head_kind = head
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.static = size is not None and isinstance(net, PyramidVisionTransformer)
        if size is not None and isinstance(net, PyramidVisionTransformerV2):
            # v2 has no positional embeddings; the static form only freezes the linear-SRA pools
            for i, grid in enumerate(net.grids(*size)):
                for blk in getattr(net, f"block{i + 1}"):
                    if blk.attn.linear:
                        blk.attn.pool = StaticAdaptiveAvgPool(POOL_SIZE, grid)
        if self.static:
            h, w = size
            with torch.no_grad():
                for i in range(4):
                    stride = net.patch_embed(0).patch_size * 2**i
                    pos = net.stage_pos_embed(i, (h // stride, w // stride), head == "cls")
                    # a plain constant: tracing records it as an initializer, no Resize left
                    self.register_buffer(f"pos{i + 1}", pos.detach().clone().contiguous(), persistent=False)

    def pos_embeds(self):
        return [getattr(self, f"pos{i + 1}") for i in range(4)] if self.static else None

    def forward(self, x: torch.Tensor):
        x = (x - self.mean) / self.std
        if self.head_kind == "cls":
            _, tokens = self.net.run(x, with_cls=True, pos_embeds=self.pos_embeds())
            return self.net.classify(tokens)
        feats, _ = self.net.run(x, with_cls=False, pos_embeds=self.pos_embeds())
        return tuple(feats)


def check_size(height: int, width: int) -> None:
    """Raise a one-line UsageError unless both sides are positive multiples of 32."""
    bad = [(n, v) for n, v in (("height", height), ("width", width)) if v <= 0 or v % TOTAL_STRIDE]
    if not bad:
        return

    def fix(v: int) -> str:
        lo = (v // TOTAL_STRIDE) * TOTAL_STRIDE
        hi = lo + TOTAL_STRIDE
        return f"{lo} or {hi}" if lo > 0 else f"{hi}"

    hint = "; ".join(f"{n}: use {fix(v)}" for n, v in bad) if len(bad) > 1 else f"use {fix(bad[0][1])}"
    raise UsageError(
        f"PVT needs height and width divisible by {TOTAL_STRIDE} (total stride); got {height}x{width} — {hint}"
    )


class PVTAdapter(ModelAdapter):
    spec = PVT


    def validate(self, req: ExportRequest) -> None:
        check_size(req.height, req.width)

    def build(self, variant: Variant) -> nn.Module:
        kw = variant.kwargs()
        if kw.pop("version", 1) == 2:
            return PyramidVisionTransformerV2(**kw).eval()
        return PyramidVisionTransformer(**kw).eval()

    def detect_hparams(self, sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        v2 = "block1.0.mlp.dwconv.dwconv.weight" in sd and "pos_embed1" not in sd
        need = ["block1.0.attn.q.weight", "block1.0.attn.kv.weight", "block1.0.mlp.fc1.weight", "head.weight"]
        need += [f"patch_embed{i}.proj.weight" for i in (1, 2, 3, 4)]
        need += [f"norm{i}.weight" for i in (1, 2, 3, 4)] if v2 else ["pos_embed1", "pos_embed4", "cls_token"]
        missing = [k for k in need if k not in sd]
        if missing:
            sample = ", ".join(list(sd)[:3])
            raise CheckpointError(
                f"not a PVT {'v2' if v2 else 'v1'} classifier checkpoint: missing {', '.join(missing[:4])}"
                f"{' …' if len(missing) > 4 else ''} (its first keys are: {sample})"
            )
        dims = [int(sd[f"patch_embed{i}.proj.weight"].shape[0]) for i in range(1, 5)]
        depths, srs, ratios = [], [], []
        for i in range(1, 5):
            idx = {int(m.group(1)) for k in sd if (m := re.match(rf"^block{i}\.(\d+)\.", k))}
            if not idx:
                raise CheckpointError(f"not a PVT checkpoint: stage {i} has no block{i}.* keys")
            depths.append(max(idx) + 1)
            sr = sd.get(f"block{i}.0.attn.sr.weight")
            srs.append(int(sr.shape[-1]) if sr is not None else 1)
            r = int(sd[f"block{i}.0.mlp.fc1.weight"].shape[0]) / dims[i - 1]
            ratios.append(int(r) if r == int(r) else r)
        hp: dict[str, Any] = dict(
            in_chans=int(sd["patch_embed1.proj.weight"].shape[1]),
            num_classes=int(sd["head.weight"].shape[0]),
            embed_dims=dims,
            mlp_ratios=ratios,
            qkv_bias="block1.0.attn.q.bias" in sd,
            depths=depths,
            sr_ratios=srs,
        )
        if v2:
            # linear SRA has a 1x1 `sr` at every stage; its SR ratios are then unused (and not in
            # the checkpoint): keep the official [8, 4, 2, 1] that pvt_v2_b2_li is built with
            linear = srs == [1, 1, 1, 1] and "block4.0.attn.sr.weight" in sd
            hp.update(version=2, linear=linear, sr_ratios=[8, 4, 2, 1] if linear else srs)
        else:
            patch = int(sd["patch_embed1.proj.weight"].shape[-1])
            n1 = int(sd["pos_embed1"].shape[1])
            side = math.isqrt(n1)
            if side * side != n1:
                raise CheckpointError(f"pos_embed1 has {n1} slots, not a square grid; cannot infer the training size")
            hp.update(img_size=side * patch, patch_size=patch)
        hp["num_heads"] = self._heads_for(hp)
        return hp

    def _heads_for(self, hp: dict[str, Any]) -> list[int]:
        """Head counts are not in a state dict: take them from the registered variant with the
        same shapes, else the official rule (head dim 64, as in every released PVT)."""
        for v in self.spec.variants:
            kw = v.kwargs()
            heads = kw.pop("num_heads")
            if Variant.make("x", kw).hparams == Variant.make("x", hp).hparams:
                return heads
        return [max(1, d // 64) for d in hp["embed_dims"]]

    def official_init_(self, model: nn.Module) -> None:
        """whai362/PVT ``_init_weights``: Linear weights truncated normal (std 0.02) with zero bias,
        LayerNorm 1/0, v2 convs normal(0, sqrt(2 / fan_out)) with zero bias; v1 positional
        embeddings and cls token truncated normal (std 0.02)."""
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
                elif isinstance(m, nn.Conv2d) and isinstance(model, PyramidVisionTransformerV2):
                    fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                    m.weight.normal_(0.0, math.sqrt(2.0 / fan_out))
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
            for name, p in model.named_parameters():
                if name.startswith("pos_embed") or name == "cls_token":
                    nn.init.trunc_normal_(p, std=0.02)

    def randomize_(self, model: nn.Module, seed: int) -> None:
        super().randomize_(model, seed)
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                # the generic rule scales (1, N, C) tensors by 1/sqrt(N*C), which would make the
                # positional embeddings (and so their resizing) invisible; give them the scale of
                # the token features so a wrong resize shows in every output
                if name.startswith("pos_embed") or name == "cls_token":
                    p.copy_(0.5 * torch.randn(p.shape, generator=gen))

    def in_channels(self, variant: Variant) -> int:
        return int(variant.kwargs().get("in_chans", 3))

    def sample_inputs(self, req: ExportRequest, count: int = 2):
        """RGB sample photographs in [0, 1] (the wrapper normalises them itself).

        Always 3 channels, without looking the variant up, so a checkpoint whose shapes match no
        registered row (variant ``custom``) works too.
        """
        return sample_images(count, 3, req.height, req.width, self.input_degradation(req), req.seed)

    def reference_label(self, req: ExportRequest) -> str:
        return " (PVT positional embeddings resized / v2-li pooling done at forward time, as upstream)"

    def input_normalisation(self, req: ExportRequest) -> str:
        return f"inside the graph: (x - {list(IMAGENET_MEAN)}) / {list(IMAGENET_STD)} (ImageNet)"

    def output_names(self, req: ExportRequest) -> list[str]:
        if self._head(req) == "cls":
            return ["logits"]
        return [f"feat{i}" for i in range(1, 5)]

    def output_kind(self, req: ExportRequest) -> str:
        return "logits" if self._head(req) == "cls" else "features"

    def wrap(self, model: nn.Module, req: ExportRequest, *, static: bool) -> nn.Module:
        """[0, 1] image -> outputs at ``req`` size; ImageNet normalisation is inside the module.

        Args:
            model: the loaded official model (copied, never modified).
            req: size and ``head`` option (``cls`` -> logits, ``features`` -> feat1..feat4).
            static: False: eager reference (embeddings resized / v2-li pooled at forward time);
                True: export form with the resized embeddings / pooling matrices as constants.

        Returns:
            a :class:`PVTWrapped` module in eval mode.

        Raises:
            UsageError: height/width not multiples of 32, or an unknown ``head`` option.
        """
        check_size(req.height, req.width)
        head = self._head(req)
        net = copy.deepcopy(model).eval()
        return PVTWrapped(net, head, (req.height, req.width) if static else None).eval()

    def fp32_islands(self, req: ExportRequest) -> list[str]:
        """None: the LayerNorms are range-safe in the export form (:class:`RangeSafeLayerNorm`) and
        softmax subtracts its row max.

        Measured before (onnxconverter-common 1.16, ORT CPU, random weights): LayerNorm islands
        halved the FP16 error only under trained-like magnitudes (1 - cosine 8.7e-6 -> 4.7e-6);
        softmax islands never helped. PVT small, 224, random weights, all FP16 with the range-safe
        LayerNorms: cosine 0.9999988 on ONNX Runtime and 0.9999984 on the true-FP16 check (top-1 equal).
        """
        return []

    def int8_excluded(self, req: ExportRequest) -> list[str]:
        # as before the FP16 rewrite: the LayerNorms stay out of the INT8 pass
        return [r"/LayerNormalization(_\d+)?$"]

    @staticmethod
    def _head(req: ExportRequest) -> str:
        head = req.option("head", "cls")
        if head not in ("cls", "features"):
            raise UsageError(f"unknown PVT head '{head}'; choose cls or features")
        return head


ADAPTER = PVTAdapter()
