"""Frozen configuration records shared by every stage (no torch, no onnx).

A :class:`ModelSpec` says everything the pipeline needs to know about one architecture
without importing it: its variants (hyper-parameter tables), padding rule, parity tolerances,
default TLC setting and where the PyTorch implementation lives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from .errors import UsageError

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Tolerance:
    """Parity gates for one model family. Lives in the spec, never in the checker.

    Attributes:
        fp32_max_abs: largest allowed |ONNX FP32 - PyTorch FP32| over every output element.
        fp32_relative: when True, ``fp32_max_abs`` is relative to the reference's max |value|
            (for feature/logit outputs whose scale is not [0, 1]).
        fp16_min_psnr: smallest allowed PSNR (dB, data range 1) for FP16 image outputs.
        fp16_min_cosine: smallest allowed cosine similarity for FP16 feature/logit outputs.
        bf16_min_psnr: smallest allowed PSNR (dB) for image outputs computed in BF16 arithmetic (OpenVINO
            on a CPU with AMX/AVX-512-BF16): BF16 keeps 8 significant bits to FP16's 11, so its gate sits
            below FP16's; the figure and its evidence: docs/cpu.md.
        bf16_min_cosine: smallest allowed cosine for BF16 feature/logit outputs (None: FP16's gate).
        int8_min_psnr: smallest allowed PSNR for INT8 image outputs.
        int8_min_cosine: smallest allowed cosine similarity for INT8 feature/logit outputs.
        int8_max_restoration_drop: largest allowed restoration-PSNR loss (dB) of INT8 against FP32
            on held-out degraded/clean pairs; applied only with trained ``--weights``.
    """

    fp32_max_abs: float = 1e-4
    fp32_relative: bool = False
    fp16_min_psnr: float | None = 50.0
    fp16_min_cosine: float | None = None
    bf16_min_psnr: float | None = 32.0
    bf16_min_cosine: float | None = None
    int8_min_psnr: float | None = 35.0
    int8_min_cosine: float | None = None
    int8_max_restoration_drop: float | None = 0.3


@dataclass(frozen=True)
class Variant:
    """One row of a model's hyper-parameter table.

    Attributes:
        name: CLI name, e.g. ``"gopro-w32"``.
        hparams: constructor keyword arguments of the official architecture, as sorted pairs
            (a tuple keeps the record hashable and frozen).
        tlc_default: whether ``--tlc`` is on when the user does not say.
        tiny: a test-only variant (small width/depth), hidden from ``list-models`` unless asked.
        summary: one line for ``list-models``.
        extra: model-specific defaults (e.g. ``("noise_sigma", 25)``) as sorted pairs.
    """

    name: str
    hparams: tuple[tuple[str, Any], ...]
    tlc_default: bool = False
    tiny: bool = False
    summary: str = ""
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def make(cls, name: str, hparams: Mapping[str, Any], **kw: Any) -> "Variant":
        """Build a variant from a plain dict of hyper-parameters (lists become tuples)."""
        items = tuple(sorted((k, _freeze(v)) for k, v in hparams.items()))
        extra = tuple(sorted((k, _freeze(v)) for k, v in dict(kw.pop("extra", {})).items()))
        return cls(name=name, hparams=items, extra=extra, **kw)

    def kwargs(self) -> dict[str, Any]:
        """Constructor keyword arguments (tuples turned back into lists)."""
        return {k: _thaw(v) for k, v in self.hparams}

    def get_extra(self, key: str, default: Any = None) -> Any:
        return dict(self.extra).get(key, default)


@dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline knows about one architecture without importing torch.

    Attributes:
        name: CLI name (``nafnet``, ``restormer``, ``pvt``).
        module: import path of the PyTorch implementation (a :class:`ModelAdapter` named ``ADAPTER``).
        summary: one line for ``list-models``.
        variants: the hyper-parameter table, official variants first.
        default_variant: the variant used when neither ``--variant`` nor a checkpoint says.
        default_size: (height, width) used when ``--height/--width`` are not given.
        pad_multiple: input padded (bottom/right) to a multiple of this inside the graph.
        supports_tlc: whether ``--tlc`` means anything for this model.
        tolerance: parity gates.
        licence: licence of the official code/weights (printed so users are not surprised).
        options: model-specific CLI options and their allowed values, e.g. ``{"head": ("cls", "features")}``;
            the first value is the default.
        image_outputs: the family's graphs output images in [0, 1], scored by PSNR on a data range of 1;
            False where they never do (PVT: class logits or feature maps), which ``debug-precision``
            then scores by PSNR on the reference's own range.
    """

    name: str
    module: str
    summary: str
    variants: tuple[Variant, ...]
    default_variant: str
    default_size: tuple[int, int] = (256, 256)
    pad_multiple: int = 1
    supports_tlc: bool = False
    tolerance: Tolerance = field(default_factory=Tolerance)
    licence: str = ""
    options: tuple[tuple[str, tuple[str, ...]], ...] = ()
    image_outputs: bool = True

    def variant(self, name: str) -> Variant:
        """Look a variant up by name.

        Raises:
            UsageError: unknown name (the message lists the known ones).
        """
        for v in self.variants:
            if v.name == name:
                return v

        known = ", ".join(v.name for v in self.variants)
        raise UsageError(f"unknown {self.name} variant '{name}'; choose one of: {known}")

    def option_defaults(self) -> dict[str, str]:
        return {k: vals[0] for k, vals in self.options}


@dataclass(frozen=True)
class TLCConfig:
    """Test-time Local Converter settings (official defaults: train 256, base = 1.5 x train).

    The per-site kernel is frozen from these two numbers alone (never from the test image):
    ``K = (train // 2**level) * base // train``.
    """

    train_size: tuple[int, int] = (256, 256)
    base_size: tuple[int, int] = (384, 384)

    @classmethod
    def from_train_size(cls, train: int) -> "TLCConfig":
        """Official rule: base_size = int(1.5 * train_size)."""
        return cls((train, train), (int(1.5 * train), int(1.5 * train)))

    def kernel(self, downscale: int) -> tuple[int, int]:
        """Frozen kernel of a TLC site whose feature map is the input divided by ``downscale``."""
        th, tw = self.train_size
        bh, bw = self.base_size
        return ((th // downscale) * bh // th, (tw // downscale) * bw // tw)

    def as_dict(self) -> dict[str, Any]:
        return {"train_size": list(self.train_size), "base_size": list(self.base_size)}


USER_KINDS = ("module", "onnx")  # the two ways a user's own model comes in (``ModelSpec`` names too)


@dataclass(frozen=True)
class UserSource:
    """A model deploy-kit has no family for: the user's ``nn.Module`` or ONNX file.

    Everything the pipeline needs that a family's spec would say, read from flags or inferred
    by a probe run (deploy_kit/models/user.py, deploy_kit/onnxsource.py).

    Attributes:
        kind: ``module`` (``FILE.py:NAME`` or ``package.module:NAME``) or ``onnx``.
        ref: the module reference as given, or the ONNX file's path.
        name: the artifact name (the class/function name or the ONNX file's stem, lower case).
        init_args: the constructor's keyword arguments as canonical JSON text (``module``).
        channels: input channels; out_channels: output channels.
        scale: output size / input size (1 for restoration, 2-4 for super-resolution).
        pad_multiple: height and width must be multiples of this (the model's size rule).
        value_range: 1 when the model takes [0, 1] images, 255 for [0, 255]; the graph's own I/O
            stays [0, 1] (the graph scales in and out).
        sha256: of the module's file or of the ONNX file, when it is a file.
        global_pools: global average pooling sites found in the module (its context is global;
            ``--tlc`` replaces them).
    """

    kind: str
    ref: str
    name: str
    init_args: str = "{}"
    channels: int = 3
    out_channels: int = 3
    scale: int = 1
    pad_multiple: int = 1
    value_range: float = 1.0
    sha256: str | None = None
    global_pools: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One line for the user: what was read from flags or inferred."""
        rng = "[0, 255] (scaled in the graph)" if self.value_range == 255 else "[0, 1]"
        pools = (f"; {self.global_pools} global average pools (global context; --tlc makes them local)"
                 if self.global_pools else "")
        return (f"{self.kind} {self.ref}: {self.channels} -> {self.out_channels} channels, scale x{self.scale}, "
                f"size multiple {self.pad_multiple}, values {rng}{pools}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "UserSource":
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)


@dataclass(frozen=True)
class ExportRequest:
    """What one ``deploy-kit export`` run was asked to produce (after validation)."""

    model: str
    variant: str
    height: int
    width: int
    precision: str = "fp32"
    tlc: TLCConfig | None = None
    weights: str | None = None
    options: tuple[tuple[str, str], ...] = ()
    seed: int = 0
    hparams: tuple[tuple[str, Any], ...] = ()  # only for variant "custom" (read from a checkpoint)
    degradation: str | None = None  # model inputs (parity, calibration): None = the variant's, "none" = clean
    batch: int = 1  # the graph's static batch dimension N: input (N, C, H, W)
    source: UserSource | None = None  # the user's own module or ONNX (model "module" / "onnx")

    def option(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    def stem(self) -> str:
        """Artifact file stem: ``{model}-{variant}-{H}x{W}`` (+ ``-tlc`` / option tags, + ``-b{N}``);
        a user's model is named by its own name instead of ``{model}-{variant}``.

        The one place artifact names are decided. A batch of 1 adds nothing (the names of
        batch-1 exports predate the batch dimension); a larger batch adds ``-b{N}`` last, so
        graphs of different batch sizes in one output folder never overwrite each other.
        """
        tags = "".join(f"-{v}" for _, v in self.options)
        tlc = "-tlc" if self.tlc is not None else ""
        batch = f"-b{self.batch}" if self.batch != 1 else ""
        name = self.source.name if self.source is not None else f"{self.model}-{self.variant}"
        return f"{name}-{self.height}x{self.width}{tlc}{tags}{batch}"


def _freeze(v: Any) -> Any:
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    return v
