"""INT8 as explicit Q/DQ in the ONNX graph (onnxruntime ``quantize_static``), plus the legacy cache
(written by ``legacy_cache.py``).

TensorRT 11 dropped implicit INT8 (calibrators, ``BuilderFlag.INT8``): precision lives in the graph
as QuantizeLinear/DequantizeLinear pairs and every engine is strongly typed
(https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/quantized-types-explicit-quantization.html).
The recipe follows what TensorRT runs as INT8 (that page's Q/DQ placement advice, ModelOpt's options):

* S8S8, symmetric activations and weights (TensorRT's scheme has zero-point 0), per-channel
  weights, float biases (``QuantizeBias: False``);
* only weighted ops are quantized (Conv, ConvTranspose, MatMul with a constant B, Gemm), inputs
  only (no Q/DQ on their outputs): quantizing Mul/Add/ReduceMean as well cost accuracy for no
  TensorRT speed-up (measured in deploy_kit/demo/README.md);
* the first and last weighted layers stay float (pixel input and pixel output are the most
  sensitive tensors of a restoration net), and so does every node matching the model's FP32
  islands (``fp32_patterns``).

Activation ranges (inputs and outputs of the quantizable layers) are cached under
``~/.cache/deploy-kit/calib`` (``$XDG_CACHE_HOME`` respected), keyed by the sha256 of (model bytes,
calibration-set digest, method, op types, onnxruntime version, extra key): a second run skips
calibration and writes a bit-identical graph. The same ranges give the legacy TensorRT ≤ 10
implicit-INT8 calibration cache for JetPack users who build with ``trtexec --int8 --calib``; as it
only has scales for the layers the Q/DQ graph quantizes, TensorRT's implicit mode runs the same
layers in INT8 (it needs a scale to pick INT8) and keeps the rest in float.

Cost: ``minmax`` is one inference per crop. ``entropy`` runs onnxruntime's pure-Python KL search per
tensor (about 0.25 s per tensor on one core, whatever the image size), so it is opt-in.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import CalibrationError, UsageError
from ..fsutil import atomic_target
from ..runners.ort import ort_session
from .calibration import CalibrationSet
from .check import check_loads
from .fp16 import convert_fp16
from .legacy_cache import LEGACY_TRT_VERSION, legacy_cache_path, trtexec_command, write_legacy_calibration_cache

METHODS = ("minmax", "entropy", "percentile")
REMAINDERS = ("fp32", "fp16")
#: Weighted ops TensorRT runs as INT8 kernels when fed by Q/DQ. MatMul only with a constant B
#: (``MatMulConstBOnly``): activation x activation products (attention) stay float.
DEFAULT_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: Histogram-based calibrators keep whole intermediate tensors in memory until they are binned:
#: feed them this many inputs per pass.
_HIST_CHUNK = 1


@dataclass(frozen=True)
class Int8Options:
    """The INT8 settings: where the calibration set comes from and how to quantize.

    ``deploy-kit export --int8`` fills ``calib``, ``calib_count``, ``method`` and ``remainder`` from
    its flags; the export pipeline adds the model's node patterns to ``fp32_patterns`` and
    ``remainder_fp32_patterns``.

    Attributes:
        calib: the calibration set (``--calib``): a directory, a glob or a manifest in
            ``calibration/``; None → the images bundled with scikit-image. Read by
            :func:`deploy_kit.precision.calibration.load_calibration_set`;
            :func:`quantize_int8` takes the loaded set.
        calib_count: number of calibration crops (``--calib-count``).
        method: activation-range calibration: ``minmax`` (max |x| seen), ``entropy`` (KL
            threshold, TensorRT's legacy default) or ``percentile`` (``percentile`` of |x|).
        remainder: precision of the nodes left unquantized: ``fp32`` or ``fp16``.
        eval_pairs: held-out (degraded, clean) pairs for the INT8 quality table
            (deploy_kit/precision/quality.py).
        fp32_patterns: regexes on node names kept out of quantization (``adapter.int8_excluded``).
        remainder_fp32_patterns: regexes on node names kept FP32 when ``remainder="fp16"`` (the
            model's FP16 islands, ``adapter.fp32_islands``: the same graph rules as ``--fp16``).
        exclude_first_last: keep the first and last weighted layers (pixel in/out) in float.
        cache_dir: activation-range cache directory; None → ``$XDG_CACHE_HOME/deploy-kit/calib``
            (``~/.cache/deploy-kit/calib``).
        op_types: op types to quantize (see :data:`DEFAULT_OP_TYPES`).
        percentile: the percentile used by ``method="percentile"``.
        legacy_trt_version: TensorRT version written in the legacy cache header (it must equal the
            device's TensorRT, which otherwise ignores the cache).
        threads: onnxruntime intra-op threads for calibration (0 = onnxruntime's default).
    """

    calib: str | None = None
    calib_count: int = 32
    method: str = "minmax"
    remainder: str = "fp32"
    eval_pairs: int = 4
    fp32_patterns: tuple[str, ...] = ()
    remainder_fp32_patterns: tuple[str, ...] = ()
    exclude_first_last: bool = True
    cache_dir: str | None = None
    op_types: tuple[str, ...] = DEFAULT_OP_TYPES
    percentile: float = 99.999
    legacy_trt_version: str = LEGACY_TRT_VERSION
    threads: int = 0

    def validate(self) -> None:
        """Raises UsageError for values outside the allowed sets (never guessed)."""
        if self.method not in METHODS:
            raise UsageError(f"unknown INT8 calibration method '{self.method}'; choose one of: {', '.join(METHODS)}")
        if self.remainder not in REMAINDERS:
            raise UsageError(f"unknown INT8 remainder precision '{self.remainder}'; choose fp32 or fp16")
        if not 50.0 < self.percentile <= 100.0:
            raise UsageError(f"percentile {self.percentile} must be in (50, 100]")
        for pat in self.fp32_patterns + self.remainder_fp32_patterns:
            try:
                re.compile(pat)
            except re.error as exc:
                raise UsageError(f"bad FP32 node pattern {pat!r} ({exc})") from exc


@dataclass(frozen=True)
class Int8Result:
    """What :func:`quantize_int8` wrote, and how.

    Attributes:
        quantized_nodes: layers that run INT8 (their activation input comes from a DequantizeLinear).
        excluded: weighted layers kept float (first/last layers and ``fp32_patterns``), by node name.
        method: the calibration method.
        cache_hit: the activation ranges came from the cache (no calibration ran).
        cache_file: the activation-range cache file (onnxruntime's JSON format).
        scales_sha256: sha256 over the Q/DQ scales (equal graphs, equal digest).
        legacy_cache: the TensorRT ≤ 10 implicit-INT8 calibration cache written next to the source.
        trtexec: the ``trtexec`` command that builds an implicit-INT8 engine with that cache.
        op_types: the op types quantized.
        remainder: precision of the unquantized remainder.
        calibration: the calibration set's description.
        seconds: wall time of the call.
    """

    quantized_nodes: int
    excluded: tuple[str, ...]
    method: str
    cache_hit: bool
    cache_file: str
    scales_sha256: str
    legacy_cache: str
    trtexec: str
    op_types: tuple[str, ...]
    remainder: str
    calibration: str
    seconds: float


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/deploy-kit/calib``, or ``~/.cache/deploy-kit/calib``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "deploy-kit", "calib")


# ---------------------------------------------------------------------------------------------
# graph inspection
# ---------------------------------------------------------------------------------------------
def _weighted(node, initializers: set[str], op_types: Sequence[str]) -> bool:
    """A node of ``op_types`` whose weight (input 1) is a constant: the layers that get INT8."""
    return node.op_type in op_types and len(node.input) > 1 and node.input[1] in initializers


def first_last_weighted(model, op_types: Sequence[str] = DEFAULT_OP_TYPES) -> tuple[list[str], list[str]]:
    """Names of the weighted layers nearest the graph input and the graph output.

    "First" layers read a graph input through float-only paths (Pad, Slice, Cast…, no other
    weighted layer in between); "last" layers reach a graph output that way (NAFNet: ``intro``
    and ``ending``; the global residual ``+ x`` does not count as a layer).
    """
    g = model.graph
    inits = {i.name for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_inputs = {i.name for i in g.input if i.name not in inits}
    graph_outputs = {o.name for o in g.output}

    def reaches_input(tensor: str, seen: set[str]) -> bool:
        if tensor in graph_inputs:
            return True
        node = producers.get(tensor)
        if node is None or node.name in seen or _weighted(node, inits, op_types):
            return False
        seen.add(node.name)
        return any(reaches_input(t, seen) for t in node.input if t and t not in inits)

    def reaches_output(tensor: str, seen: set[str]) -> bool:
        if tensor in graph_outputs:
            return True
        for node in consumers.get(tensor, []):
            if node.name in seen or _weighted(node, inits, op_types):
                continue
            seen.add(node.name)
            if any(reaches_output(t, seen) for t in node.output):
                return True
        return False

    weighted = [n for n in g.node if _weighted(n, inits, op_types)]
    first = [n.name for n in weighted if reaches_input(n.input[0], set())]
    last = [n.name for n in weighted if any(reaches_output(o, set()) for o in n.output)]
    return first, last


def exclusions(model, opts: Int8Options) -> tuple[list[str], list[str]]:
    """(excluded weighted layers, every node name passed to ``nodes_to_exclude``)."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    pats = [re.compile(p) for p in opts.fp32_patterns]
    by_pattern = [n.name for n in g.node if any(p.search(n.name) for p in pats)]
    first, last = first_last_weighted(model, opts.op_types) if opts.exclude_first_last else ([], [])
    names = list(dict.fromkeys(first + last + by_pattern))
    weighted = {n.name for n in g.node if _weighted(n, inits, opts.op_types)}
    return [n for n in names if n in weighted], names


def quantized_layers(model, op_types: Sequence[str] = DEFAULT_OP_TYPES) -> list[str]:
    """Layers of ``op_types`` whose activation input comes from a DequantizeLinear (i.e. run INT8)."""
    producers = {o: n for n in model.graph.node for o in n.output}
    out = []
    for n in model.graph.node:
        if n.op_type in op_types and n.input:
            p = producers.get(n.input[0])
            if p is not None and p.op_type == "DequantizeLinear":
                out.append(n.name)
    return out


def bypass_float_consumers(model, op_types: Sequence[str], excluded: Sequence[str]) -> int:
    """Give float consumers of a quantized activation the original tensor, not its Q/DQ copy.

    onnxruntime's QDQ quantizer renames a quantized activation, so *every* consumer reads the
    DequantizeLinear output, including ops that stay float. In NAFNet that puts INT8 rounding on
    the encoder skip connections (``Add``) for no speed gain. Rewiring those consumers to the
    QuantizeLinear input keeps the float path exact; the INT8 layers still read Q/DQ. Edits
    ``model`` in place and returns how many inputs were rewired.
    """
    g = model.graph
    inits = {i.name for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    outputs = {o.name for o in g.output}
    skip = set(excluded)
    rewired = 0
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits or dq.output[0] in outputs:
            continue
        for node in g.node:
            if node.op_type in op_types and node.name not in skip:
                continue
            for k, name in enumerate(node.input):
                if name == dq.output[0]:
                    node.input[k] = q.input[0]
                    rewired += 1
    # a Q/DQ pair left without readers would be dead weight in the graph
    used = {i for n in g.node for i in n.input} | outputs
    for _ in range(2):
        for n in [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]:
            if not any(o in used for o in n.output):
                g.node.remove(n)
        used = {i for n in g.node for i in n.input} | outputs
    return rewired


def _scales_sha256(model) -> str:
    """sha256 over the Q/DQ graph's scale initializers (name + float32 bytes), sorted by name."""
    from onnx import numpy_helper

    scale_inputs = {n.input[1] for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")}
    h = hashlib.sha256()
    for init in sorted((i for i in model.graph.initializer if i.name in scale_inputs), key=lambda i: i.name):
        h.update(init.name.encode())
        h.update(np.ascontiguousarray(numpy_helper.to_array(init), dtype=np.float32).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# calibration (all float tensors, cached)
# ---------------------------------------------------------------------------------------------
class _Reader:
    """onnxruntime CalibrationDataReader over a slice of the calibration arrays."""

    def __init__(self, name: str, arrays: Sequence[np.ndarray]):
        self._name = name
        self._it: Iterator[np.ndarray] = iter(arrays)
        self._n = len(arrays)

    def get_next(self) -> dict[str, np.ndarray] | None:
        arr = next(self._it, None)
        return None if arr is None else {self._name: arr}

    def __len__(self) -> int:
        return self._n


def _method_enum(method: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[method]


@contextlib.contextmanager
def _quiet_ort_logging():
    """quantize_static logs a 'consider pre-processing' warning on the root logger for every call:
    pre-processing (ORT graph fusions) is deliberately skipped so the Q/DQ graph stays portable
    to TensorRT, so the warning is noise here."""
    root = logging.getLogger()
    old = root.level
    root.setLevel(logging.ERROR)
    try:
        # the histogram calibrators also print progress lines on stdout
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(old)


def calibrate(src: str, calib: CalibrationSet, opts: Int8Options, cache_file: str) -> None:
    """Run onnxruntime's calibrator on the inputs/outputs of ``opts.op_types`` layers and save the ranges.

    The file is onnxruntime's own JSON calibration cache (``save_tensors_data``), which
    ``quantize_static(calibration_cache_path=…)`` reads back, written atomically.
    """
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    name = _input_name_and_check(src, calib)
    method = _method_enum(opts.method)
    extra: dict[str, Any] = {}
    if opts.method == "percentile":
        extra = {"percentile": opts.percentile, "symmetric": True}
    elif opts.method == "entropy":
        extra = {"symmetric": True}
    with tempfile.TemporaryDirectory(prefix="deploy-kit-calib-") as tmp, _quiet_ort_logging():
        calibrator = create_calibrator(
            src,
            list(opts.op_types),
            augmented_model_path=os.path.join(tmp, "augmented.onnx"),
            calibrate_method=method,
            extra_options=extra,
        )
        # the calibrator reads the augmented graph's intermediate outputs: no fused kernels
        calibrator.infer_session = ort_session(calibrator.augmented_model_path, threads=opts.threads, optimize=False)
        chunk = len(calib.arrays) if opts.method == "minmax" else _HIST_CHUNK
        for start in range(0, len(calib.arrays), chunk):
            calibrator.collect_data(_Reader(name, calib.arrays[start : start + chunk]))
        ranges = calibrator.compute_data()
        del calibrator
    save_tensors_data(ranges, cache_file)


def _input_name_and_check(src: str, calib: CalibrationSet) -> str:
    import onnx

    model = onnx.load(src, load_external_data=False)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise UsageError(f"{src} has {len(inputs)} inputs; INT8 calibration supports single-input image models")
    if not calib.arrays:
        raise CalibrationError("the calibration set is empty; load it with load_calibration_set")
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in inputs[0].type.tensor_type.shape.dim]
    shape = tuple(calib.arrays[0].shape)
    if len(dims) != len(shape) or any(d not in (-1, s) for d, s in zip(dims, shape)):
        want = "x".join(str(d) if d >= 0 else "?" for d in dims)
        raise CalibrationError(
            f"calibration arrays are {'x'.join(map(str, shape))} but {inputs[0].name} of {os.path.basename(src)} "
            f"is {want}; load the set at the export size and channel count"
        )
    return inputs[0].name


def _cache_key(src: str, calib: CalibrationSet, opts: Int8Options, extra: str) -> str:
    import onnxruntime as ort

    h = hashlib.sha256()
    with open(src, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    method = opts.method + (f"@{opts.percentile:g}" if opts.method == "percentile" else "")
    for part in (calib.digest, method, ",".join(opts.op_types), f"ort-{ort.__version__}", "ranges/1", extra):
        h.update(b"\0" + part.encode())
    return h.hexdigest()


def load_ranges(cache_file: str) -> dict[str, float]:
    """amax = max(|lowest|, |highest|) per tensor from an onnxruntime calibration cache file."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    data = load_tensors_data(cache_file)
    out = {}
    for name, td in data.items():
        lo, hi = td.range_value
        both = np.concatenate([np.ravel(np.asarray(lo, np.float64)), np.ravel(np.asarray(hi, np.float64))])
        out[name] = float(np.max(np.abs(both)))
    return out


# ---------------------------------------------------------------------------------------------
# the public entry point
# ---------------------------------------------------------------------------------------------
def quantize_int8(src: str, dst: str, calib: CalibrationSet, opts: Int8Options, *,
                  cache_key_extra: str = "") -> Int8Result:
    """Write an explicit-Q/DQ INT8 ONNX of ``src`` to ``dst``, and the legacy cache next to ``src``.

    Args:
        src: FP32 ONNX (exported and simplified at the export size).
        dst: output path; written through a temporary file and ``os.replace`` (never half-written).
        calib: the calibration set (arrays at the model's input shape).
        opts: method, remainder precision, FP32 islands, first/last exclusion, cache directory
            (``calib``, ``calib_count`` and ``eval_pairs`` are the caller's: ``calib`` is loaded).
        cache_key_extra: anything else the ranges depend on (e.g. TLC settings already baked into
            ``src`` need nothing; a caller-side preprocessing version would go here).

    Returns:
        What was written and how (:class:`Int8Result`).

    Raises:
        UsageError: bad options, multi-input models.
        CalibrationError: the calibration arrays do not fit the model input.
    """
    import onnx

    opts.validate()
    t0 = time.time()
    cache_file, hit = _activation_ranges(src, calib, opts, cache_key_extra)
    model = onnx.load(src)
    excluded, nodes_to_exclude = exclusions(model, opts)
    qmodel, layers = _write_qdq(src, dst, cache_file, calib, opts, excluded, nodes_to_exclude)
    legacy = legacy_cache_path(src)
    _write_legacy_cache(model, cache_file, legacy, opts)
    return Int8Result(
        quantized_nodes=len(layers),
        excluded=tuple(excluded),
        method=opts.method,
        cache_hit=hit,
        cache_file=cache_file,
        scales_sha256=_scales_sha256(qmodel),
        legacy_cache=legacy,
        trtexec=trtexec_command(src, legacy, excluded, opts.remainder),
        op_types=tuple(opts.op_types),
        remainder=opts.remainder,
        calibration=calib.description,
        seconds=round(time.time() - t0, 2),
    )


def _activation_ranges(src: str, calib: CalibrationSet, opts: Int8Options, cache_key_extra: str) -> tuple[str, bool]:
    """(the activation-range cache file, whether it was there already); calibrates on a miss.

    Raises:
        UsageError: ``src`` is missing or has more than one input.
        CalibrationError: the calibration arrays do not fit the model input.
    """
    if not os.path.isfile(src):
        raise UsageError(f"ONNX file not found: {src}")
    _input_name_and_check(src, calib)
    cache_dir = opts.cache_dir or default_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    key = _cache_key(src, calib, opts, cache_key_extra)
    cache_file = os.path.join(cache_dir, f"{key}.json")
    hit = _cache_usable(cache_file)
    if not hit:
        calibrate(src, calib, opts, cache_file)
    return cache_file, hit


def _write_qdq(src: str, dst: str, cache_file: str, calib: CalibrationSet, opts: Int8Options,
               excluded: list[str], nodes_to_exclude: list[str]) -> tuple[Any, list[str]]:
    """Write the Q/DQ graph to ``dst`` atomically: ``quantize_static`` with the cached ranges, float
    consumers bypassed, the FP16 remainder, the ``deploy_kit.int8`` metadata, checked.

    Returns:
        (the written model, the layers that run INT8).
    """
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT takes float biases and folds them itself
        "MatMulConstBOnly": True,
        # inputs only: a Q/DQ on a conv output helps only when the consumer is INT8 too
        "OpTypesToExcludeOutputQuantization": list(opts.op_types),
        "QDQOpTypePerChannelSupportToAxis": {"ConvTranspose": 1},
    }
    with atomic_target(dst) as tmp:  # a failure leaves neither a partial dst nor a temp file
        with _quiet_ort_logging():
            quantize_static(
                src,
                tmp,
                calibration_data_reader=None,
                calibration_cache_path=cache_file,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(opts.op_types),
                per_channel=True,
                reduce_range=False,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=nodes_to_exclude,
                calibrate_method=_method_enum(opts.method),
                extra_options=extra,
            )
        qmodel = onnx.load(tmp)
        bypass_float_consumers(qmodel, opts.op_types, excluded)
        layers = quantized_layers(qmodel, opts.op_types)
        if opts.remainder == "fp16":
            onnx.save(qmodel, tmp)
            _fp16_remainder(tmp, layers, opts)
            qmodel = onnx.load(tmp)
        qmodel.metadata_props.add(key="deploy_kit.int8", value=json.dumps(
            {"method": opts.method, "remainder": opts.remainder, "calibration": calib.description,
             "calibration_digest": calib.digest, "excluded": excluded}))
        onnx.checker.check_model(qmodel)
        check_loads(qmodel, "int8")
        onnx.save(qmodel, tmp)
    return qmodel, layers


def _write_legacy_cache(model, cache_file: str, path: str, opts: Int8Options) -> None:
    """The TensorRT <= 10 calibration cache at ``path``, from the same ranges as the Q/DQ graph.

    Scales for the weighted layers' activation input and output (Conv/MatMul/Gemm with a constant
    weight, islands excepted: a spatial mean written as MatMul is no INT8 layer); never for FP32-island
    tensors.
    """
    ranges = load_ranges(cache_file)
    islands = _pattern_outputs(model, opts.fp32_patterns)
    inits = {i.name for i in model.graph.initializer}
    island_re = re.compile("|".join(opts.fp32_patterns)) if opts.fp32_patterns else None
    layer_io = {
        t
        for n in model.graph.node
        if _weighted(n, inits, opts.op_types) and not (island_re and island_re.search(n.name))
        for t in (n.input[0], n.output[0])
    }
    write_legacy_calibration_cache({k: v for k, v in ranges.items() if k in layer_io and k not in islands},
                                   path, trt_version=opts.legacy_trt_version)


def _cache_usable(path: str) -> bool:
    if not os.path.isfile(path):
        return False
    try:
        from onnxruntime.quantization.calibrate import load_tensors_data

        load_tensors_data(path)
    except Exception:  # noqa: BLE001 - a truncated/foreign cache is recomputed, never trusted
        return False
    return True


def _pattern_outputs(model, patterns: Sequence[str]) -> set[str]:
    """Tensors produced by FP32-island nodes: left out of the legacy cache so that TensorRT's
    implicit INT8 cannot pick INT8 for them (it needs a scale to do so)."""
    pats = [re.compile(p) for p in patterns]
    return {o for n in model.graph.node if any(p.search(n.name) for p in pats) for o in n.output}


def _fp16_remainder(path: str, int8_layers: Sequence[str], opts: Int8Options) -> None:
    """Convert the unquantized remainder to FP16 in place with the project's FP16 pass.

    Q/DQ nodes and the INT8 layers they feed stay FP32 so that TensorRT still fuses
    DequantizeLinear → Conv into an INT8 kernel (a Cast in between would break the fusion).
    """
    keep = list(opts.remainder_fp32_patterns) + [r"_(Quantize|Dequantize)Linear(_\d+)?$"]
    keep += [f"^{re.escape(n)}$" for n in int8_layers]
    convert_fp16(path, path, keep, stage="int8 (fp16 remainder)")  # it reads the whole graph first, then writes atomically
