"""Mutation fuzzing of the readers that take untrusted files (shared by tests/unit/test_fuzz.py and
benchmarks/bench_fuzz.py).

The project rule: a bad input is reported in one line through ``DeployKitError``, never with a
traceback. Each case below takes a REAL seed file (a checkpoint, an ONNX, a bundle written by
``deploy-kit export``), damages it deterministically and calls the reader; the only acceptable
outcomes are success or a ``DeployKitError``. Anything else (another exception, a hang past the
per-case limit) is collected as a :class:`Failure` with what is needed to replay it.

Targets:
  checkpoint  ``models.checkpoint.read_state_dict`` on damaged ``.pth`` files (bytes, zip
              structure, pickle inside a valid zip, odd-but-loadable structures, a zip bomb).
  onnx        ``export.read_metadata`` and ``artifact.artifact_metadata`` on damaged ``.onnx`` files
              (bytes, protobuf wire, metadata_props values).
  manifest    ``manifest.read_manifest``, ``artifact.artifact_metadata`` (plan sidecar),
              ``bundle.open_bundle`` + ``Bundle.references`` on damaged ``manifest.json`` (bytes,
              JSON structure, hostile values, deep nesting).
  npz         ``open_bundle`` + ``Bundle.references`` on a damaged ``reference.npz`` whose sha256
              was updated in the manifest (the sha256 is integrity, not authentication).

Every case is reproducible from (target, base seed, index): ``python benchmarks/bench_fuzz.py
--only TARGET --seed S --start I --cases 1 -v``.
"""

from __future__ import annotations

import copy
import io
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import time
import traceback
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

TARGETS = ("checkpoint", "onnx", "manifest", "npz")
# share of the cases per target (torch.load is the slow reader: fewer, and many fail fast anyway)
WEIGHTS = {"checkpoint": 0.25, "onnx": 0.25, "manifest": 0.3, "npz": 0.2}


# ----------------------------------------------------------------------------------------- results
@dataclass
class Failure:
    target: str
    index: int
    seed: int
    mutation: str
    error: str  # "TypeError: ..." or "hang (> N s)"
    where: str  # innermost frame file:line

    def line(self) -> str:
        return f"{self.target}#{self.index} (seed {self.seed}, {self.mutation}): {self.error} at {self.where}"


@dataclass
class Stats:
    target: str
    cases: int = 0
    accepted: int = 0
    rejected: int = 0  # DeployKitError
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    slowest: float = 0.0
    causes: Counter = field(default_factory=Counter)  # what the library raised under a DeployKitError

    def line(self) -> str:
        return (f"{self.target:10s} {self.cases:6d} cases  {self.accepted:5d} accepted  {self.rejected:6d} rejected "
                f"(DeployKitError)  {len(self.failures):4d} failures  {self.seconds:7.1f} s  slowest {self.slowest:.2f} s")


class _Hang(BaseException):
    """Raised from SIGALRM; a BaseException so that no reader's ``except Exception`` swallows it."""


# ------------------------------------------------------------------------------------------- seeds
@dataclass
class Seeds:
    work: str
    pth: dict[str, bytes]  # name -> bytes of a real checkpoint
    onnx: bytes
    bundle: str  # a pristine bundle directory
    manifest: dict[str, Any]
    npz: bytes
    onnx_name: str
    bomb_pth: bytes | None = None
    bomb_npz: bytes | None = None


def run_export(out: str) -> None:
    """``deploy-kit export nafnet --variant tiny-notlc 32x32 --fp16 --bundle --backend none`` (the real CLI)."""
    cmd = [sys.executable, "-c", "from deploy_kit.cli import main; main()", "export", "nafnet", "--variant", "tiny-notlc",
           "--height", "32", "--width", "32", "--fp16", "--bundle", "--backend", "none", "--samples", "1", "--out", out]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"seed export failed ({' '.join(cmd)}):\n{r.stderr[-3000:]}")


