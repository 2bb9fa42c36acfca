"""Restormer (swz30/Restormer, Academic Public License) with its exact state-dict layout, and
Restormer-Local (TLC windowed attention, megvii-research/TLC ``restormer_arch.py``).

Written from the paper and the official repository's description (https://github.com/swz30/Restormer,
https://arxiv.org/abs/2111.09881; TLC: https://github.com/megvii-research/TLC). Export-driven
choices, each local to the module it concerns:

* LayerNorm reduces over the channel axis of the NCHW map directly. Upstream flattens to
  (B, HW, C) with einops and back, which costs two transposes per norm (~90 norm sites) and is a
  known dynamo-export hazard (pytorch/pytorch#137629, Project-MONAI/MONAI#8130). BiasFree keeps
  upstream's uncentred numerator, so it can never be an ONNX ``LayerNormalization``.
* The q/k L2 normalisation is written as sum of squares -> sqrt -> max(eps) -> div inside the
  ``q_norm``/``k_norm`` submodules (no parameters, so no state-dict keys): the FP16 pass keeps
  those nodes FP32 by name, because the sum over H*W overflows FP16 (NVIDIA/TensorRT#1954).
* PixelUnshuffle/PixelShuffle stay ``nn.PixelUnshuffle``/``nn.PixelShuffle``: the TorchScript
  exporter (``dynamo=False``) writes Reshape-Transpose-Reshape / DepthToSpace(CRD), which is
  exact (parity tests check it). The dynamo exporter's SpaceToDepth has the wrong channel order
  (microsoft/onnxscript#2891) - do not switch exporters without re-running those tests.
* Padding is the official test scripts' bottom/right *reflect* pad to a multiple of 8, then a
  crop. It lives in the wrapped module (``ADAPTER.wrap``), so the ONNX takes exactly H x W.
  Reflect padding needs pad < size; smaller inputs are refused with a UsageError (we do not
  silently switch to another padding mode, which would change the output near the border).
"""

from __future__ import annotations

import copy
import math
import re
from typing import Any, Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, UsageError
from ..specs import ExportRequest, Variant
from ..tlc import WindowMerge, cut_windows, merge_windows_eager, window_starts, spatial_sum
from .base import ModelAdapter
from .fastpath import ConvParts, make_fast_form
from .rangesafe import ChannelLayerNorm, l2_normalize_spatial, l2norm_scale_log2, set_range_safe
from .restormer_spec import RESTORMER
from .sync import SyncChannelAttention, sync_form_of

PAD_MULTIPLE = 8  # three 2x downsamplings


# ---------------------------------------------------------------------------------------
# layers (state-dict names follow upstream exactly)
# ---------------------------------------------------------------------------------------
class BiasFreeLayerNorm(ChannelLayerNorm):
    """x / sqrt(var_C(x) + eps) * w over the channel axis of an NCHW map (numerator NOT centred)."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(channels, eps, bias=False, centred=False)


class WithBiasLayerNorm(ChannelLayerNorm):
    """(x - mean_C) / sqrt(var_C + eps) * w + b over the channel axis of an NCHW map."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__(channels, eps)


