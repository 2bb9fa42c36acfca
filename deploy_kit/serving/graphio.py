"""The input and output tensors of an ONNX graph (name, element type, dims), read from the file's
protobuf wire format with the standard library alone.

The device install has neither onnx nor, on a TensorRT box, onnxruntime; the Triton configs still
need the graph's exact I/O, and only three nested messages of ``ModelProto`` hold it:
``graph`` (7) -> ``input`` (11) / ``output`` (12) -> ``ValueInfoProto`` -> ``TypeProto.tensor_type``.
Everything else (weights included) is skipped by its length without being decoded.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from ..errors import UsageError

# onnx.TensorProto.DataType -> Triton's data_type (model_config.proto) and numpy's name
ONNX_TYPES = {
    1: ("TYPE_FP32", "float32"), 2: ("TYPE_UINT8", "uint8"), 3: ("TYPE_INT8", "int8"), 4: ("TYPE_UINT16", "uint16"),
    5: ("TYPE_INT16", "int16"), 6: ("TYPE_INT32", "int32"), 7: ("TYPE_INT64", "int64"), 9: ("TYPE_BOOL", "bool"),
    10: ("TYPE_FP16", "float16"), 11: ("TYPE_FP64", "float64"), 12: ("TYPE_UINT32", "uint32"),
    13: ("TYPE_UINT64", "uint64"), 16: ("TYPE_BF16", "bfloat16"),
}


@dataclass(frozen=True)
class TensorInfo:
    """One graph input or output.

    Attributes:
        name: tensor name.
        elem_type: ONNX element type number (1 = float, 10 = float16, ...).
        dims: each dimension: an int, or the symbolic name (str) of a dynamic one.
    """

    name: str
    elem_type: int
    dims: tuple[int | str, ...]

    @property
    def triton_type(self) -> str:
        return ONNX_TYPES.get(self.elem_type, ("TYPE_INVALID", ""))[0]

    @property
    def numpy_type(self) -> str:
        return ONNX_TYPES.get(self.elem_type, ("", "unknown"))[1]


class _Damaged(Exception):
    pass


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Damaged("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf, start: int = 0, end: int | None = None):
    """(field number, wire type, value) of one message; value is an int or a (start, end) span."""
    pos, end = start, len(buf) if end is None else end
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = (pos, pos + n), pos + n
        else:
            raise _Damaged(f"wire type {wire}")
        if pos > end:
            raise _Damaged("field runs past its message")
        yield number, wire, value


def _text(buf, span) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8")


def _value_info(buf, span) -> TensorInfo:
    name, elem, dims = "", 0, []
    for number, wire, value in _fields(buf, *span):
        if number == 1 and wire == 2:
            name = _text(buf, value)
        elif number == 2 and wire == 2:  # TypeProto
            for n2, w2, v2 in _fields(buf, *value):
                if n2 == 1 and w2 == 2:  # tensor_type
                    for n3, w3, v3 in _fields(buf, *v2):
                        if n3 == 1 and w3 == 0:
                            elem = v3
                        elif n3 == 2 and w3 == 2:  # TensorShapeProto
                            for n4, w4, v4 in _fields(buf, *v3):
                                if n4 == 1 and w4 == 2:  # Dimension
                                    dim: int | str = "?"
                                    for n5, w5, v5 in _fields(buf, *v4):
                                        if n5 == 1 and w5 == 0:
                                            dim = v5 - (1 << 64) if v5 >= 1 << 63 else v5
                                        elif n5 == 2 and w5 == 2:
                                            dim = _text(buf, v5)
                                    dims.append(dim)
    return TensorInfo(name, elem, tuple(dims))


def graph_io(path: str) -> tuple[list[TensorInfo], list[TensorInfo]]:
    """(inputs, outputs) of the ONNX graph at ``path``; initializers listed as inputs are left out.

    Raises:
        UsageError: the file is missing, empty or not an ONNX ModelProto (one line).
    """
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            inputs, outputs, initializers = [], [], set()
            for number, wire, value in _fields(buf):
                if number != 7 or wire != 2:
                    continue
                for n, w, v in _fields(buf, *value):
                    if n == 11 and w == 2:
                        inputs.append(_value_info(buf, v))
                    elif n == 12 and w == 2:
                        outputs.append(_value_info(buf, v))
                    elif n == 5 and w == 2:  # TensorProto: its name is field 8
                        initializers.update(_text(buf, v8) for n8, w8, v8 in _fields(buf, *v) if n8 == 8 and w8 == 2)
    except FileNotFoundError:
        raise UsageError(f"ONNX file not found: {path}") from None
    except (OSError, ValueError, _Damaged) as exc:  # mmap of an empty file is a ValueError
        raise UsageError(f"{path} is not a readable ONNX file ({exc}); copy the bundle again") from None
    if not outputs:
        raise UsageError(f"{path} is not a readable ONNX file (no graph outputs); copy the bundle again")
    return [i for i in inputs if i.name not in initializers], outputs