def _zeros_member(name: str, size: int, prefix: bytes = b"") -> tuple[str, bytes, int]:
    """A raw-deflated member holding ``prefix`` then ``size`` zero bytes, compressed by streaming
    (no big allocation); returns (name, compressed bytes, crc32 of the uncompressed data)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 20)
    parts, crc, left = [comp.compress(prefix)], zlib.crc32(prefix), size
    while left:
        piece = chunk[: min(left, len(chunk))]
        parts.append(comp.compress(piece))
        crc = zlib.crc32(piece, crc)
        left -= len(piece)
    parts.append(comp.flush())
    return name, b"".join(parts), crc


def _raw_zip(entries: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip from (name, stored bytes, method, crc, uncompressed size) written by hand (for bombs)."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, method, crc, usize in entries:
        off = out.tell()
        n = name.encode()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc, len(data), usize, len(n), 0) + n + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc, len(data), usize,
                                  len(n), 0, 0, 0, 0, 0, off) + n)
    cd = central.getvalue()
    start = out.tell()
    out.write(cd + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(cd), start, 0))
    return out.getvalue()


def make_seeds(work: str, *, bomb_mb: int = 256) -> Seeds:
    """Real seed files in ``work``: two checkpoints of nafnet tiny-notlc, an exported ONNX and an FP16 bundle.

    Args:
        bomb_mb: size the zip-bomb seeds decompress to (a .pth and a reference.npz of zeros).
    """
    import torch

    from deploy_kit.models import get_adapter
    from deploy_kit.models.checkpoint import load_model

    os.makedirs(work, exist_ok=True)
    sd = load_model(get_adapter("nafnet"), "tiny-notlc", None).model.state_dict()
    pth = {}
    for name, obj in (("params", {"params": sd}), ("model-module", {"model": {f"module.{k}": v for k, v in sd.items()}})):
        buf = io.BytesIO()
        torch.save(obj, buf)
        pth[name] = buf.getvalue()
    export = os.path.join(work, "export")
    if not os.path.isdir(export) or not any(f.endswith(".bundle") for f in os.listdir(export)):
        run_export(export)
    onnx_path = next(os.path.join(export, f) for f in sorted(os.listdir(export)) if f.endswith(".fp32.onnx"))
    bundle = next(os.path.join(export, f) for f in sorted(os.listdir(export)) if f.endswith(".bundle"))
    with open(onnx_path, "rb") as fh:
        onnx_bytes = fh.read()
    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as fh:
        manifest = json.load(fh)
    with open(os.path.join(bundle, "reference.npz"), "rb") as fh:
        npz = fh.read()
    seeds = Seeds(work, pth, onnx_bytes, bundle, manifest, npz, manifest["onnx"])
    if bomb_mb:
        # .pth bomb: a one-tensor checkpoint whose storage is bomb_mb of zeros, deflated (~1000x smaller)
        numel = (bomb_mb << 20) // 4
        small = io.BytesIO()
        torch.save({"params": {"w": torch.zeros(1000)}}, small)
        z = zipfile.ZipFile(io.BytesIO(small.getvalue()))
        entries = []
        for info in z.infolist():
            data = z.read(info)
            if info.filename.endswith("/data.pkl"):  # storage numel and tensor size 1000 -> numel
                data = data.replace(b"M\xe8\x03", b"J" + struct.pack("<i", numel))
            if info.filename.endswith("/data/0"):
                name, comp, crc = _zeros_member(info.filename, numel * 4)
                entries.append((name, comp, 8, crc, numel * 4))
            else:
                entries.append((info.filename, data, 0, zlib.crc32(data), len(data)))
        seeds.bomb_pth = _raw_zip(entries)
        # reference.npz bomb: input_0 is bomb_mb of zeros (np.savez_compressed is deflate: legal layout)
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (numel,)})
        hdr = header.getvalue()
        _, data, crc = _zeros_member("input_0.npy", numel * 4, prefix=hdr)
        ref = zipfile.ZipFile(io.BytesIO(npz))
        others = [(i.filename, ref.read(i)) for i in ref.infolist() if i.filename != "input_0.npy"]
        entries = [("input_0.npy", data, 8, crc, len(hdr) + numel * 4)]
        entries += [(n, zlib.compress(d)[2:-4], 8, zlib.crc32(d), len(d)) for n, d in others]
        seeds.bomb_npz = _raw_zip(entries)
    return seeds


# ------------------------------------------------------------------------------- byte mutations
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               0x7FFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 1 << 40]


def _pos(rng: random.Random, b: bytes) -> int:
    return rng.randrange(len(b)) if b else 0


def m_bitflip(rng, b):
    b = bytearray(b)
    for _ in range(rng.choice((1, 1, 2, 4, 16))):
        if b:
            i = _pos(rng, b)
            b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def m_setbyte(rng, b):
    b = bytearray(b)
    for _ in range(rng.choice((1, 2, 8))):
        if b:
            b[_pos(rng, b)] = rng.randrange(256)
    return bytes(b)


def m_interesting(rng, b):
    b = bytearray(b)
    width = rng.choice((1, 2, 4, 8))
    v = rng.choice(INTERESTING) & ((1 << (8 * width)) - 1)
    if len(b) >= width:
        i = rng.randrange(len(b) - width + 1)
        b[i:i + width] = v.to_bytes(width, rng.choice(("little", "big")))
    return bytes(b)


def m_truncate(rng, b):
    return b[: rng.choice((0, 1, 4, 22, rng.randrange(len(b) + 1), len(b) - 1, len(b) - rng.randrange(1, 64)))] if b else b


def m_insert(rng, b):
    i = _pos(rng, b)
    return b[:i] + rng.randbytes(rng.choice((1, 4, 64, 1024))) + b[i:]


def m_delete(rng, b):
    i = _pos(rng, b)
    return b[:i] + b[i + rng.choice((1, 4, 64, 1024)):]


def m_duplicate(rng, b):
    i = _pos(rng, b)
    n = rng.choice((4, 64, 512, 4096))
    return b[:i] + b[i:i + n] * rng.choice((2, 3, 10)) + b[i:]


def m_random(rng, b):
    return rng.randbytes(rng.choice((1, 8, 100, 4096, 65536)))


def m_empty(rng, b):
    return b""


def m_tail(rng, b):
    """Damage the end (zip directory, protobuf last fields)."""
    b = bytearray(b)
    for _ in range(rng.choice((1, 3, 8))):
        if b:
            b[len(b) - 1 - rng.randrange(min(len(b), 128))] = rng.randrange(256)
    return bytes(b)


BYTE_MUTATORS: list[tuple[str, Callable]] = [
    ("bitflip", m_bitflip), ("setbyte", m_setbyte), ("interesting", m_interesting), ("truncate", m_truncate),
    ("insert", m_insert), ("delete", m_delete), ("duplicate", m_duplicate), ("random", m_random), ("empty", m_empty),
    ("tail", m_tail),
]


def byte_mutation(rng: random.Random, b: bytes, rounds: int | None = None) -> tuple[str, bytes]:
    names = []
    for _ in range(rounds or rng.choice((1, 1, 1, 2, 3))):
        name, fn = rng.choice(BYTE_MUTATORS)
        names.append(name)
        b = fn(rng, b)
    return "+".join(names), b


# -------------------------------------------------------------------------------- zip mutations
def _members(b: bytes) -> list[tuple[zipfile.ZipInfo, bytes]]:
    z = zipfile.ZipFile(io.BytesIO(b))
    return [(i, z.read(i)) for i in z.infolist()]


def _rezip(members: list[tuple[str, bytes]], method: int = zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data, compress_type=method)
    return buf.getvalue()


def zip_mutation(rng: random.Random, b: bytes, hint: str = "") -> tuple[str, bytes]:
    """Damage a zip (a torch checkpoint or a .npz) at the structure level, CRCs kept valid unless said."""
    members = [(i.filename, d) for i, d in _members(b)]
    kind = rng.choice(("member-bytes", "member-bytes", "member-bytes", "drop", "dup-name", "rename", "swap", "deflate",
                       "empty-member", "truncate-member", "extra-member", "reorder", "eocd", "central", "local-header",
                       "sizes"))
    if kind == "member-bytes":  # the payload parser (pickle, npy header) sees damage behind a valid CRC
        preferred = [i for i, (n, _) in enumerate(members) if hint and hint in n]
        i = rng.choice(preferred) if preferred and rng.random() < 0.7 else rng.randrange(len(members))
        sub, data = byte_mutation(rng, members[i][1])
        members[i] = (members[i][0], data)
        return f"zip:{kind}[{members[i][0].split('/')[-1]}]:{sub}", _rezip(members)
    if kind == "drop":
        i = rng.randrange(len(members))
        name = members.pop(i)[0]
        return f"zip:drop[{name.split('/')[-1]}]", _rezip(members)
    if kind == "dup-name":
        i = rng.randrange(len(members))
        j = rng.randrange(len(members))
        members.append((members[i][0], members[j][1]))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return "zip:dup-name", _rezip(members)
    if kind == "rename":
        i = rng.randrange(len(members))
        new = rng.choice(("x", "../evil", "/abs", members[i][0] + "x", members[i][0].upper(), "a/" * 50 + "b"))
        members[i] = (new, members[i][1])
        return "zip:rename", _rezip(members)
    if kind == "swap":
        i, j = rng.randrange(len(members)), rng.randrange(len(members))
        members[i], members[j] = (members[i][0], members[j][1]), (members[j][0], members[i][1])
        return "zip:swap", _rezip(members)
    if kind == "deflate":
        return "zip:deflate", _rezip(members, zipfile.ZIP_DEFLATED)
    if kind == "empty-member":
        i = rng.randrange(len(members))
        members[i] = (members[i][0], b"")
        return "zip:empty-member", _rezip(members)
    if kind == "truncate-member":
        i = rng.randrange(len(members))
        members[i] = (members[i][0], members[i][1][: rng.randrange(len(members[i][1]) + 1)])
        return "zip:truncate-member", _rezip(members)
    if kind == "extra-member":
        members.insert(rng.randrange(len(members) + 1), (rng.choice(("junk", members[0][0].split("/")[0] + "/data/999")),
                                                         rng.randbytes(rng.choice((0, 10, 1000)))))
        return "zip:extra-member", _rezip(members)
    if kind == "reorder":
        rng.shuffle(members)
        return "zip:reorder", _rezip(members)
    raw = bytearray(b)
    if kind == "eocd":  # end of central directory: counts, sizes, offset
        end = raw.rfind(b"PK\x05\x06")
        if end >= 0:
            off = end + rng.choice((8, 10, 12, 16, 20))
            w = 4 if off - end in (12, 16) else 2
            raw[off:off + w] = rng.choice(INTERESTING[:11]).to_bytes(8, "little")[:w]
        return f"zip:{kind}", bytes(raw)
    sig = b"PK\x01\x02" if kind in ("central", "sizes") else b"PK\x03\x04"
    starts = [i for i in range(len(raw)) if raw.startswith(sig, i)][:200] or [0]
    s = rng.choice(starts)
    if kind == "sizes":  # compressed / uncompressed size of one central entry
        off = s + rng.choice((20, 24))
        raw[off:off + 4] = rng.choice((0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 30)).to_bytes(4, "little")
        return f"zip:{kind}", bytes(raw)
    span = 46 if kind == "central" else 30
    for _ in range(rng.choice((1, 2, 4))):
        raw[s + rng.randrange(4, span)] = rng.randrange(256)
    return f"zip:{kind}", bytes(raw)


# ------------------------------------------------------------------------- checkpoint structures
def structure_checkpoints() -> list[tuple[str, Any]]:
    """Objects ``torch.save`` writes that ``weights_only`` loads but that are no plain state dict."""
    import collections

    import torch

    t = torch.ones(2, 2)
    nan = torch.tensor([1.0, float("nan")])
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
        ("fp8", {"a": torch.zeros(4).to(torch.float8_e4m3fn)}) if hasattr(torch, "float8_e4m3fn") else ("fp8", {}),
        ("sparse", {"a": torch.eye(3).to_sparse()}), ("sparse-csr", {"a": torch.eye(3).to_sparse_csr()}),
        ("meta", {"a": torch.empty(3, device="meta")}), ("noncontig", {"a": torch.ones(4, 4).t()}),
        ("strided-view", {"a": torch.arange(10.0)[::3]}), ("ordered", collections.OrderedDict(a=t)),
        ("module-only", {"module.": t}), ("long-key", {"k" * 100000: t}), ("many-keys", {f"k{i}": torch.ones(1) for i in range(5000)}),
        ("deep", _deep_dict(200, t)), ("bytes-key", {b"a": t}), ("quantized", {"a": torch.quantize_per_tensor(t, 0.1, 0, torch.quint8)}),
    ]
    try:
        out.append(("nested-tensor", {"a": torch.nested.nested_tensor([torch.ones(2), torch.ones(3)])}))
    except Exception:  # noqa: BLE001 - optional
        pass
    return out


def _deep_dict(depth: int, leaf: Any) -> Any:
    for _ in range(depth):
        leaf = {"params": leaf}
    return leaf


# --------------------------------------------------------------------------- manifest mutations
HOSTILE = [None, True, False, 0, -1, 1, 2**63, -(2**63) - 1, 10**30, 1.5, 1e308, -0.0, float("nan"), float("inf"),
           "", "x", "NaN", "inf", "1", "../../etc/passwd", "/abs/path", "\u0000", "\ud800", "é" * 3, "a" * 5000,
           [], {}, [1, 2], [None], {"a": 1}, [[[[]]]], {"name": None}, {"file": "../x"}]
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


def _paths(obj: Any, prefix=()) -> list[tuple]:
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


def _set(obj: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    parent[path[-1]] = value
    return obj


def _delete(obj: Any, path: tuple) -> Any:
    if not path:
        return obj
    parent = obj
    for k in path[:-1]:
        parent = parent[k]
    del parent[path[-1]]
    return obj


def _nested(rng: random.Random, depth: int) -> Any:
    if depth <= 0:
        return rng.choice(HOSTILE[:20])
    inner, shape = _nested(rng, depth - 1), rng.randrange(3)
    return [inner] if shape == 0 else {"k": inner} if shape == 1 else [inner, 1]


def json_mutation(rng: random.Random, manifest: dict) -> tuple[str, bytes]:
    """A damaged manifest.json: structure, hostile values, or text-level damage."""
    m = copy.deepcopy(manifest)
    kind = rng.choice(("delete", "type", "type", "schema_version", "input_shape", "files", "files", "references",
                       "references", "names", "onnx", "backend", "nested", "text-deep", "text-literal", "root",
                       "bytes", "bytes", "multi", "schema", "extra-key", "tolerance"))
    paths = _paths(m)[1:]
    if kind == "delete":
        p = rng.choice(paths)
        _delete(m, p)
        kind += f"[{'.'.join(map(str, p))}]"
    elif kind == "type":
        p = rng.choice(paths)
        _set(m, p, rng.choice(HOSTILE))
        kind += f"[{'.'.join(map(str, p))}]"
    elif kind == "schema_version":
        m["schema_version"] = rng.choice(SCHEMA_VERSIONS)
    elif kind == "schema":
        m["schema"] = rng.choice(["deploy-kit/Manifest", "", None, 1, ["deploy-kit/manifest"], "deploy-kit/manifest\u0000"])
    elif kind == "input_shape":
        m["input_shape"] = copy.deepcopy(rng.choice(SHAPES))
    elif kind == "files":
        files = m.setdefault("files", {})
        action = rng.randrange(5)
        if action == 0:
            files[rng.choice(FILES)] = "0" * 64
        elif action == 1:
            files[rng.choice(list(files) or ["x"])] = rng.choice(HOSTILE)
        elif action == 2:
            m["files"] = {f"f{i}": "0" * 64 for i in range(rng.choice((0, 1, 5000)))}
        elif action == 3:
            k = rng.choice(list(files) or ["x"])
            files[k] = rng.choice(("0" * 64, "g" * 64, "0" * 63, "0" * 65, "A" * 64, files.get(k, "")[::-1]))
        else:
            m["files"] = rng.choice(([], "x", None, {"": ""}, {m["onnx"]: "0" * 64}))
    elif kind == "references":
        refs = rng.choice(REFS)
        m["references"] = copy.deepcopy(refs) if refs is None or rng.random() < 0.5 else {**(m.get("references") or {}), **refs}
    elif kind == "names":
        key = rng.choice(("input_names", "output_names"))
        m[key] = copy.deepcopy(rng.choice(([""], ["output", 5], [[]], [f"o{i}" for i in range(1000)], ["../x"], [None],
                                           ["output", "output"], ["a\u0000"], "output", [])))
    elif kind == "onnx":
        m["onnx"] = rng.choice(("../x.onnx", "/etc/passwd", "", "README.md", "manifest.json", "missing.onnx", ".", 5, None))
    elif kind == "backend":
        m["backend"] = rng.choice(({}, {"name": 5}, {"name": "tensorrt"}, {"name": None}, [], "x", {"name": "a" * 10000}))
    elif kind == "tolerance":
        m["tolerance"] = rng.choice(({"bogus": 1}, {"fp16_min_psnr": "high"}, {"fp32_max_abs": None}, [], "x"))
    elif kind == "nested":
        p = rng.choice(paths)
        _set(m, p, _nested(rng, rng.choice((5, 50, 200))))
        kind += f"[{'.'.join(map(str, p))}]"
    elif kind == "extra-key":
        m[rng.choice(("x", "", "\u0000", "a" * 1000, "__proto__"))] = rng.choice(HOSTILE)
    elif kind == "multi":
        for _ in range(rng.randrange(2, 6)):
            p = rng.choice(_paths(m)[1:] or [("x",)])
            try:
                _set(m, p, rng.choice(HOSTILE))
            except (KeyError, IndexError, TypeError):
                pass
    text = json.dumps(m, indent=rng.choice((None, 2)))  # NaN/Infinity literals where the values are non-finite
    if kind == "text-deep":  # nesting at the text level: RecursionError territory
        depth = rng.choice((500, 900, 950, 970, 980, 990, 1000, 5000, 100000))
        key = rng.choice(("schema", "hparams", "files", "input_shape", "tlc", "x", "references", "model"))
        open_, close = rng.choice((("[", "]"), ('{"a":', "}")))
        text = text[:-1] + f', "{key}": ' + open_ * depth + "1" + close * depth + "}"
    elif kind == "text-literal":
        key = rng.choice(("schema_version", "seed", "build_seconds", "input_shape", "x"))
        lit = rng.choice(("1" + "0" * 5000, "1e999", "-1e999", "NaN", "Infinity", "-Infinity", "0x10", "01", "1.",
                          '"\\ud800"', '"\\u0000"', "true", "null", '"' + "a" * 100000 + '"'))
        text = text[:-1] + f', "{key}": {lit}' + "}"
    elif kind == "root":
        text = rng.choice(("[]", '"x"', "1", "null", "true", "{}", "", " ", "\ufeff" + text, text + "garbage",
                           text + text, '{"schema": "deploy-kit/manifest"}'))
    data = text.encode("utf-8", "surrogatepass")
    if kind == "root" and rng.random() < 0.2:
        data = text.encode(rng.choice(("utf-16", "utf-32", "latin-1")), "replace")
    if kind == "bytes":
        sub, data = byte_mutation(rng, data)
        kind += ":" + sub
    return kind, data


# ------------------------------------------------------------------------------- npz mutations
def npy_header_mutation(rng: random.Random, npz: bytes) -> tuple[str, bytes]:
    """Rewrite one array's .npy header inside a valid zip (huge shapes, object dtype, bad versions)."""
    members = [(i.filename, d) for i, d in _members(npz)]
    i = rng.randrange(len(members))
    name, data = members[i]
    kind = rng.choice(("shape", "shape", "dtype", "fortran", "version", "header-text", "payload"))
    if kind == "shape":
        shape = rng.choice(((10**12,), (1 << 40, 1 << 40), (-1,), (0,), (1, 3, 1 << 20, 1 << 20), (2**63 - 1,),
                            (100000, 100000, 100), (1, 3, 64, 64), (1, 3, 16, 16), ()))
        d = {"descr": "<f4", "fortran_order": False, "shape": shape}
    elif kind == "dtype":
        d = {"descr": rng.choice(("|O", "<f8", "<i8", "|b1", "<c8", "|V16", "<U10", [("a", "<f4")], "?", "<f2")),
             "fortran_order": False, "shape": (1, 3, 32, 32)}
    elif kind == "fortran":
        d = {"descr": "<f4", "fortran_order": True, "shape": (1, 3, 32, 32)}
    else:
        d = None
    if d is not None:
        buf = io.BytesIO()
        try:
            np.lib.format.write_array_header_1_0(buf, d)
        except (ValueError, TypeError):
            buf = io.BytesIO(b"\x93NUMPY\x01\x00" + struct.pack("<H", 32) + b"{'descr': '<f4', 'shape': ()}    ")
        hlen = 10 + struct.unpack("<H", data[8:10])[0] if data[6:7] == b"\x01" else 12 + struct.unpack("<I", data[8:12])[0]
        data = buf.getvalue() + data[hlen:]
    elif kind == "version":
        data = data[:6] + bytes([rng.choice((0, 2, 3, 4, 255)), 0]) + data[8:]
    elif kind == "header-text":
        hlen = struct.unpack("<H", data[8:10])[0]
        repl = rng.choice((b"__import__('os')", b"{'descr': '<f4'}", b"{" * 50 + b"}" * 50, b"[" * 10000,
                           b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 32, 32), 'x': 1}",
                           b"{'descr': '<f4', 'fortran_order': 'no', 'shape': (1, 3, 32, 32)}",
                           b"{'descr': '<f4', 'fortran_order': False, 'shape': [1, 3, 32, 32]}",
                           b"{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,)}", rng.randbytes(30)))
        data = data[:8] + struct.pack("<H", len(repl)) + repl + data[10 + hlen:]
    else:
        sub, payload = byte_mutation(rng, data[128:])
        data = data[:128] + payload
        kind += ":" + sub
    members[i] = (name, data)
    return f"npy:{kind}[{name}]", _rezip(members, zipfile.ZIP_DEFLATED)


