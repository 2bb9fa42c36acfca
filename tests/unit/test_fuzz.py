"""Fuzz the readers of untrusted files: every damaged input ends in success or one DeployKitError line.

Real seeds (a nafnet tiny-notlc checkpoint, ``deploy-kit export ... --fp16 --bundle``) are damaged
deterministically by benchmarks/_fuzz.py (bytes, zip structure, pickle/npy headers behind valid
CRCs, JSON structure, hostile values, deep nesting, zip bombs). ~5 000 cases here; the 10 000+
case run is ``python benchmarks/bench_fuzz.py``. Counts print with ``-s``.
"""

import io
import json
import os
import shutil
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import _fuzz  # noqa: E402

from deploy_kit.bundle import open_bundle  # noqa: E402
from deploy_kit.errors import CheckpointError, UsageError  # noqa: E402
from deploy_kit.manifest import ManifestError, file_sha256, read_manifest  # noqa: E402
from deploy_kit.models.checkpoint import read_state_dict  # noqa: E402
from deploy_kit.artifact import artifact_metadata  # noqa: E402

# sized for ~60 s on 2 cores with the seed export (torch.load is the slow reader: ~9 ms a case)
CASES = {"checkpoint": 1200, "onnx": 1200, "manifest": 1600, "npz": 1000}


@pytest.fixture(scope="module")
def fuzzer(tmp_path_factory):
    seeds = _fuzz.make_seeds(str(tmp_path_factory.mktemp("fuzz")), bomb_mb=128)
    return _fuzz.Fuzzer(seeds, base_seed=0, timeout=5.0)


@pytest.mark.parametrize("target", _fuzz.TARGETS)
def test_reader_survives_mutations(fuzzer, target):
    stats = fuzzer.run(target, CASES[target])
    print("\n" + _fuzz.summary([stats]))
    assert stats.cases == CASES[target]
    assert not stats.failures, f"{len(stats.failures)} of {stats.cases} {target} cases raised something else than " \
                               f"DeployKitError:\n{_fuzz.summary([stats])}"
    assert stats.rejected > stats.cases // 10 and stats.accepted > 0  # the mutations reach both outcomes


def _write(path, data):
    with open(path, "wb") as fh:
        fh.write(data)


# ---- one regression test per reader fix (fast; each was a traceback before) -------------------------
def test_checkpoint_oddities_are_one_line_errors(fuzzer, tmp_path):
    structures = dict(fuzzer.structures())
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


def test_checkpoint_zip_bomb_is_refused_before_torch_inflates_it(fuzzer, tmp_path):
    path = tmp_path / "bomb.pth"
    _write(path, fuzzer.seeds.bomb_pth)
    assert os.path.getsize(path) < 1 << 20
    with pytest.raises(CheckpointError, match=r"inflates to 0\.1 GiB .*zip bomb"):
        read_state_dict(str(path))


def test_onnx_damage_and_deep_metadata(fuzzer, tmp_path):
    import onnx

    path = tmp_path / "x.onnx"
    _write(path, fuzzer.seeds.onnx[:-7])
    with pytest.raises(UsageError, match=r"is not a readable ONNX file \(DecodeError\)"):
        artifact_metadata(str(path))
    with pytest.raises(UsageError, match="not found"):
        artifact_metadata(str(tmp_path / "missing.onnx"))
    model = onnx.load_from_string(fuzzer.seeds.onnx)
    entry = model.metadata_props.add()
    entry.key, entry.value = "deep", "[" * 100000 + "]" * 100000
    _write(path, model.SerializeToString())
    assert artifact_metadata(str(path))["deep"].startswith("[[[")  # not JSON it can decode: kept as text


@pytest.fixture
def bundle(fuzzer, tmp_path):
    out = tmp_path / "b.bundle"
    shutil.copytree(fuzzer.seeds.bundle, out)
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


def test_npz_damage_is_one_line(fuzzer, bundle):
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.zeros((1, 3, 32, 32), np.float32))  # a bare .npy loads as an array, not an archive
    _replace_npz(bundle, buf.getvalue())
    with pytest.raises(ManifestError, match=r"reference data unreadable \(ValueError\)"):
        open_bundle(str(bundle)).references()
    _replace_npz(bundle, fuzzer.seeds.npz[:-30])
    with pytest.raises(ManifestError, match=r"reference data unreadable \(BadZipFile\)"):
        open_bundle(str(bundle)).references()


def test_npz_huge_array_claim_allocates_nothing(fuzzer, bundle):
    import random

    for i in range(200):  # the shape mutations that claim (1e12,) and more
        name, data = _fuzz.npy_header_mutation(random.Random(i), fuzzer.seeds.npz)
        if "shape" in name and not name.startswith("npy:shape[output"):
            _replace_npz(bundle, data)
            try:
                open_bundle(str(bundle)).references()
            except ManifestError:
                pass


def test_npz_bomb_past_the_cap_is_refused(fuzzer, bundle, monkeypatch):
    import deploy_kit.bundle as bmod

    monkeypatch.setattr(bmod, "_MAX_REFERENCE_BYTES", 64 << 20)
    _replace_npz(bundle, fuzzer.seeds.bomb_npz)
    with pytest.raises(ManifestError, match="inflates to more than 0 GiB"):
        open_bundle(str(bundle)).references()
