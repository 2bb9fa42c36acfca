"""Damaged inputs to the readers of untrusted files end in success or one DeployKitError line.

Real seeds (a nafnet tiny-notlc checkpoint, ``deploy-kit export ... --fp16 --bundle``) are damaged by
the hypothesis strategies of benchmarks/_fuzz.py (bytes, zip structure, pickle/npy headers behind
valid CRCs, JSON structure, hostile values, deep nesting, zip bombs), with a fixed seed: a small
profile here, the 10 000-case run is ``python benchmarks/bench_fuzz.py``. Counts print with ``-s``.
"""

import io
import json
import os
import shutil
import sys

import pytest

pytest.importorskip("hypothesis", reason="hypothesis is not installed (pip install 'deploy-kit[test]')")

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import _fuzz  # noqa: E402

from deploy_kit.artifact import artifact_metadata  # noqa: E402
from deploy_kit.bundle import open_bundle  # noqa: E402
from deploy_kit.errors import CheckpointError, UsageError  # noqa: E402
from deploy_kit.manifest import ManifestError, file_sha256, read_manifest  # noqa: E402
from deploy_kit.models.checkpoint import read_state_dict  # noqa: E402

# the small profile: 3 000 cases, ~15 s on 2 cores after the seed export (torch.load is the slow reader)
CASES = {"checkpoint": 700, "onnx": 700, "manifest": 1000, "npz": 600}


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    return _fuzz.make_seeds(str(tmp_path_factory.mktemp("fuzz")), bomb_mb=128)


@pytest.mark.parametrize("target", _fuzz.TARGETS)
def test_damaged_input_is_one_line(seeds, target):
    stats = _fuzz.run(seeds, target, CASES[target], seed=0, timeout=5.0)  # raises on a foreign exception
    print(f"\n{stats.line()}\n  rejections by cause: {dict(stats.causes.most_common(8))}")
    assert stats.cases == CASES[target]
    assert stats.rejected > stats.cases // 10 and stats.accepted > 0  # the damage reaches both outcomes


def _write(path, data):
    with open(path, "wb") as fh:
        fh.write(data)


# ---- one regression test per reader fix (fast; each was a traceback before) -------------------------
def test_checkpoint_oddities_are_one_line_errors(seeds, tmp_path):
    structures = {c.label: c.data for c in seeds.structures}
    for name, match in (("int-keys", "holds no state dict"), ("bytes-key", "holds no state dict"),
                        ("sparse", "is sparse"), ("sparse-csr", "is sparse"), ("meta", "is meta"),
                        ("nested-tensor", "is nested"), ("complex-nan", "NaN/Inf")):
        if name not in structures:
            continue
        path = tmp_path / f"{name}.pth"
        _write(path, structures[name])
        with pytest.raises(CheckpointError, match=match):
            read_state_dict(str(path))
    if "fp8" in structures:  # float8 has no isfinite kernel: checked through float32
        _write(tmp_path / "fp8.pth", structures["fp8"])
        assert list(read_state_dict(str(tmp_path / "fp8.pth"))) == ["a"]


def test_checkpoint_zip_bomb_is_refused_before_torch_inflates_it(seeds, tmp_path):
    path = tmp_path / "bomb.pth"
    _write(path, seeds.bomb_pth)
    assert os.path.getsize(path) < 1 << 20
    with pytest.raises(CheckpointError, match=r"inflates to 0\.1 GiB .*zip bomb"):
        read_state_dict(str(path))


def test_onnx_damage_and_deep_metadata(seeds, tmp_path):
    import onnx

    path = tmp_path / "x.onnx"
    _write(path, seeds.onnx[:-7])
    with pytest.raises(UsageError, match=r"is not a readable ONNX file \(DecodeError\)"):
        artifact_metadata(str(path))
    with pytest.raises(UsageError, match="not found"):
        artifact_metadata(str(tmp_path / "missing.onnx"))
    model = onnx.load_from_string(seeds.onnx)
    entry = model.metadata_props.add()
    entry.key, entry.value = "deep", "[" * 100000 + "]" * 100000
    _write(path, model.SerializeToString())
    assert artifact_metadata(str(path))["deep"].startswith("[[[")  # not JSON it can decode: kept as text


