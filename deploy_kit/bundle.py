"""The device bundle: what travels to the Jetson (or GPU server) to build, prove and run an engine.

A TensorRT engine is not portable, so a bundle carries the graph and the proof instead::

    <stem>.<precision>.bundle/
      manifest.json         one manifest (deploy_kit/manifest.py): model, input conventions, TLC,
                            precision, tolerances, degradation, the graph's I/O (graph_io), the
                            checkpoint's file name and sha256, sha256 of every file below
      <stem>.<precision>.onnx   the graph to build on the device (FP16 casts or INT8 Q/DQ)
      reference.npz         reference inputs and their PyTorch FP32 outputs (the graph's full
                            input shape (N, C, H, W): a batched graph stores batches)
      build.sh              trtexec lines: TensorRT 10 (JetPack 6/7) and 11, with/without DLA
      README.md             the four device steps
      int8/                 INT8 only: the FP32 graph + TensorRT <= 10 implicit-INT8 calibration cache

This module is the READER, in the device half: :func:`open_bundle` and everything the device does with
a bundle need only numpy (and TensorRT or ONNX Runtime to run it). Writing one needs the build
machine (onnx, the PyTorch reference): :mod:`deploy_kit.bundle_writer`.
"""

from __future__ import annotations

import math
import os
import tokenize
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from .manifest import BUNDLE_MANIFEST, Manifest, ManifestError, check_files, read_manifest, read_typed

MANIFEST = BUNDLE_MANIFEST
REFERENCE = "reference.npz"
_MAX_REFERENCE_BYTES = 2 << 30  # reference.npz, inflated (a 2048x2048 export's is ~200 MB)


@dataclass
class Bundle:
    """An opened, checked bundle (torch-free).

    Attributes:
        path: the bundle folder.
        manifest: its manifest.json as decoded (every field).
        typed: the typed view of the fields consumers read (:class:`deploy_kit.manifest.Manifest`).
    """

    path: str
    manifest: dict[str, Any]
    typed: Manifest

    @property
    def onnx(self) -> str:
        return os.path.join(self.path, self.manifest["onnx"])

    def references(self) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
        """(inputs, reference outputs per input in ``output_names`` order) from ``reference.npz``."""
        refs = self.manifest.get("references") or {}
        name, n = refs.get("file", REFERENCE), refs.get("count", 0)
        where = os.path.join(self.path, MANIFEST)
        if not isinstance(name, str) or name not in self.manifest.get("files", {}):
            # only a file the manifest lists (a plain relative name, sha256-checked) is read
            raise ManifestError(f"{where}: references file {str(name)[:60]!r} is not among the bundle's files; "
                                "copy the bundle again")
        if not isinstance(n, int) or isinstance(n, bool):
            raise ManifestError(f"{where}: references count {str(n)[:30]!r} is not an integer; copy the bundle again")
        path = os.path.join(self.path, name)
        names = self.typed.output_names

        def array(data, key: str) -> np.ndarray:
            # the .npy header must not claim more than its member holds (else numpy allocates the claim first)
            info = data.zip.getinfo(key + ".npy")
            with data.zip.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                               (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                if read_header is None:
                    raise ValueError(f"npy version {version}")
                shape, _, dtype = read_header(fh)
                if fh.tell() + math.prod(shape) * dtype.itemsize > info.file_size:
                    raise ValueError("array larger than its data")
            return np.asarray(data[key], np.float32)

        try:
            data = np.load(path, allow_pickle=False)
            if not isinstance(data, np.lib.npyio.NpzFile):  # a bare .npy loads as an array
                raise ValueError("not an .npz archive")
            with data:
                if sum(i.file_size for i in data.zip.infolist()) > _MAX_REFERENCE_BYTES:
                    raise ManifestError(f"{path} inflates to more than {_MAX_REFERENCE_BYTES >> 30} GiB (a zip bomb or "
                                        "a damaged file); copy the bundle again")
                inputs = [array(data, f"input_{i}") for i in range(n)]
                outputs = [[array(data, f"output_{i}_{name}") for name in names] for i in range(n)]
        except (OSError, KeyError, ValueError, TypeError, EOFError, NotImplementedError, zipfile.BadZipFile, zlib.error,
                tokenize.TokenError, RuntimeError) as exc:  # what numpy/zipfile raise for a damaged archive or .npy
            # header; RuntimeError: zipfile's "is encrypted, password required" for a member whose flag bit says so
            raise ManifestError(f"{path}: reference data unreadable ({type(exc).__name__}); copy the bundle again") from None
        if not inputs:
            raise ManifestError(f"{self.path}: the bundle holds no reference inputs")
        return inputs, outputs

    def plans(self) -> list[str]:
        """Engines built into this bundle (``deploy-kit build BUNDLE``), newest first."""
        found = [os.path.join(self.path, f) for f in os.listdir(self.path) if f.endswith(".plan")]
        return sorted(found, key=os.path.getmtime, reverse=True)

    def engines(self) -> list[tuple[str, str]]:
        """(plan path, backend name from its manifest) for each built engine that has one, newest first."""
        found = [(p, read_typed(p + ".json").backend) for p in self.plans() if os.path.isfile(p + ".json")]
        return [(p, name) for p, name in found if name is not None]


def open_bundle(path: str, *, check: bool = True) -> Bundle:
    """Open a bundle directory (or its manifest.json), validate the manifest and every file's sha256.

    Raises:
        ManifestError: not a bundle, newer schema, a missing or changed file (one line).
    """
    directory = os.path.dirname(os.path.abspath(path)) if os.path.basename(path) == MANIFEST else path
    if not os.path.isdir(directory) or not os.path.isfile(os.path.join(directory, MANIFEST)):
        raise ManifestError(f"{path} is not a deploy-kit bundle (no {MANIFEST}); make one with 'deploy-kit bundle ARTIFACT'")
    where = os.path.join(directory, MANIFEST)
    manifest = read_manifest(where)
    if "files" not in manifest or manifest.get("onnx") not in manifest["files"]:
        raise ManifestError(f"{where} lists no graph among its files; it is not a bundle manifest")
    typed = Manifest.from_dict(manifest, where)
    if check:
        check_files(manifest, directory, where)
    return Bundle(directory, manifest, typed)
