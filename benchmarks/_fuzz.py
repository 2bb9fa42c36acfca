"""Damaged-input property tests of the readers that take untrusted files, written with hypothesis
(shared by tests/unit/test_fuzz.py and benchmarks/bench_fuzz.py).

The project rule: a bad input is reported in one line through ``DeployKitError``, never with a
traceback. Each example takes a REAL seed file (a checkpoint, an ONNX, a bundle written by
``deploy-kit export``), damages it as a hypothesis strategy draws it and calls the reader; the only
acceptable outcomes are success or a one-line ``DeployKitError``. Anything else (another exception,
a multi-line message, a case running past the time limit) falsifies the property: hypothesis then
shrinks the damage and prints the smallest case it found with a ``@reproduce_failure`` line that
replays it (so does the same ``--seed`` on the same source).

Targets:
  checkpoint  ``models.checkpoint.read_state_dict`` on damaged ``.pth`` files (bytes, zip
              structure, pickle inside a valid zip, odd-but-loadable structures, a zip bomb).
  onnx        ``onnxmeta.read_metadata`` and ``artifact.artifact_metadata`` on damaged ``.onnx`` files
              (bytes, protobuf wire, metadata_props values).
  manifest    ``manifest.read_manifest``, ``artifact.artifact_metadata`` (plan sidecar),
              ``bundle.open_bundle`` + ``Bundle.references`` on damaged ``manifest.json`` (bytes,
              JSON structure, hostile values, deep nesting).
  npz         ``open_bundle`` + ``Bundle.references`` on a damaged ``reference.npz`` whose sha256
              was updated in the manifest (the sha256 is integrity, not authentication).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from hypothesis import seed as hypothesis_seed

TARGETS = ("checkpoint", "onnx", "manifest", "npz")
# share of the cases per target (torch.load is the slow reader: fewer, and many fail fast anyway)
WEIGHTS = {"checkpoint": 0.25, "onnx": 0.25, "manifest": 0.3, "npz": 0.2}


@dataclass(frozen=True)
class Case:
    """One damaged input: what was done to it (``label``) and its bytes (left out of the repr)."""

    label: str
    data: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Case({self.label!r}, {len(self.data)} bytes)"

    def _repr_pretty_(self, printer, cycle) -> None:  # hypothesis prints a falsifying example so, not field by field
        printer.text(repr(self))


# ------------------------------------------------------------------------------------------- seeds
@dataclass
class Seeds:
    work: str
    pth: dict[str, bytes]  # name -> bytes of a real checkpoint
    structures: list[Case]  # torch.save of objects that load but are no plain state dict
    onnx: bytes
    bundle: str  # a pristine bundle directory
    manifest: dict[str, Any]
    npz: bytes
    bomb_pth: bytes | None = None
    bomb_npz: bytes | None = None


def run_export(out: str) -> None:
    """``deploy-kit export nafnet --variant tiny-notlc 32x32 --fp16 --bundle --backend none`` (the real CLI)."""
    cmd = [sys.executable, "-c", "from deploy_kit.cli import main; main()", "export", "nafnet", "--variant", "tiny-notlc",
           "--height", "32", "--width", "32", "--fp16", "--bundle", "--backend", "none", "--samples", "1", "--out", out]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"seed export failed ({' '.join(cmd)}):\n{r.stderr[-3000:]}")


def _zeros_member(size: int, prefix: bytes = b"") -> tuple[bytes, int]:
    """A raw-deflated stream of ``prefix`` then ``size`` zero bytes, compressed in chunks (no big
    allocation); returns (compressed bytes, crc32 of the uncompressed data)."""
    comp, chunk = zlib.compressobj(9, zlib.DEFLATED, -15), bytes(1 << 20)
    parts, crc, left = [comp.compress(prefix)], zlib.crc32(prefix), size
    while left:
        piece = chunk[: min(left, len(chunk))]
        parts.append(comp.compress(piece))
        crc, left = zlib.crc32(piece, crc), left - len(piece)
    return b"".join(parts) + comp.flush(), crc


def _raw_zip(entries: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip from (name, stored bytes, method, crc, uncompressed size), written by hand: zipfile cannot
    write a member whose data is already deflated, which is what a bomb of GiBs needs."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, usize in entries:
        off, n = out.tell(), name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), usize, len(n), 0) + n + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), usize,
                                  len(n), 0, 0, 0, 0, 0, off) + n)
    cd, start = central.getvalue(), out.tell()
    out.write(cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(cd), start, 0))
    return out.getvalue()


def make_seeds(work: str, *, bomb_mb: int = 256) -> Seeds:
    """Real seed files in ``work``: two checkpoints of nafnet tiny-notlc, an exported ONNX and an FP16 bundle.

    Args:
        work: folder for the seed export (reused when it holds one).
        bomb_mb: size the zip-bomb seeds decompress to (a .pth and a reference.npz of zeros); 0: none.

    Returns:
        The seeds.
    """
    import torch

    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_model

    def saved(obj) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    os.makedirs(work, exist_ok=True)
    sd = load_model(get_adapter("nafnet"), "tiny-notlc", None).model.state_dict()
    pth = {"params": saved({"params": sd}), "model-module": saved({"model": {f"module.{k}": v for k, v in sd.items()}})}
    structures = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, obj in structure_checkpoints():
            with contextlib.suppress(Exception):  # a type this torch cannot save is not a case
                structures.append(Case(name, saved(obj)))
    export = os.path.join(work, "export")
    if not os.path.isdir(export) or not any(f.endswith(".bundle") for f in os.listdir(export)):
        run_export(export)
    found = sorted(os.listdir(export))
    onnx_path = next(os.path.join(export, f) for f in found if f.endswith(".fp32.onnx"))
    bundle = next(os.path.join(export, f) for f in found if f.endswith(".bundle"))
    with open(onnx_path, "rb") as fh:
        onnx_bytes = fh.read()
    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)
    with open(os.path.join(bundle, "reference.npz"), "rb") as fh:
        npz = fh.read()
    seeds = Seeds(work, pth, structures, onnx_bytes, bundle, manifest, npz)
    if bomb_mb:
        # .pth bomb: a one-tensor checkpoint whose storage is bomb_mb of zeros, deflated (~1000x smaller)
        numel = (bomb_mb << 20) // 4
        entries = []
        for name, data in _members(saved({"params": {"w": torch.zeros(1000)}})):
            if name.endswith("/data/0"):
                comp, crc = _zeros_member(numel * 4)
                entries.append((name, comp, 8, crc, numel * 4))
            else:  # the pickle's storage numel and tensor size: 1000 -> numel
                data = data.replace(b"M\xe8\x03", b"J" + struct.pack("<i", numel)) if name.endswith("/data.pkl") else data
                entries.append((name, data, 0, zlib.crc32(data), len(data)))
        seeds.bomb_pth = _raw_zip(entries)
        # reference.npz bomb: input_0 is bomb_mb of zeros (np.savez_compressed is deflate: legal layout)
        hdr = _npy_header({"descr": "<f4", "fortran_order": False, "shape": (numel,)})
        comp, crc = _zeros_member(numel * 4, prefix=hdr)
        entries = [("input_0.npy", comp, 8, crc, len(hdr) + numel * 4)]
        entries += [(n, zlib.compress(d)[2:-4], 8, zlib.crc32(d), len(d)) for n, d in _members(npz) if n != "input_0.npy"]
        seeds.bomb_npz = _raw_zip(entries)
    return seeds


# ------------------------------------------------------------------------------- byte damage
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 1 << 40]
BYTE_KINDS = ("flip", "interesting", "truncate", "insert", "delete", "duplicate", "random", "empty", "tail")
# random bytes: small ones drawn (and shrunk) by hypothesis, large ones expanded from a drawn seed
noise = st.binary(min_size=1, max_size=64) | st.tuples(st.integers(0, 2**32 - 1), st.sampled_from((100, 1024, 4096, 65536))
                                                         ).map(lambda t: random.Random(t[0]).randbytes(t[1]))


@st.composite
def damaged(draw, data: bytes, label: str = "") -> Case:
    """1 to 3 byte-level damages of ``data``: bit flips (``tail``: in the last 128 bytes, where a zip
    keeps its directory), interesting integers, truncation, inserted/deleted/duplicated runs, noise."""
    names = []
    for kind in draw(st.lists(st.sampled_from(BYTE_KINDS), min_size=1, max_size=3)):
        n = len(data)
        at = draw(st.integers(0, max(n - 1, 0))) if kind != "tail" else max(n - 1 - draw(st.integers(0, 127)), 0)
        if kind in ("flip", "tail") and data:
            data = data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1:]
        elif kind == "interesting":
            width = draw(st.sampled_from((1, 2, 4, 8)))
            value = draw(st.sampled_from(INTERESTING)) & ((1 << 8 * width) - 1)
            data = data[:at] + value.to_bytes(width, draw(st.sampled_from(("little", "big")))) + data[at + width:]
        elif kind == "truncate":
            data = data[:at]
        elif kind == "insert":
            data = data[:at] + draw(noise) + data[at:]
        elif kind == "delete":
            data = data[:at] + data[at + draw(st.sampled_from((1, 4, 64, 1024))):]
        elif kind == "duplicate":
            data = data[:at] + data[at:at + draw(st.sampled_from((4, 64, 512, 4096)))] * draw(st.integers(2, 10)) + data[at:]
        elif kind == "random":
            data = draw(noise)
        elif kind == "empty":
            data = b""
        names.append(kind)
    return Case(label + "+".join(names), data)


# -------------------------------------------------------------------------------- zip damage
def _members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def _rezip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buf, "w", method) as z:
        warnings.simplefilter("ignore")  # duplicate names are a case, not a mistake
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, compress_type=method)
    return buf.getvalue()


# member-bytes thrice: the parsers behind the zip (pickle, .npy) are where most of the readers' code is
ZIP_KINDS = ("member-bytes",) * 3 + ("drop", "dup-name", "rename", "swap", "deflate", "empty-member", "extra-member",
                                     "reorder", "eocd", "central", "local-header", "sizes")


@st.composite
def damaged_zip(draw, data: bytes, hint: str = "") -> Case:
    """Damage a zip (a torch checkpoint or an .npz) at the structure level, CRCs kept valid except where
    the raw headers are hit; ``member-bytes`` damages a member's payload (``hint`` in its name preferred),
    so the parser behind the zip (pickle, .npy header) sees it through a valid CRC."""
    members = _members(data)
    kind = draw(st.sampled_from(ZIP_KINDS))
    i, j = draw(st.integers(0, len(members) - 1)), draw(st.integers(0, len(members) - 1))
    preferred = [k for k, (name, _) in enumerate(members) if hint and hint in name]
    if kind == "member-bytes":
        i = draw(st.sampled_from(preferred)) if preferred and draw(st.booleans()) else i
        sub = draw(damaged(members[i][1]))
        members[i] = (members[i][0], sub.data)
        return Case(f"zip:member-bytes[{members[i][0].split('/')[-1]}]:{sub.label}", _rezip(members))
    if kind in ("drop", "dup-name", "rename", "swap", "empty-member", "extra-member", "reorder"):
        name, payload = members[i]
        if kind == "drop":
            members.pop(i)
        elif kind == "dup-name":
            members.append((name, members[j][1]))
        elif kind == "rename":
            new = draw(st.sampled_from(("x", "../evil", "/abs", name + "x", name.upper(), "a/" * 50 + "b")))
            members[i] = (new, payload)
        elif kind == "swap":
            members[i], members[j] = (name, members[j][1]), (members[j][0], payload)
        elif kind == "empty-member":
            members[i] = (name, b"")
        elif kind == "extra-member":
            extra = draw(st.sampled_from(("junk", members[0][0].split("/")[0] + "/data/999")))
            members.insert(i, (extra, draw(st.sampled_from((b"", b"x" * 10)) | noise)))
        else:
            members = draw(st.permutations(members))
        return Case(f"zip:{kind}[{name.split('/')[-1]}]", _rezip(members))
    if kind == "deflate":
        return Case("zip:deflate", _rezip(members, zipfile.ZIP_DEFLATED))
    raw = bytearray(data)
    if kind == "eocd":  # end of central directory: counts, sizes, offset
        end = raw.rfind(b"PK\x05\x06")
        off = end + draw(st.sampled_from((8, 10, 12, 16, 20)))
        width = 4 if off - end in (12, 16) else 2
        raw[off:off + width] = draw(st.sampled_from(INTERESTING[:11])).to_bytes(8, "little")[:width]
        return Case("zip:eocd", bytes(raw))
    sig = b"PK\x01\x02" if kind in ("central", "sizes") else b"PK\x03\x04"
    starts = [k for k in range(len(raw)) if raw.startswith(sig, k)][:200] or [0]
    s = draw(st.sampled_from(starts))
    if kind == "sizes":  # compressed / uncompressed size of one central entry
        off = s + draw(st.sampled_from((20, 24)))
        raw[off:off + 4] = draw(st.sampled_from((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 30))).to_bytes(4, "little")
    else:
        for k in draw(st.lists(st.integers(4, (46 if kind == "central" else 30) - 1), min_size=1, max_size=4)):
            raw[s + k] = draw(st.integers(0, 255))
    return Case(f"zip:{kind}", bytes(raw))


# ------------------------------------------------------------------------- checkpoint structures
def structure_checkpoints() -> list[tuple[str, Any]]:
    """Objects ``torch.save`` writes that ``weights_only`` loads but that are no plain state dict."""
    import collections

    import torch

    t = torch.ones(2, 2)
    nan = torch.tensor([1.0, float("nan")])
    deep: Any = t
    for _ in range(200):
        deep = {"params": deep}
    out = [
        ("int-keys", {1: t, 2: t}), ("tuple-key", {(1, 2): t}), ("params-int-keys", {"params": {0: t}}),
        ("none-key", {None: t}), ("bool-key", {True: t}), ("float-key", {1.5: t}),
        ("tensor", t), ("list", [t, t]), ("tuple", (t,)), ("none", None), ("int", 3), ("str", "params"),
        ("empty", {}), ("params-empty", {"params": {}}), ("params-none", {"params": None}),
        ("params-mixed", {"params": {"a": t, "b": 1}}), ("nested", {"params": {"params": {"a": t}}}),
        ("nan", {"params": {"a": nan}}), ("inf", {"params": {"a": torch.tensor([float("inf")])}}),
        ("complex-nan", {"a": torch.tensor([complex(float("nan"), 0)])}), ("bool", {"a": torch.ones(3, dtype=torch.bool)}),
        ("int8", {"a": torch.ones(3, dtype=torch.int8)}), ("scalar", {"a": torch.tensor(1.0)}),
        ("empty-tensor", {"a": torch.empty(0, 5)}), ("bf16-nan", {"a": torch.tensor([float("nan")], dtype=torch.bfloat16)}),
        ("sparse", {"a": torch.eye(3).to_sparse()}), ("sparse-csr", {"a": torch.eye(3).to_sparse_csr()}),
        ("meta", {"a": torch.empty(3, device="meta")}), ("noncontig", {"a": torch.ones(4, 4).t()}),
        ("strided-view", {"a": torch.arange(10.0)[::3]}), ("ordered", collections.OrderedDict(a=t)),
        ("module-only", {"module.": t}), ("long-key", {"k" * 100000: t}), ("many-keys", {f"k{i}": torch.ones(1) for i in range(5000)}),
        ("deep", deep), ("bytes-key", {b"a": t}), ("quantized", {"a": torch.quantize_per_tensor(t, 0.1, 0, torch.quint8)}),
    ]
    if hasattr(torch, "float8_e4m3fn"):
        out.append(("fp8", {"a": torch.zeros(4).to(torch.float8_e4m3fn)}))
    with contextlib.suppress(Exception):  # optional
        out.append(("nested-tensor", {"a": torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])}))
    return out


def checkpoint_cases(seeds: Seeds) -> st.SearchStrategy[Case]:
    """Damaged checkpoints: bytes, zip structure (the pickle preferred), structures (some re-damaged),
    two seeds spliced, legacy (non-zip) pickles, and the zip bomb."""
    pth = st.sampled_from(sorted(seeds.pth.values()))
    hints = st.sampled_from(("data.pkl", "/data/", "version", "byteorder"))
    structures = st.sampled_from(seeds.structures)

    @st.composite
    def splice(draw) -> Case:
        a, b = draw(pth), draw(pth)
        return Case("splice", a[:draw(st.integers(0, len(a)))] + b[draw(st.integers(0, len(b))):])

    legacy = st.sampled_from(({"params": {"a": 1}}, [1, 2], "x", None)).map(
        lambda obj: Case("legacy-pickle", pickle.dumps(obj, protocol=2)))
    return st.one_of(
        pth.flatmap(damaged), st.tuples(pth, hints).flatmap(lambda t: damaged_zip(*t)), structures,
        structures.flatmap(lambda c: damaged_zip(c.data, "data.pkl").map(lambda d: Case(f"{c.label}+{d.label}", d.data))),
        splice(), legacy, *([st.just(Case("bomb", seeds.bomb_pth))] if seeds.bomb_pth else []))


# ---------------------------------------------------------------------------------- onnx damage
@st.composite
def damaged_onnx_metadata(draw, onnx_bytes: bytes) -> Case:
    """A valid protobuf with hostile ``metadata_props``: odd JSON, deep nesting, huge or many entries."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    props = model.metadata_props
    kind = draw(st.sampled_from(("value", "deep", "huge", "many", "dup", "empty-key", "drop-all", "no-graph")))
    if kind in ("value", "deep"):
        p = props[draw(st.integers(0, len(props) - 1))] if len(props) else props.add()
        depth = draw(st.sampled_from((990, 1000, 5000, 100000)))
        p.value = "[" * depth + "]" * depth if kind == "deep" else draw(st.sampled_from((
            "", "x", "[", "{", "NaN", "1e999", "1" + "0" * 5000, '"\\ud800"', "null", "[1,2", json.dumps({"a": [None] * 100}),
            "\u0000", '{"a": 1}' * 2, "true", "-0")) | st.text(max_size=40))
    elif kind == "huge":
        e = props.add()
        e.key, e.value = "x", "a" * draw(st.sampled_from((1 << 20, 8 << 20)))
    elif kind == "many":
        for i in range(draw(st.sampled_from((1000, 20000)))):
            e = props.add()
            e.key, e.value = f"k{i}", str(i)
    elif kind in ("dup", "empty-key"):
        e = props.add()
        e.key, e.value = (props[0].key, '"other"') if kind == "dup" else ("", "1")
    elif kind == "drop-all":
        del props[:]
    else:
        model.ClearField("graph")
    case = Case(f"meta:{kind}", model.SerializeToString())
    if draw(st.integers(0, 4)) == 0:
        sub = draw(damaged(case.data))
        case = Case(f"{case.label}+{sub.label}", sub.data)
    return case