class LayerNorm(nn.Module):
    """Upstream's wrapper: the statistics live in ``body`` (keys ``norm*.body.weight[/bias]``)."""

    def __init__(self, dim: int, LayerNorm_type: str):  # noqa: N803 - upstream kwarg name
        super().__init__()
        if LayerNorm_type == "BiasFree":
            self.body: nn.Module = BiasFreeLayerNorm(dim)
        elif LayerNorm_type == "WithBias":
            self.body = WithBiasLayerNorm(dim)
        else:
            raise ValueError(f"LayerNorm_type must be 'WithBias' or 'BiasFree', got {LayerNorm_type!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class L2Normalize(nn.Module):
    """``F.normalize(x, dim=-1)`` as explicit ops (sum of squares, sqrt, max(eps), div).

    Its own module so the ONNX nodes are named ``.../attn/q_norm/...`` and the FP16 pass can pin
    them to FP32: the sum of squares over H*W pixels exceeds 65504 long before 720p.
    """

    def __init__(self, eps: float = 1e-12):
        super().__init__()
        self.eps = eps
        self.range_safe = False  # export form: models/rangesafe.py (the sum of squares leaves FP16)
        self.scale_log2 = 0  # set per site from the FP32 activations (rangesafe.apply_scales)

    @staticmethod
    def range_statistic(x: torch.Tensor) -> dict[str, torch.Tensor]:
        """What the range-safe norm must fit: max |x| (its squares, and their means)."""
        return {"abs": x.abs().max()}

    @staticmethod
    def choose_scale_log2(stats: dict[str, float]) -> int:
        return l2norm_scale_log2(stats.get("abs", 0.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (..., h, w) over its two spatial axes (= F.normalize over the h*w pixels).

        The sum of squares uses :func:`deploy_kit.tlc.spatial_sum` (two MatMuls): ONNX Runtime's
        single ReduceSum over h*w accumulates in FP32 and was measured 1e-6 (256x256) to 2e-5
        (720x1280) relative off a float64 sum; the GEMM form stays at ~1e-7 at every size.
        """
        if self.range_safe:
            return l2_normalize_spatial(x, self.eps, self.scale_log2)
        ssq = spatial_sum(x * x)
        return x / torch.sqrt(ssq).clamp_min(self.eps)


class FeedForward(nn.Module):
    """GDFN: 1x1 -> 3x3 depthwise -> GELU(x1) * x2 -> 1x1; hidden = int(dim * factor)."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)
        self.parts: ConvParts | None = None  # export form: models/fastpath.py

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.parts(x) if self.parts is not None else self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)  # exact (erf) GELU, as upstream


class Attention(nn.Module):
    """MDTA: channel-wise ("transposed") attention per head, with an optional TLC window plan.

    ``window`` is None (global attention, the official model) or one of :class:`EagerWindows` /
    :class:`StaticWindows`, installed by ``RestormerAdapter.wrap`` on a copy of the model.
    """

    def __init__(self, dim: int, num_heads: int, bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)
        self.q_norm = L2Normalize()
        self.k_norm = L2Normalize()
        self.window: nn.Module | None = None
        self.parts: ConvParts | None = None  # export form: models/fastpath.py

    def core(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Attention on q, k, v, each (B, C, h, w) (B = windows under TLC) -> (B, C, h, w)."""
        b, c, h, w = q.shape
        heads = self.num_heads
        q, k, v = (t.reshape(b, heads, c // heads, h, w) for t in (q, k, v))
        q = self.q_norm(q).reshape(b, heads, c // heads, h * w)
        k = self.k_norm(k).reshape(b, heads, c // heads, h * w)
        v = v.reshape(b, heads, c // heads, h * w)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        attn = attn.softmax(dim=-1)
        return (attn @ v).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # qkv + depthwise conv on the FULL map (TLC too): the 3x3 conv sees no window borders
        q, k, v = self.parts(x) if self.parts is not None else self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        out = self.core(q, k, v) if self.window is None else self.window(self.core, q, k, v)
        return self.project_out(out)  # 1x1: commutes with the overlap averaging


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool, LayerNorm_type: str):  # noqa: N803
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = Attention(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = FeedForward(dim, ffn_expansion_factor, bias)

    def make_fast(self) -> None:
        """Export form: LayerNorm affines folded into qkv / project_in, q/k/v and the gate's halves
        as separate conv chains (models/fastpath.py)."""
        self.attn.parts = ConvParts.fold(self.norm1.body, self.attn.qkv, self.attn.qkv_dwconv, 3)
        self.ffn.parts = ConvParts.fold(self.norm2.body, self.ffn.project_in, self.ffn.dwconv, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_c: int, embed_dim: int, bias: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """3x3 conv n -> n/2, PixelUnshuffle(2): 2n channels at half resolution."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """3x3 conv n -> 2n, PixelShuffle(2): n/2 channels at double resolution."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ReflectPad(nn.Module):
    """Official test-script padding: reflect bottom/right to a multiple of 8, crop afterwards.

    Args:
        multiple: pad each spatial size up to a multiple of this.
        size: the exact (H, W) of the export form (pads become constants); None computes them
            from the input at run time (the eager reference).

    Raises (in ``forward``):
        UsageError: reflect padding needs pad < size on each axis (e.g. H = 4 needs pad 4).
    """

    def __init__(self, multiple: int, size: tuple[int, int] | None = None):
        super().__init__()
        self.multiple = multiple
        self.size = None if size is None else (int(size[0]), int(size[1]))
        if self.size is not None:
            check_reflect_size(*self.size, multiple)

    def extra_repr(self) -> str:
        return f"multiple={self.multiple}, size={self.size or 'dynamic'}"

    def _hw(self, x: torch.Tensor) -> tuple[int, int]:
        if self.size is None:
            h, w = int(x.shape[-2]), int(x.shape[-1])
            check_reflect_size(h, w, self.multiple)
            return h, w
        if tuple(x.shape[-2:]) != self.size:
            raise RuntimeError(f"padding built for {self.size}, got input {tuple(x.shape[-2:])}")
        return self.size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self._hw(x)
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        return F.pad(x, (0, pw, 0, ph), mode="reflect") if ph or pw else x

    def crop(self, y: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        h, w = self._hw(inp)
        return y if (y.shape[-2], y.shape[-1]) == (h, w) else y[..., :h, :w]


def check_reflect_size(h: int, w: int, multiple: int = PAD_MULTIPLE) -> None:
    """Raise UsageError when bottom/right reflect padding to ``multiple`` is impossible."""
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph >= h or pw >= w:
        raise UsageError(
            f"Restormer reflect-pads the input to a multiple of {multiple}, which needs pad < size: "
            f"{h}x{w} would need {ph}x{pw}; use a size of at least {multiple} pixels per side"
        )


class Restormer(nn.Module):
    """The official Restormer topology (4-level U-Net of transformer blocks).

    ``input_pad`` is None in the official model (no internal padding, as upstream); the adapter
    installs a :class:`ReflectPad` on the copy it exports.
    """

    def __init__(
        self,
        inp_channels: int = 3,
        out_channels: int = 3,
        dim: int = 48,
        num_blocks=(4, 6, 6, 8),
        num_refinement_blocks: int = 4,
        heads=(1, 2, 4, 8),
        ffn_expansion_factor: float = 2.66,
        bias: bool = False,
        LayerNorm_type: str = "WithBias",  # noqa: N803
        dual_pixel_task: bool = False,
    ):
        super().__init__()

        def level(ch: int, h: int, n: int) -> nn.Sequential:
            return nn.Sequential(
                *[TransformerBlock(ch, h, ffn_expansion_factor, bias, LayerNorm_type) for _ in range(n)]
            )

        d1, d2, d3, d4 = dim, dim * 2, dim * 4, dim * 8
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = level(d1, heads[0], num_blocks[0])
        self.down1_2 = Downsample(d1)
        self.encoder_level2 = level(d2, heads[1], num_blocks[1])
        self.down2_3 = Downsample(d2)
        self.encoder_level3 = level(d3, heads[2], num_blocks[2])
        self.down3_4 = Downsample(d3)
        self.latent = level(d4, heads[3], num_blocks[3])
        self.up4_3 = Upsample(d4)
        self.reduce_chan_level3 = nn.Conv2d(d4, d3, 1, bias=bias)
        self.decoder_level3 = level(d3, heads[2], num_blocks[2])
        self.up3_2 = Upsample(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, 1, bias=bias)
        self.decoder_level2 = level(d2, heads[1], num_blocks[1])
        self.up2_1 = Upsample(d2)
        # level 1: up(2d -> d) cat enc1(d) = 2d channels, NOT reduced; refinement runs there too
        self.decoder_level1 = level(d2, heads[0], num_blocks[0])
        self.refinement = level(d2, heads[0], num_refinement_blocks)
        self.dual_pixel_task = dual_pixel_task
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(d1, d2, 1, bias=bias)
        self.output = nn.Conv2d(d2, out_channels, 3, padding=1, bias=bias)
        self.input_pad: ReflectPad | None = None

    def block_levels(self) -> Iterator[tuple[TransformerBlock, int]]:
        """(block, downscale of its feature map) for every transformer block."""
        for name, down in (
            ("encoder_level1", 1), ("encoder_level2", 2), ("encoder_level3", 4), ("latent", 8),
            ("decoder_level3", 4), ("decoder_level2", 2), ("decoder_level1", 1), ("refinement", 1),
        ):
            for block in getattr(self, name):
                yield block, down

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        x_in = inp_img if self.input_pad is None else self.input_pad(inp_img)
        emb = self.patch_embed(x_in)
        enc1 = self.encoder_level1(emb)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        lat = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(lat), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1)))
        if self.dual_pixel_task:
            out = self.output(dec1 + self.skip_conv(emb))
        else:
            out = self.output(dec1) + x_in
        return out if self.input_pad is None else self.input_pad.crop(out, inp_img)


# ---------------------------------------------------------------------------------------
# TLC (Restormer-Local) window plans
# ---------------------------------------------------------------------------------------
class EagerWindows(nn.Module):
    """Upstream-style TLC attention, shape-generic: windows from the feature size at run time.

    Per axis k = min(n, K) and the TLC ``grids`` starts; windows are stacked on the batch axis,
    attended, and merged by averaging overlaps (``merge_windows_eager``). One window covering
    the whole map is exactly global attention.
    """

    def __init__(self, kernel: tuple[int, int]):
        super().__init__()
        self.kernel = (int(kernel[0]), int(kernel[1]))

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}, eager"

    def forward(self, core, *maps: torch.Tensor) -> torch.Tensor:
        """``core(*maps)`` per window (each map cut alike), overlaps averaged back."""
        h, w = int(maps[0].shape[-2]), int(maps[0].shape[-1])
        kh, rows = window_starts(h, self.kernel[0])
        kw, cols = window_starts(w, self.kernel[1])
        if len(rows) == 1 and len(cols) == 1:  # count 1 means k == n: global attention
            return core(*maps)
        outs = []
        for i in range(maps[0].shape[0]):  # upstream asserts batch 1; do each image separately
            y = core(*(cut_windows(m[i : i + 1], (kh, kw), rows, cols) for m in maps))
            outs.append(merge_windows_eager(y, (h, w), (kh, kw), rows, cols))
        return torch.cat(outs, 0)