def foreign_npz(rng: random.Random, seeds: Seeds) -> tuple[str, bytes]:
    """Something that is not an .npz where reference.npz should be."""
    kind = rng.choice(("npy", "pickle", "text", "onnx", "pth", "empty", "npz-empty", "npz-object", "npz-other-names"))
    buf = io.BytesIO()
    if kind == "npy":
        np.save(buf, np.zeros((1, 3, 32, 32), np.float32))
    elif kind == "pickle":
        import pickle

        buf.write(pickle.dumps({"input_0": [1, 2, 3]}))
    elif kind == "text":
        buf.write(b"input_0,1,2,3\n")
    elif kind == "onnx":
        buf.write(seeds.onnx)
    elif kind == "pth":
        buf.write(seeds.pth["params"])
    elif kind == "npz-empty":
        np.savez(buf)
    elif kind == "npz-object":
        np.savez(buf, input_0=np.array([{"a": 1}], dtype=object), output_0_output=np.array([None], dtype=object))
    elif kind == "npz-other-names":
        np.savez(buf, a=np.zeros(3), b=np.zeros(3))
    return f"foreign:{kind}", buf.getvalue()


# ------------------------------------------------------------------------------------------- runner
class Fuzzer:
    """Generates and runs the cases of one or all targets."""

    def __init__(self, seeds: Seeds, *, base_seed: int = 0, timeout: float = 10.0, save_failures: str | None = None):
        self.seeds = seeds
        self.base_seed = base_seed
        self.timeout = timeout
        self.save_failures = save_failures
        self.dir = os.path.join(seeds.work, "cases")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        # a bundle copy per target that touches bundles (each case rewrites manifest.json / reference.npz)
        self.bundle = os.path.join(self.dir, "b.fp16.bundle")
        shutil.copytree(seeds.bundle, self.bundle)
        self.plan = os.path.join(self.dir, "x.fp16.trt.plan")
        with open(self.plan, "wb") as fh:
            fh.write(b"not an engine")
        self._structures: list[tuple[str, bytes]] | None = None

    # -- case generation (pure functions of (target, seed, index)) -----------------------------------
    def rng(self, target: str, index: int) -> random.Random:
        return random.Random(f"{self.base_seed}:{target}:{index}")

    def structures(self) -> list[tuple[str, bytes]]:
        if self._structures is None:
            import torch

            out = []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                objs = structure_checkpoints()
            for name, obj in objs:
                buf = io.BytesIO()
                try:
                    torch.save(obj, buf)
                except Exception:  # noqa: BLE001 - a type this torch cannot save is not a case
                    continue
                out.append((name, buf.getvalue()))
            self._structures = out
        return self._structures

    def gen_checkpoint(self, index: int) -> tuple[str, bytes]:
        rng = self.rng("checkpoint", index)
        seed_name = rng.choice(sorted(self.seeds.pth))
        b = self.seeds.pth[seed_name]
        r = rng.random()
        if index % 97 == 5 and self.seeds.bomb_pth:
            return "bomb", self.seeds.bomb_pth
        if r < 0.30:
            name, out = byte_mutation(rng, b)
        elif r < 0.80:
            name, out = zip_mutation(rng, b, hint=rng.choice(("data.pkl", "data.pkl", "/data/", "version", "byteorder")))
        elif r < 0.92:
            name, out = self.structures()[index % len(self.structures())]
            name = "structure:" + name
            if rng.random() < 0.3:
                sub, out = zip_mutation(rng, out, hint="data.pkl")
                name += "+" + sub
        else:  # splice two seeds / legacy (non-zip) pickles
            other = self.seeds.pth[rng.choice(sorted(self.seeds.pth))]
            i, j = _pos(rng, b), _pos(rng, other)
            name, out = "splice", b[:i] + other[j:]
            if rng.random() < 0.5:
                import pickle

                name, out = "legacy-pickle", pickle.dumps(rng.choice(({"params": {"a": 1}}, [1, 2], "x", None)), protocol=2)
        return f"{seed_name}:{name}", out

    def gen_onnx(self, index: int) -> tuple[str, bytes]:
        rng = self.rng("onnx", index)
        r = rng.random()
        if r < 0.7:
            return byte_mutation(rng, self.seeds.onnx)
        return self._onnx_metadata(rng)

    def _onnx_metadata(self, rng: random.Random) -> tuple[str, bytes]:
        import onnx

        model = onnx.load_from_string(self.seeds.onnx)
        props = model.metadata_props
        kind = rng.choice(("value", "value", "deep", "huge", "many", "dup", "empty-key", "drop-all", "no-graph"))
        if kind == "value" and len(props):
            p = props[rng.randrange(len(props))]
            p.value = rng.choice(("", "x", "[", "{", "NaN", "1e999", "1" + "0" * 5000, '"\\ud800"', "null", "[1,2",
                                  json.dumps({"a": [None] * 100}), "\u0000", "{\"a\": 1}" * 2, "true", "-0"))
        elif kind == "deep":
            p = props[rng.randrange(len(props))] if len(props) else props.add()
            depth = rng.choice((990, 1000, 5000, 100000))
            p.value = "[" * depth + "]" * depth
        elif kind == "huge":
            e = props.add()
            e.key, e.value = "x", "a" * rng.choice((1 << 20, 8 << 20))
        elif kind == "many":
            for i in range(rng.choice((1000, 20000))):
                e = props.add()
                e.key, e.value = f"k{i}", str(i)
        elif kind == "dup" and len(props):
            e = props.add()
            e.key, e.value = props[0].key, "\"other\""
        elif kind == "empty-key":
            e = props.add()
            e.key, e.value = "", "1"
        elif kind == "drop-all":
            del props[:]
        elif kind == "no-graph":
            model.ClearField("graph")
        out = model.SerializeToString()
        if rng.random() < 0.2:
            sub, out = byte_mutation(rng, out)
            kind += "+" + sub
        return f"meta:{kind}", out

    def gen_manifest(self, index: int) -> tuple[str, bytes]:
        return json_mutation(self.rng("manifest", index), self.seeds.manifest)

    def gen_npz(self, index: int) -> tuple[str, bytes]:
        rng = self.rng("npz", index)
        r = rng.random()
        if index % 97 == 7 and self.seeds.bomb_npz:
            return "bomb", self.seeds.bomb_npz
        if r < 0.35:
            return byte_mutation(rng, self.seeds.npz)
        if r < 0.65:
            return zip_mutation(rng, self.seeds.npz, hint=".npy")
        if r < 0.92:
            return npy_header_mutation(rng, self.seeds.npz)
        return foreign_npz(rng, self.seeds)

    # -- execution -----------------------------------------------------------------------------------
    def call_checkpoint(self, data: bytes) -> None:
        from deploy_kit.models.checkpoint import read_state_dict

        path = os.path.join(self.dir, "case.pth")
        _write(path, data)
        read_state_dict(path)

    def call_onnx(self, data: bytes) -> None:
        from deploy_kit.export import read_metadata
        from deploy_kit.artifact import artifact_metadata

        # the extension varies: onnx.load picks its JSON/text parsers by extension unless told the format
        path = os.path.join(self.dir, "case" + (".onnx", ".json", ".textproto", ".onnxtxt", ".pth", "")[len(data) % 6])
        _write(path, data)
        _all(lambda: read_metadata(path), lambda: artifact_metadata(path))  # read_metadata: bundle/seamcheck/engine too

    def call_manifest(self, data: bytes) -> None:
        from deploy_kit.bundle import open_bundle
        from deploy_kit.manifest import read_manifest
        from deploy_kit.artifact import artifact_metadata

        _write(os.path.join(self.bundle, "manifest.json"), data)
        _write(self.plan + ".json", data)
        _all(lambda: read_manifest(self.plan + ".json"), lambda: artifact_metadata(self.plan),
             lambda: open_bundle(self.bundle).references())

    def call_npz(self, data: bytes) -> None:
        from deploy_kit.bundle import open_bundle
        from deploy_kit.manifest import file_sha256

        ref = os.path.join(self.bundle, "reference.npz")
        _write(ref, data)
        m = copy.deepcopy(self.seeds.manifest)
        m["files"]["reference.npz"] = file_sha256(ref)
        _write(os.path.join(self.bundle, "manifest.json"), json.dumps(m).encode())
        open_bundle(self.bundle).references()

    def reset_bundle(self) -> None:
        for name in ("manifest.json", "reference.npz"):
            shutil.copyfile(os.path.join(self.seeds.bundle, name), os.path.join(self.bundle, name))

    def run(self, target: str, cases: int, start: int = 0, verbose: bool = False) -> Stats:
        gen = getattr(self, f"gen_{target}")
        call = getattr(self, f"call_{target}")
        stats = Stats(target)
        user_error = _user_error()
        self.reset_bundle()
        t0 = time.perf_counter()
        old = signal.signal(signal.SIGALRM, _on_alarm)
        caught = warnings.catch_warnings()
        caught.__enter__()
        warnings.simplefilter("ignore")  # torch/numpy warn about odd pickles and beta layouts
        try:
            for index in range(start, start + cases):
                name, data = gen(index)
                t = time.perf_counter()
                outcome = None
                signal.setitimer(signal.ITIMER_REAL, self.timeout)
                try:
                    call(data)
                    stats.accepted += 1
                    outcome = "accepted"
                except user_error as exc:
                    stats.rejected += 1
                    cause = exc.__cause__ or exc.__context__
                    stats.causes[type(cause).__name__ if cause else type(exc).__name__] += 1
                    outcome = f"rejected: {str(exc)[:200]}"
                    if "\n" in str(exc).strip():
                        stats.failures.append(Failure(target, index, self.base_seed, name, "multi-line message: "
                                                      + repr(str(exc)[:200]), "-"))
                except _Hang:
                    stats.failures.append(Failure(target, index, self.base_seed, name, f"hang (> {self.timeout:g} s)", "-"))
                    outcome = "hang"
                except Exception as exc:  # noqa: BLE001 - this is what we are looking for
                    tb = traceback.extract_tb(exc.__traceback__)
                    frame = tb[-1] if tb else None
                    where = f"{os.path.relpath(frame.filename)}:{frame.lineno}" if frame else "-"
                    ours = [f for f in tb if "deploy_kit" in f.filename]
                    if ours:
                        where += f" (via {os.path.basename(ours[-1].filename)}:{ours[-1].lineno})"
                    msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
                    stats.failures.append(Failure(target, index, self.base_seed, name, f"{type(exc).__name__}: {msg}", where))
                    outcome = "FAILURE"
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
                dt = time.perf_counter() - t
                stats.slowest = max(stats.slowest, dt)
                stats.cases += 1
                if outcome in ("FAILURE", "hang") and self.save_failures:
                    os.makedirs(self.save_failures, exist_ok=True)
                    _write(os.path.join(self.save_failures, f"{target}-{self.base_seed}-{index}.bin"), data)
                if verbose:
                    print(f"  {target}#{index} {name}: {outcome} ({dt:.3f} s)", flush=True)
        finally:
            caught.__exit__(None, None, None)
            signal.signal(signal.SIGALRM, old)
            self.reset_bundle()
        stats.seconds = time.perf_counter() - t0
        return stats