def onnx_cases(seeds: Seeds) -> st.SearchStrategy[Case]:
    return damaged(seeds.onnx) | damaged_onnx_metadata(seeds.onnx)


# ------------------------------------------------------------------------------ manifest damage
HOSTILE = [None, True, False, 0, -1, 1, 2**63, -(2**63) - 1, 10**30, 1.5, 1e308, -0.0, float("nan"), float("inf"),
           "", "x", "NaN", "inf", "1", "../../etc/passwd", "/abs/path", "\u0000", "\ud800", "é" * 3, "a" * 5000,
           [], {}, [1, 2], [None], {"a": 1}, [[[[]]]], {"name": None}, {"file": "../x"}]
# the targeted values above, or any JSON value hypothesis makes up
hostile = st.sampled_from(HOSTILE) | st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
SCHEMA_VERSIONS = [0, -1, 2, 999, True, False, "1", 1.0, None, 10**100, 2**63, [1], {"v": 1}]
SHAPES = [[], [1, 3, 32], [1, 3, 32, 32, 1], [0, 3, 32, 32], [-1, 3, 32, 32], [1.0, 3, 32, 32], [True, 3, 32, 32],
          [1, 3, 2**40, 32], ["1", 3, 32, 32], [[1], 3, 32, 32], [None] * 4, [1, 3, 1 << 20, 32], [1, 3, 32, 10**30],
          "1x3x32x32", {"n": 1}, [1, 6, 32, 32], [2, 3, 32, 32], [1, 3, 16, 16]]