class StaticWindows(nn.Module):
    """TLC attention unrolled for one feature size: static Slice + Concat, static Pad + Add merge."""

    def __init__(self, kernel: tuple[int, int], size: tuple[int, int]):
        super().__init__()
        h, w = int(size[0]), int(size[1])
        kh, self.rows = window_starts(h, int(kernel[0]))
        kw, self.cols = window_starts(w, int(kernel[1]))
        self.kernel, self.size, self.k = (int(kernel[0]), int(kernel[1])), (h, w), (kh, kw)
        self.is_global = len(self.rows) == 1 and len(self.cols) == 1
        self.merge = None if self.is_global else WindowMerge((h, w), (kh, kw), self.rows, self.cols)

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)

    def extra_repr(self) -> str:
        mode = "global" if self.is_global else f"k={self.k} rows={self.rows} cols={self.cols}"
        return f"kernel={self.kernel}, size={self.size}, {mode}"

    def forward(self, core, *maps: torch.Tensor) -> torch.Tensor:
        """``core(*maps)`` on the windows of each map (cut alike), merged back onto the canvas."""
        for m in maps:
            if tuple(m.shape[-2:]) != self.size:
                raise RuntimeError(f"static TLC windows built for (N, *, {self.size}), got {tuple(m.shape)}")
        if self.is_global:
            return core(*maps)
        return self.merge(core(*(cut_windows(m, self.k, self.rows, self.cols) for m in maps)))