def _all(*calls: Callable[[], Any]) -> None:
    """Run every call; a DeployKitError of any is re-raised at the end (the case counts as rejected)."""
    rejected = None
    for call in calls:
        try:
            call()
        except _user_error() as exc:
            rejected = exc
    if rejected is not None:
        raise rejected


def _on_alarm(signum, frame):
    raise _Hang()


def _user_error():
    from deploy_kit.errors import DeployKitError

    return DeployKitError


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def split_cases(total: int, only: tuple[str, ...] = TARGETS) -> dict[str, int]:
    """``total`` cases shared among ``only`` by :data:`WEIGHTS`."""
    w = sum(WEIGHTS[t] for t in only)
    counts = {t: int(total * WEIGHTS[t] / w) for t in only}
    counts[only[0]] += total - sum(counts.values())
    return counts


def summary(stats: list[Stats], max_failures: int = 60) -> str:
    lines = [s.line() for s in stats]
    total = sum(s.cases for s in stats)
    fails = [f for s in stats for f in s.failures]
    lines.append(f"total      {total:6d} cases  {len(fails)} failures  {sum(s.seconds for s in stats):.1f} s")
    for s in stats:
        if s.causes:
            lines.append(f"  {s.target} rejections by cause: " + ", ".join(f"{k} {v}" for k, v in s.causes.most_common(12)))
    # group failures by (error type, location) so one bug is one line with its first reproducer
    groups: dict[tuple[str, str, str], list[Failure]] = {}
    for f in fails:
        groups.setdefault((f.target, f.error.split(":")[0], f.where), []).append(f)
    for (target, err, where), fs in list(groups.items())[:max_failures]:
        lines.append(f"  FAIL x{len(fs)}: {fs[0].line()}")
    return "\n".join(lines)