FILES = ["../x", "../../etc/passwd", "/etc/passwd", "a/../../b", "", ".", "..", "..\\..\\x", "sub/../..", "x\u0000y",
         "reference.npz/..", "./reference.npz", "README.md/", "a" * 300, "C:\\x", "~/x"]
REFS = [{"file": "../../x.npz"}, {"file": "/etc/passwd"}, {"file": 5}, {"file": None}, {"file": ["a"]}, {"file": ""},
        {"file": "."}, {"file": "README.md"}, {"file": "manifest.json"}, {"file": "reference.npz/.."},
        {"count": 10**9}, {"count": -1}, {"count": 0}, {"count": "2"}, {"count": [1]}, {"count": 1e308},
        {"count": "inf"}, {"count": float("nan")}, {"count": float("inf")}, {"count": True}, {"count": None},
        {"count": 10**30}, {"count": 2.7}, {"count": {"a": 1}}, {"file": "reference.npz", "count": 100}, None, {}]
FIELD_VALUES = {  # whole-field replacements aimed at what the readers check
    "schema_version": SCHEMA_VERSIONS, "input_shape": SHAPES,
    "schema": ["deploy-kit/Manifest", "", None, 1, ["deploy-kit/manifest"], "deploy-kit/manifest\u0000"],
    "input_names": [[""], ["output", 5], [[]], [f"o{i}" for i in range(1000)], ["../x"], [None], ["a\u0000"], "output", []],
    "output_names": [[""], ["output", 5], ["output", "output"], [None], "output", []],
    "onnx": ["../x.onnx", "/etc/passwd", "", "README.md", "manifest.json", "missing.onnx", ".", 5, None],
    "backend": [{}, {"name": 5}, {"name": "tensorrt"}, {"name": None}, [], "x", {"name": "a" * 10000}],
    "tolerance": [{"bogus": 1}, {"fp16_min_psnr": "high"}, {"fp32_max_abs": None}, [], "x"],
    "files": [[], "x", None, {"": ""}, {f"f{i}": "0" * 64 for i in range(5000)}, {f: "0" * 64 for f in FILES}],
    "graph_io": [{}, {"inputs": []}, {"inputs": [{"name": "input"}], "outputs": []}, [], "x"],
    "input": [{}, {"channels": "3"}, {"pad_multiple": 0}, {"dtype": 5}, []],
}


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path into a JSON value (the root first)."""
    if isinstance(obj, dict):
        return [prefix] + [p for k, v in obj.items() for p in _paths(v, prefix + (k,))]
    if isinstance(obj, list):
        return [prefix] + [p for i, v in enumerate(obj) for p in _paths(v, prefix + (i,))]
    return [prefix]


def _parent(obj: Any, path: tuple) -> Any:
    for k in path[:-1]:
        obj = obj[k]
    return obj


@st.composite
def damaged_manifest(draw, manifest: dict) -> Case:
    """A damaged manifest.json: values replaced (at any depth) or removed, whole fields replaced by what
    the readers check, file entries, references, deep nesting (in the values and in the text), odd
    literals, another root, another encoding, or byte damage."""
    m = copy.deepcopy(manifest)
    kind = draw(st.sampled_from(("delete", "type", "type", "field", "field", "files", "references", "nested",
                                 "text-deep", "text-literal", "root", "bytes", "bytes", "multi", "extra-key")))
    edits = draw(st.integers(2, 5)) if kind == "multi" else 1 if kind in ("delete", "type", "nested") else 0
    for _ in range(edits):  # at a path into the manifest: removed, or replaced by a hostile (deeply nested) value
        path = draw(st.sampled_from(_paths(m)[1:] or [("x",)]))
        with contextlib.suppress(KeyError, IndexError, TypeError):  # an earlier edit removed the path
            if kind == "delete":
                del _parent(m, path)[path[-1]]
                continue
            value = copy.deepcopy(draw(hostile))  # a later edit may reach into it: never the strategy's own object
            for _ in range(draw(st.sampled_from((5, 50, 200))) if kind == "nested" else 0):
                value = [value] if draw(st.booleans()) else {"k": value}
            _parent(m, path)[path[-1]] = value
    if edits == 1:
        kind += f"[{'.'.join(map(str, path))}]"
    if kind == "field":
        key = draw(st.sampled_from(sorted(FIELD_VALUES)))
        m[key] = copy.deepcopy(draw(st.sampled_from(FIELD_VALUES[key])))
        kind += f"[{key}]"
    elif kind == "files":
        files = m.setdefault("files", {})
        key = draw(st.sampled_from(sorted(files) + FILES))
        files[key] = copy.deepcopy(draw(st.sampled_from(("0" * 64, "g" * 64, "0" * 63, "0" * 65, "A" * 64,
                                                         files.get(key, "")[::-1])) | hostile))
    elif kind == "references":
        refs = draw(st.sampled_from(REFS))
        m["references"] = copy.deepcopy(refs) if refs is None or draw(st.booleans()) else {**(m.get("references") or {}), **refs}
    elif kind == "extra-key":
        m[draw(st.sampled_from(("x", "", "\u0000", "a" * 1000, "__proto__")) | st.text(max_size=10))] = copy.deepcopy(draw(hostile))
    text = json.dumps(m, indent=draw(st.sampled_from((None, 2))))  # NaN/Infinity literals for non-finite values
    if kind == "text-deep":  # nesting at the text level: RecursionError territory
        depth = draw(st.sampled_from((500, 900, 950, 970, 980, 990, 1000, 5000, 100000)))
        key = draw(st.sampled_from(("schema", "hparams", "files", "input_shape", "tlc", "x", "references", "model")))
        opening, closing = draw(st.sampled_from((("[", "]"), ('{"a":', "}"))))
        text = text[:-1] + f', "{key}": ' + opening * depth + "1" + closing * depth + "}"
    elif kind == "text-literal":
        key = draw(st.sampled_from(("schema_version", "seed", "build_seconds", "input_shape", "x")))
        literal = draw(st.sampled_from(("1" + "0" * 5000, "1e999", "-1e999", "NaN", "Infinity", "-Infinity", "0x10", "01",
                                        "1.", '"\\ud800"', '"\\u0000"', "true", "null", '"' + "a" * 100000 + '"')))
        text = text[:-1] + f', "{key}": {literal}' + "}"
    elif kind == "root":
        text = draw(st.sampled_from(("[]", '"x"', "1", "null", "true", "{}", "", " ", "\ufeff" + text, text + "garbage",
                                     text + text, '{"schema": "deploy-kit/manifest"}')))
        encoding = draw(st.sampled_from(("utf-8", "utf-8", "utf-8", "utf-16", "utf-32", "latin-1")))
        return Case(f"root:{encoding}", text.encode(encoding, "surrogatepass" if encoding == "utf-8" else "replace"))
    data = text.encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return draw(damaged(data, "bytes:"))
    return Case(kind, data)


def manifest_cases(seeds: Seeds) -> st.SearchStrategy[Case]:
    return damaged_manifest(seeds.manifest)


# ----------------------------------------------------------------------------------- npz damage
def _npy_header(header: dict) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def with_npy_header(npz: bytes, member: str, header: bytes) -> bytes:
    """``npz`` with ``member``'s .npy header replaced by ``header`` (its data kept), re-zipped validly."""
    members = _members(npz)
    out = []
    for name, data in members:
        if name == member:
            size = 10 + struct.unpack("<H", data[8:10])[0] if data[6:7] == b"\x01" else 12 + struct.unpack("<I", data[8:12])[0]
            data = header + data[size:]
        out.append((name, data))
    return _rezip(out, zipfile.ZIP_DEFLATED)