def _install_sync_attention(block: TransformerBlock, state) -> None:
    block.attn.window = SyncChannelAttention(state)


def padded_size(h: int, w: int, multiple: int = PAD_MULTIPLE) -> tuple[int, int]:
    return h + (-h) % multiple, w + (-w) % multiple


# ---------------------------------------------------------------------------------------
# adapter
# ---------------------------------------------------------------------------------------
_LEVELS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent")
_COMMON_FFN = (2.66, 2.0, 4.0, 3.0, 1.0)


def _ffn_factor(pairs: list[tuple[int, int]]) -> float:
    """Recover ``ffn_expansion_factor`` from (dim, hidden) pairs, hidden = int(dim * f).

    Upstream's 2.66 (and other common values) are preferred when consistent with every pair;
    otherwise the shortest decimal in the feasible interval [max h/d, min (h+1)/d).
    """
    def fits(f: float) -> bool:
        return all(int(d * f) == h for d, h in pairs)

    for f in _COMMON_FFN:
        if fits(f):
            return f
    lo = max(h / d for d, h in pairs)
    hi = min((h + 1) / d for d, h in pairs)
    for digits in range(0, 7):
        f = math.ceil(lo * 10**digits - 1e-9) / 10**digits
        if f < hi and fits(f):
            return f
    raise CheckpointError(f"Restormer FFN widths {pairs} fit no single expansion factor")