@pytest.fixture
def bundle(seeds, tmp_path):
    out = tmp_path / "b.bundle"
    shutil.copytree(seeds.bundle, out)
    return out


def _edit(bundle, **changes):
    m = json.loads((bundle / "manifest.json").read_text())
    m.update(changes)
    (bundle / "manifest.json").write_text(json.dumps(m))
    return m


@pytest.mark.parametrize("refs, match", [
    ({"file": "../../outside.npz", "count": 1}, "references file '../../outside.npz' is not among the bundle's files"),
    ({"file": None, "count": 1}, "references file 'None' is not among"),
    ({"file": "reference.npz", "count": [1]}, r"references count '\[1\]' is not an integer"),
    ({"file": "reference.npz", "count": float("inf")}, "references count 'inf' is not an integer"),
])
def test_bundle_references_entry_is_checked(bundle, refs, match):
    _edit(bundle, references=refs)
    with pytest.raises(ManifestError, match=match):
        open_bundle(str(bundle)).references()


def test_manifest_schema_version_must_be_positive(bundle):
    _edit(bundle, schema_version=0)
    with pytest.raises(ManifestError, match="no valid schema_version"):
        read_manifest(str(bundle / "manifest.json"))


def _replace_npz(bundle, data):
    _write(bundle / "reference.npz", data)
    m = json.loads((bundle / "manifest.json").read_text())
    m["files"]["reference.npz"] = file_sha256(str(bundle / "reference.npz"))
    (bundle / "manifest.json").write_text(json.dumps(m))


def test_npz_damage_is_one_line(seeds, bundle):
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 3, 32, 32), np.float32))  # a bare .npy loads as an array, not an archive
    _replace_npz(bundle, buf.getvalue())
    with pytest.raises(ManifestError, match=r"reference data unreadable \(ValueError\)"):
        open_bundle(str(bundle)).references()
    _replace_npz(bundle, seeds.npz[:-30])
    with pytest.raises(ManifestError, match=r"reference data unreadable \(BadZipFile\)"):
        open_bundle(str(bundle)).references()


def test_npz_member_flagged_encrypted_is_one_line(seeds, bundle):
    """zipfile raises RuntimeError ("password required") for a member whose flag bit 0 says encrypted."""
    raw = bytearray(seeds.npz)
    central = raw.find(b"PK\x01\x02")
    raw[central + 8] |= 1  # general purpose flag of the first central directory entry
    _replace_npz(bundle, bytes(raw))
    with pytest.raises(ManifestError, match=r"reference data unreadable \(RuntimeError\)"):
        open_bundle(str(bundle)).references()


@pytest.mark.parametrize("shape", _fuzz.HUGE_SHAPES)
def test_npz_huge_array_claim_allocates_nothing(seeds, bundle, shape):
    header = _fuzz._npy_header({"descr": "<f4", "fortran_order": False, "shape": shape})
    _replace_npz(bundle, _fuzz.with_npy_header(seeds.npz, "input_0.npy", header))
    with pytest.raises(ManifestError, match=r"reference data unreadable \(ValueError\)"):
        open_bundle(str(bundle)).references()


def test_npz_bomb_past_the_cap_is_refused(seeds, bundle, monkeypatch):
    import deploy_kit.bundle as bmod

    monkeypatch.setattr(bmod, "_MAX_REFERENCE_BYTES", 64 << 20)
    _replace_npz(bundle, seeds.bomb_npz)
    with pytest.raises(ManifestError, match="inflates to more than 0 GiB"):
        open_bundle(str(bundle)).references()