HUGE_SHAPES = ((10**12,), (1 << 40, 1 << 40), (1, 3, 1 << 20, 1 << 20), (2**63 - 1,), (100000, 100000, 100))


@st.composite
def damaged_npy(draw, npz: bytes) -> Case:
    """One array's .npy header rewritten inside a valid zip: huge or odd shapes, other dtypes, Fortran
    order, other format versions, hostile header text, or a damaged payload."""
    name = draw(st.sampled_from([n for n, _ in _members(npz)]))
    data = dict(_members(npz))[name]
    kind = draw(st.sampled_from(("shape", "shape", "dtype", "fortran", "version", "header-text", "payload")))
    header = {"descr": "<f4", "fortran_order": kind == "fortran", "shape": (1, 3, 32, 32)}
    if kind == "shape":
        header["shape"] = draw(st.sampled_from(HUGE_SHAPES + ((-1,), (0,), (1, 3, 64, 64), (1, 3, 16, 16), ())))
    elif kind == "dtype":
        header["descr"] = draw(st.sampled_from(("|O", "<f8", "<i8", "|b1", "<c8", "|V16", "<U10", [("a", "<f4")], "?", "<f2")))
    if kind in ("shape", "dtype", "fortran"):
        try:
            raw = _npy_header(header)
        except (ValueError, TypeError):  # numpy will not even write it: a header that says nothing
            raw = b"\x93NUMPY\x01\x00" + struct.pack("<H", 32) + b"{'descr': '<f4', 'shape': ()}    "
        return Case(f"npy:{kind}[{name}]", with_npy_header(npz, name, raw))
    if kind == "version":
        data = data[:6] + bytes([draw(st.sampled_from((0, 2, 3, 4, 255))), 0]) + data[8:]
    elif kind == "header-text":
        text = draw(st.sampled_from((
            b"__import__('os')", b"{'descr': '<f4'}", b"{" * 50 + b"}" * 50, b"[" * 10000,
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 32, 32), 'x': 1}",
            b"{'descr': '<f4', 'fortran_order': 'no', 'shape': (1, 3, 32, 32)}",
            b"{'descr': '<f4', 'fortran_order': False, 'shape': [1, 3, 32, 32]}",
            b"{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,)}")) | st.binary(max_size=30))
        return Case(f"npy:header-text[{name}]", with_npy_header(npz, name, data[:8] + struct.pack("<H", len(text)) + text))
    else:
        sub = draw(damaged(data[128:]))
        data, kind = data[:128] + sub.data, f"payload:{sub.label}"
    return Case(f"npy:{kind}[{name}]", _rezip([(n, data if n == name else d) for n, d in _members(npz)], zipfile.ZIP_DEFLATED))