class RestormerAdapter(ModelAdapter):
    spec = RESTORMER


    def validate(self, req: ExportRequest) -> None:
        check_reflect_size(req.height, req.width, PAD_MULTIPLE)

    def build(self, variant: Variant) -> nn.Module:
        return Restormer(**variant.kwargs()).eval()

    def detect_hparams(self, sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
        need = (
            "patch_embed.proj.weight",
            "output.weight",
            "encoder_level1.0.attn.temperature",
            "encoder_level1.0.ffn.project_out.weight",
        )
        missing = [k for k in need if k not in sd]
        if missing:
            sample = ", ".join(list(sd)[:3])
            raise CheckpointError(
                f"not a Restormer checkpoint: missing {', '.join(missing)} (its first keys are: {sample})"
            )

        def count(prefix: str) -> int:
            pat = re.compile(rf"^{prefix}\.(\d+)\.")
            idx = {int(m.group(1)) for k in sd if (m := pat.match(k))}
            return max(idx) + 1 if idx else 0

        heads = []
        for lv in _LEVELS:
            key = f"{lv}.0.attn.temperature"
            if key not in sd:
                raise CheckpointError(f"not a complete Restormer checkpoint: missing {key}")
            heads.append(int(sd[key].shape[0]))
        pairs = sorted(
            {(int(v.shape[0]), int(v.shape[1])) for k, v in sd.items() if k.endswith(".ffn.project_out.weight")}
        )
        return dict(
            inp_channels=int(sd["patch_embed.proj.weight"].shape[1]),
            out_channels=int(sd["output.weight"].shape[0]),
            dim=int(sd["patch_embed.proj.weight"].shape[0]),
            num_blocks=[count(lv) for lv in _LEVELS],
            num_refinement_blocks=count("refinement"),
            heads=heads,
            ffn_expansion_factor=_ffn_factor(pairs),
            bias="output.bias" in sd,
            LayerNorm_type="WithBias" if any(k.endswith(".norm1.body.bias") for k in sd) else "BiasFree",
            dual_pixel_task="skip_conv.weight" in sd,
        )

    def global_context(self, req: ExportRequest) -> bool:
        """Without TLC the transposed attention spans the whole feature map."""
        return req.tlc is None

    def randomize_(self, model: nn.Module, seed: int) -> None:
        super().randomize_(model, seed)
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, p in model.named_parameters():
                # upstream initialises temperature to 1; random values make a wrong head
                # reshape or a dropped temperature visible in parity
                if name.endswith("attn.temperature"):
                    p.copy_(0.5 + 1.5 * torch.rand(p.shape, generator=gen))
            # output ~ input + modest residual keeps PSNR (data range 1) meaningful
            model.output.weight.mul_(0.1)

    def in_channels(self, variant: Variant) -> int:
        return int(variant.kwargs()["inp_channels"])

    def wrap(self, model: nn.Module, req: ExportRequest, *, static: bool) -> nn.Module:
        """The model with the official reflect pad/crop inside and TLC windows when requested.

        Args:
            model: a loaded :class:`Restormer`.
            req: size and TLC settings; ``req.tlc is None`` gives plain global attention.
            static: False = eager reference (padding and windows computed from the input at run
                time, upstream-style merge); True = export form for exactly ``req.height x
                req.width`` (constant pads, window plans from Python ints, static merge).

        Raises:
            UsageError: H or W too small to reflect-pad to a multiple of 8 (pad must be < size).
        """
        check_reflect_size(req.height, req.width, PAD_MULTIPLE)
        net = copy.deepcopy(model).eval()
        net.input_pad = ReflectPad(PAD_MULTIPLE, (req.height, req.width) if static else None)
        if req.tlc is not None:
            hp, wp = padded_size(req.height, req.width)
            for block, down in net.block_levels():
                kernel = req.tlc.kernel(down)
                block.attn.window = StaticWindows(kernel, (hp // down, wp // down)) if static else EagerWindows(kernel)
        set_range_safe(net, static)
        if static:
            make_fast_form(net)
        return net

    def sync_form(self, model: nn.Module, req: ExportRequest):
        """Every channel attention's q·kᵀ and norms exchanged with the other tiles (None with TLC)."""
        if req.tlc is not None:
            return None
        return sync_form_of(self.wrap(model, req, static=True), _install_sync_attention, "reflect", PAD_MULTIPLE)

    def reference_label(self, req: ExportRequest) -> str:
        return " with TLC (Restormer-Local windows merged by index writes, as upstream)" if req.tlc else ""

    def fp32_islands(self, req: ExportRequest) -> list[str]:
        # none: the LayerNorm statistics and the q/k L2 norms are range-safe in the export form
        # (models/rangesafe.py), and softmax subtracts its row max (it cannot overflow)
        return []

    def int8_excluded(self, req: ExportRequest) -> list[str]:
        # Node names come from the TorchScript exporter's module scopes, e.g.
        # .../attn/q_norm/MatMul (global) or .../attn/window/q_norm/MatMul (TLC): the norms' means
        # are MatMuls with constant 1/w, 1/h vectors, no weighted layer INT8 should quantize
        return [r"/attn/(?:window/)?[qk]_norm/"]


def window_plan(net: nn.Module) -> list[tuple[str, tuple[int, int], list[int], list[int]]]:
    """(block name, k, row starts, col starts) of every static TLC site (for reports/tests)."""
    out = []
    for name, m in net.named_modules():
        if isinstance(m, StaticWindows):
            out.append((name, m.k, list(m.rows), list(m.cols)))
    return out


ADAPTER = RestormerAdapter()