def _foreign(seeds: Seeds, kind: str) -> Case:
    """Something that is not an .npz where reference.npz should be."""
    buf = io.BytesIO()
    if kind == "npy":
        np.save(buf, np.zeros((1, 3, 32, 32), np.float32))
    elif kind == "npz-empty":
        np.savez(buf)
    elif kind == "npz-object":
        np.savez(buf, input_0=np.array([{"a": 1}], dtype=object), output_0_output=np.array([None], dtype=object))
    elif kind == "npz-other-names":
        np.savez(buf, a=np.zeros(3), b=np.zeros(3))
    else:
        buf.write({"pickle": pickle.dumps({"input_0": [1, 2, 3]}), "text": b"input_0,1,2,3\n", "onnx": seeds.onnx,
                   "pth": seeds.pth["params"], "empty": b""}[kind])
    return Case(f"foreign:{kind}", buf.getvalue())


def npz_cases(seeds: Seeds) -> st.SearchStrategy[Case]:
    foreign = [_foreign(seeds, k) for k in ("npy", "pickle", "text", "onnx", "pth", "empty", "npz-empty", "npz-object",
                                             "npz-other-names")]
    return st.one_of(damaged(seeds.npz), damaged_zip(seeds.npz, ".npy"), damaged_npy(seeds.npz), st.sampled_from(foreign),
                     *([st.just(Case("bomb", seeds.bomb_npz))] if seeds.bomb_npz else []))


STRATEGIES: dict[str, Callable[[Seeds], st.SearchStrategy[Case]]] = {
    "checkpoint": checkpoint_cases, "onnx": onnx_cases, "manifest": manifest_cases, "npz": npz_cases}


# ------------------------------------------------------------------------------------ the readers
class Readers:
    """Each target's readers, on files in a work folder (a bundle copy and a plan to damage)."""

    def __init__(self, seeds: Seeds):
        self.seeds = seeds
        self.dir = os.path.join(seeds.work, "cases")
        shutil.rmtree(self.dir, ignore_errors=True)
        self.bundle = shutil.copytree(seeds.bundle, os.path.join(self.dir, "b.fp16.bundle"))
        self.plan = os.path.join(self.dir, "x.fp16.trt.plan")
        _write(self.plan, b"not an engine")

    def checkpoint(self, data: bytes) -> None:
        from deploy_kit.models.checkpoint import read_state_dict

        _write(path := os.path.join(self.dir, "case.pth"), data)
        read_state_dict(path)

    def onnx(self, data: bytes) -> None:
        from deploy_kit.artifact import artifact_metadata
        from deploy_kit.onnxmeta import read_metadata

        # the extension varies: onnx.load picks its JSON/text parsers by extension unless told the format
        path = os.path.join(self.dir, "case" + (".onnx", ".json", ".textproto", ".onnxtxt", ".pth", "")[len(data) % 6])
        _write(path, data)
        _all(lambda: read_metadata(path), lambda: artifact_metadata(path))  # read_metadata: bundle/seamcheck/engine too

    def manifest(self, data: bytes) -> None:
        from deploy_kit.artifact import artifact_metadata
        from deploy_kit.bundle import open_bundle
        from deploy_kit.manifest import read_manifest

        _write(os.path.join(self.bundle, "manifest.json"), data)
        _write(self.plan + ".json", data)
        _all(lambda: read_manifest(self.plan + ".json"), lambda: artifact_metadata(self.plan),
             lambda: open_bundle(self.bundle).references())

    def npz(self, data: bytes) -> None:
        from deploy_kit.bundle import open_bundle
        from deploy_kit.manifest import file_sha256

        _write(ref := os.path.join(self.bundle, "reference.npz"), data)
        m = copy.deepcopy(self.seeds.manifest)
        m["files"]["reference.npz"] = file_sha256(ref)
        _write(os.path.join(self.bundle, "manifest.json"), json.dumps(m).encode())
        open_bundle(self.bundle).references()


def _all(*calls: Callable[[], Any]) -> None:
    """Run every call; a DeployKitError of any is re-raised at the end (the case counts as rejected)."""
    from deploy_kit.errors import DeployKitError

    rejected = None
    for call in calls:
        try:
            call()
        except DeployKitError as exc:
            rejected = exc
    if rejected is not None:
        raise rejected


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


class _Hang(BaseException):
    """Raised from SIGALRM; a BaseException so that no reader's ``except Exception`` swallows it."""


def _on_alarm(signum, frame):
    raise _Hang()


@dataclass
class Stats:
    """What one target's run did: outcomes, and what the library raised under each DeployKitError."""

    target: str
    cases: int = 0
    accepted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    causes: Counter = field(default_factory=Counter)

    def line(self) -> str:
        return (f"{self.target:10s} {self.cases:6d} cases  {self.accepted:5d} accepted  {self.rejected:6d} rejected "
                f"(DeployKitError)  {self.seconds:7.1f} s  slowest {self.slowest:.2f} s")


def run(seeds: Seeds, target: str, cases: int, *, seed: int = 0, timeout: float = 10.0) -> Stats:
    """``cases`` hypothesis examples of ``target``'s damaged inputs through its readers.

    Args:
        seeds: from :func:`make_seeds`.
        target: one of :data:`TARGETS`.
        cases: examples to run (hypothesis's ``max_examples``).
        seed: hypothesis's random seed: the same seed, arguments and source run the same cases
            (hypothesis also draws literals it finds in the source of the code under test).
        timeout: seconds after which a case counts as a hang.

    Returns:
        The counts, when every case succeeded or raised a one-line DeployKitError.

    Raises:
        The first foreign exception (or AssertionError for a multi-line message or a hang), on the
        smallest case hypothesis shrank it to; it prints that case and the seed.
    """
    from deploy_kit.errors import DeployKitError

    readers, stats = Readers(seeds), Stats(target)
    call = getattr(readers, target)

    @hypothesis_seed(seed)
    @settings(max_examples=cases, database=None, deadline=None, phases=(Phase.generate, Phase.shrink),
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(STRATEGIES[target](seeds))
    def damaged_input_is_one_line(case: Case) -> None:
        t = time.perf_counter()
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            call(case.data)
            stats.accepted += 1
        except DeployKitError as exc:
            if "\n" in str(exc).strip():
                raise AssertionError(f"multi-line message: {str(exc)[:300]!r}") from exc
            stats.rejected += 1
            stats.causes[type(exc.__cause__ or exc.__context__ or exc).__name__] += 1
        except _Hang:
            raise AssertionError(f"ran past {timeout:g} s") from None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        stats.cases += 1
        stats.slowest = max(stats.slowest, time.perf_counter() - t)

    old = signal.signal(signal.SIGALRM, _on_alarm)
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch/numpy warn about odd pickles and beta layouts
            damaged_input_is_one_line()
    finally:
        signal.signal(signal.SIGALRM, old)
        stats.seconds = time.perf_counter() - t0
    return stats


def split_cases(total: int, only: tuple[str, ...] = TARGETS) -> dict[str, int]:
    """``total`` cases shared among ``only`` by :data:`WEIGHTS`."""
    w = sum(WEIGHTS[t] for t in only)
    counts = {t: int(total * WEIGHTS[t] / w) for t in only}
    counts[only[0]] += total - sum(counts.values())
    return counts
