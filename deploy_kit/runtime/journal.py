"""The journal of a ``deploy-kit run``: what is done in an output folder, so a stopped run resumes.

``run`` keeps ``.deploy-kit-journal.jsonl`` in its ``--out`` folder: append-only JSON lines, one
object per line (docs/jobs.md shows them):

* ``{"t": "journal", "v": 1}`` opens the file;
* ``{"t": "fingerprint", "key": K, "fingerprint": {...}}``, once per distinct fingerprint: what makes an
  output what it is (:func:`fingerprint`: the bundle's or plan's sha256, the backend, device and
  artifact that ran it, and every option that changes the output's bytes); ``K`` is its sha256;
* ``{"t": "done", ...}``, one per committed output: the input (absolute path, content sha256, and its
  size, mtime and inode when hashed), the output (file name, sha256, size, mtime, inode) and the
  fingerprint key it was made with;
* ``{"t": "seen", ...}``: a done output found again with the same bytes under a new size/mtime/inode
  (the folder was copied, an input moved or touched): the record takes the new stat, so the next run
  does not hash those files again. Not a restoration.

An output is committed in this order (:meth:`Journal.commit`): the worker writes it whole to its
partial path (``.deploy-kit-partial/NAME`` in the output folder, written atomically itself); the
driver fsyncs it, hashes it, appends its record and fsyncs the journal, then renames the partial onto
``NAME``. A kill at any moment (SIGKILL included) leaves either no record (the partial, if any, is a
stray: the next open removes it and the input is restored again) or a record whose partial is still
there (the next open finishes the rename) or a finished output. So outputs in the folder are always
complete, and a committed output is never restored again unless what made it changed.

What the next run redoes (:meth:`Journal.plan`), each kind said in one note line:
another fingerprint (bundle, backend/engine, or an option: "bundle changed since the journal:
redoing 12 outputs"), another input content (sha256), an output that is missing or was modified
(size or sha256), or everything with ``force``. To keep a resume of a large library cheap, a file is
hashed again only when its size, mtime or inode differ from what the record saw (the rule ``make``
and ``rsync`` use: a file rewritten in place keeping its size and mtime to the nanosecond is taken as
unchanged; ``--force`` redoes all).

One run per output folder at a time: the journal is locked (``flock``, released by the kernel when
the process ends, even by SIGKILL); a second run on the same folder stops at once with one line.
A journal line cut short by a kill (the last one) is dropped with a note; other unreadable lines are
skipped with a note (their outputs are restored again), never a crash.

Only the driver (the ``run`` process) opens the journal, commits and renames; workers (threads, Ray
actors) only write partial paths.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from .. import __version__
from ..errors import DeployKitError, UsageError
from ..manifest import BUNDLE_MANIFEST, file_sha256, read_manifest, target_kind
from .video import is_video_path

JOURNAL_NAME = ".deploy-kit-journal.jsonl"
PARTIAL_DIR = ".deploy-kit-partial"
VERSION = 1
# options that change only a video's bytes: changing one redoes the videos, not the images
VIDEO_OPTIONS = ("codec", "crf", "preset")
# fingerprint fields that say where, not what: not part of the key (moving the bundle folder redoes nothing)
_INFO_FIELDS = ("target", "deploy_kit")
_HASH_THREADS = 4  # hashlib releases the GIL on large buffers: a few threads keep a disk (or NFS) busy


class JournalError(DeployKitError):
    """The journal cannot be used: another run holds it, it was written by a newer deploy-kit, or it
    cannot be written (disk full, permissions)."""


# ----------------------------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class JobOptions:
    """What ``deploy-kit run`` was asked (workers, e.g. Ray actors, rebuild their Restorer from it:
    ``Restorer(target, backend, overlap=overlap, context=context)``).

    Attributes:
        target: the bundle folder or ``.plan`` (its path on the machine that runs it).
        backend: ``auto`` or a backend name.
        overlap: tile overlap in pixels, or None for the runtime's default.
        context: ``tile``, ``sync`` or ``sync:N``.
        codec, crf, preset: the videos' encoder, quality and speed preset (None: the encoder's default).
        max_pixels: images whose header claims more pixels are refused (None: Pillow's limit).
        force: ignore the journal and restore everything.
        precision: the inference precision asked of a CPU runner that takes one (OpenVINO: ``fp32``,
            ``bf16``, ...), or None for its default; needs a named ``backend``.
    """

    target: str
    backend: str = "auto"
    overlap: int | None = None
    context: str = "tile"
    codec: str = "libx264"
    crf: int | None = 18
    preset: str | None = None
    max_pixels: int | None = None
    force: bool = False
    precision: str | None = None


@dataclass
class JobResult:
    """What a job did in this run.

    Attributes:
        written: output paths committed in this run.
        skipped_done: inputs whose outputs were already done (the journal).
        failed: one line per input that could not be restored (the job went on).
        pixels: output pixels of the images written.
        frames: video frames written.
        seconds: wall-clock seconds of the work (not of the planning).
        per_node: Ray node -> {"items": n, "seconds": s}; {} for a local run.
    """

    written: list[str] = field(default_factory=list)
    skipped_done: int = 0
    failed: list[str] = field(default_factory=list)
    pixels: int = 0
    frames: int = 0
    seconds: float = 0.0
    per_node: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------- fingerprint
def fingerprint(target: str, runner_name: str, options: Mapping[str, Any], *, runner: Any = None) -> dict:
    """What makes an output what it is: the target's content, what runs it, and the options that
    change output bytes.

    Args:
        target: the bundle folder (or its manifest.json) or the ``.plan`` that runs.
        runner_name: the backend that runs it (``onnxruntime``, ``tensorrt``, ...; on Ray, what was asked).
        options: every option that changes output bytes: ``overlap`` (resolved), ``context``, and the
            videos' ``codec``, ``crf``, ``preset`` (:data:`VIDEO_OPTIONS`).
        runner: the opened runner, when there is one: its device (CPU/CUDA) and the file it runs
            (a bundle's graph, or an engine built into it) are part of the identity.

    Returns:
        A JSON-serialisable dict (stored in the journal; :meth:`Journal.key` hashes it).
    """
    path = os.path.abspath(target)
    fp: dict[str, Any] = {"target": path}
    listed: dict = {}
    if target_kind(target) == "bundle":
        folder = path if os.path.isdir(path) else os.path.dirname(path)
        manifest_path = os.path.join(folder, BUNDLE_MANIFEST)
        fp["target_sha256"] = file_sha256(manifest_path)  # it holds the sha256 of every file of the bundle
        listed = read_manifest(manifest_path).get("files", {})
    else:
        fp["target_sha256"] = file_sha256(path)
    fp["backend"] = runner_name
    artifact = getattr(runner, "path", None) if runner is not None else None
    if isinstance(artifact, str) and os.path.isfile(artifact):
        name = os.path.basename(artifact)
        fp["device"] = str(getattr(runner, "device", "") or "")
        fp["artifact"] = name
        # a graph of the bundle is covered by its manifest; an engine built into it later is hashed here
        fp["artifact_sha256"] = listed.get(name) or (fp["target_sha256"] if os.path.abspath(artifact) == path
                                                     else file_sha256(artifact))
    fp["options"] = {k: options[k] for k in sorted(options)}
    fp["deploy_kit"] = __version__  # for the reader; an upgrade redoes nothing (use --force)
    return fp


def _key_of(fp: Mapping[str, Any], video: bool) -> str:
    kept = {k: v for k, v in fp.items() if k not in _INFO_FIELDS}
    kept["options"] = {k: v for k, v in fp.get("options", {}).items() if video or k not in VIDEO_OPTIONS}
    kept["kind"] = "video" if video else "image"
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:32]


def check_unique_outputs(files: Iterable[str]) -> None:
    """Each output name (the input's file name) comes from one input.

    Raises:
        UsageError: two inputs would write the same output (one line naming both).
    """
    seen: dict[str, str] = {}
    for f in files:
        name = os.path.basename(f)
        if name in seen and os.path.abspath(seen[name]) != os.path.abspath(f):
            raise UsageError(f"{seen[name]} and {f} would both be written to {name} in --out; "
                             "run them into separate --out folders")
        seen[name] = f


def input_fault(exc: BaseException, src: str) -> bool:
    """Whether a ValueError of :func:`~deploy_kit.runtime.video.transcode` (or ``probe_video``) is the
    input's own fault (unreadable, truncated, corrupt, not a video): reported for that file while the
    job goes on. Its messages about the input start with the input's path (deploy_kit/runtime/video.py);
    the others are about the options or the output (a bad --codec), which stop the job (exit 2)."""
    return isinstance(exc, ValueError) and str(exc).startswith(f"{os.fspath(src)}:")


# ----------------------------------------------------------------------------------------------- test hook
_KILL_COUNTS: Counter = Counter()


def kill_point(point: str) -> None:
    """TEST HOOK (tests/integration/test_resume.py): with ``DEPLOY_KIT_TEST_KILL=POINT=N`` in the
    environment, the process SIGKILLs itself the Nth time it reaches ``point``, so a test can stop a
    run at an exact moment (``before-record``, ``after-record``, ``after-rename``, ``video-frame``).
    Unset (as always outside that test) it does nothing."""
    spec = os.environ.get("DEPLOY_KIT_TEST_KILL")
    if not spec:
        return
    name, _, count = spec.partition("=")
    if name != point:
        return
    _KILL_COUNTS[point] += 1
    if _KILL_COUNTS[point] >= int(count or 1):
        os.kill(os.getpid(), getattr(signal, "SIGKILL", signal.SIGTERM))


# ----------------------------------------------------------------------------------------------- journal
def _stat(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class _Done:
    """One committed output (a "done" line), kept compact: a journal may hold a million of them."""

    __slots__ = ("input", "input_sha256", "input_stat", "output_sha256", "output_size", "output_stat", "key")

    def __init__(self, rec: Mapping[str, Any]):
        self.input = str(rec["input"])
        self.input_sha256 = str(rec["input_sha256"])
        self.input_stat = tuple(rec["input_stat"])
        self.output_sha256 = str(rec["output_sha256"])
        self.output_size = int(rec["output_size"])
        self.output_stat = tuple(rec["output_stat"])
        self.key = sys.intern(str(rec["key"]))  # one string per fingerprint, not per record


def _lock(fd: int) -> bool:
    """Take the journal's exclusive lock without waiting; True when taken (or when this platform has no
    ``fcntl``, e.g. Windows, where two runs are not kept apart: docs/jobs.md)."""
    try:
        import fcntl
    except ImportError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    return True


def _fsync_dir(path: str) -> None:
    """Make the renames in ``path`` durable (power loss); not possible on every platform."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class Journal:
    """The journal of one output folder, opened by the driver of a run (:meth:`open`).

    Attributes:
        out_dir: the output folder.
        path: the journal file.
        notes: what opening it found and did (one line each), for the user.
    """

    def __init__(self, out_dir: str, fp: Mapping[str, Any], fd: int, force: bool):
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, JOURNAL_NAME)
        self.partial_dir = os.path.join(out_dir, PARTIAL_DIR)
        self.fingerprint = dict(fp)
        self.force = force
        self.notes: list[str] = []
        self._fd = fd
        self._keys = {False: _key_of(fp, False), True: _key_of(fp, True)}
        self._fingerprints: dict[str, dict] = {}
        self._done: dict[str, _Done] = {}  # output name -> its last record
        self._sha: dict[str, str] = {}  # this run's input hashes (absolute path -> sha256)
        self._stat: dict[str, list[int]] = {}  # the input's stat when it was hashed
        self._seen: list[dict] = []  # "seen" lines to append at the end of plan()

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, out_dir: str, fingerprint: Mapping[str, Any], *, force: bool = False) -> "Journal":
        """Open (or start) the journal of ``out_dir``, lock it, and recover from a stopped run.

        Recovery: a partial whose record is in the journal (the run stopped between the record and the
        rename) is renamed into place; any other partial is removed.

        Args:
            out_dir: the output folder (created if missing).
            fingerprint: this run's :func:`fingerprint`.
            force: start the journal afresh (its records are dropped; the outputs are all restored again).

        Returns:
            The open journal (close it, or use it as a context manager).

        Raises:
            JournalError: another run holds this folder; a journal of a newer format; it cannot be written.
        """
        os.makedirs(out_dir, exist_ok=True)
        path = os.path.join(out_dir, JOURNAL_NAME)
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise JournalError(f"cannot open the journal {path}: {exc.strerror or exc}") from None
        if not _lock(fd):
            os.close(fd)
            raise JournalError(f"{out_dir} is in use by another deploy-kit run (its journal {JOURNAL_NAME} is locked); "
                               "wait for it to finish or choose another --out")
        journal = cls(out_dir, fingerprint, fd, force)
        try:
            journal._read()
            os.makedirs(journal.partial_dir, exist_ok=True)
            journal._recover()
            if force:
                os.ftruncate(fd, 0)
                journal._done.clear()
                journal._fingerprints.clear()
            if os.fstat(fd).st_size == 0:
                journal._append({"t": "journal", "v": VERSION})
            for video in (False, True):
                key = journal._keys[video]
                if key not in journal._fingerprints:
                    fp = {k: v for k, v in fingerprint.items()}
                    if not video:
                        fp["options"] = {k: v for k, v in fp.get("options", {}).items() if k not in VIDEO_OPTIONS}
                    journal._append({"t": "fingerprint", "key": key, "kind": "video" if video else "image",
                                     "fingerprint": fp})
                    journal._fingerprints[key] = fp
        except BaseException:
            journal.close()
            raise
        return journal

    def _read(self) -> None:
        bad = 0
        with open(self.path, "rb") as fh:  # line by line: a journal of a million outputs is ~600 MB
            for line in fh:
                if not line.endswith(b"\n"):  # a run was killed while appending it: drop the cut line
                    os.ftruncate(self._fd, fh.tell() - len(line))
                    self.notes.append("journal: dropped its last line, cut short when a run was stopped while writing it")
                    break
                bad += self._read_line(line)
        if bad:
            self.notes.append(f"journal: skipped {bad} unreadable line(s); the outputs they recorded are restored again")

    def _read_line(self, line: bytes) -> int:
        """Take one line in; 1 when it cannot be read, else 0."""
        if not line.strip():
            return 0
        try:
            rec = json.loads(line)
            kind = rec.get("t")
            if kind == "journal":
                if int(rec.get("v", 0)) > VERSION:
                    raise JournalError(f"{self.path} was written by a newer deploy-kit (journal version {rec['v']}); "
                                       "upgrade deploy-kit, or use --force to start it afresh")
            elif kind == "fingerprint":
                self._fingerprints[str(rec["key"])] = dict(rec["fingerprint"])
            elif kind == "done":
                self._done[os.path.basename(str(rec["output"]))] = _Done(rec)
            elif kind == "seen":
                self._apply_seen(rec)
            else:
                return 1
        except (ValueError, KeyError, TypeError, AttributeError):
            return 1
        return 0

    def _recover(self) -> None:
        completed = removed = 0
        for name in sorted(os.listdir(self.partial_dir)):
            p = os.path.join(self.partial_dir, name)
            rec = self._done.get(name)
            if rec is not None and os.path.isfile(p) and not os.path.islink(p):
                st = os.stat(p)
                if st.st_size == rec.output_size and file_sha256(p) == rec.output_sha256:
                    os.replace(p, os.path.join(self.out_dir, name))  # the commit the stopped run did not finish
                    completed += 1
                    continue
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p, ignore_errors=True)
            else:
                os.remove(p)
            removed += 1
        if completed:
            _fsync_dir(self.out_dir)
            self.notes.append(f"journal: finished {completed} commit(s) that a stopped run had recorded but not renamed")
        if removed:
            self.notes.append(f"journal: removed {removed} unfinished partial output(s) of a stopped run")

    def _apply_seen(self, rec: Mapping[str, Any]) -> None:
        """A "seen" line: a done output found with the same bytes under a new stat (its input or output
        copied, moved or touched); the record takes the new stat (and input path), not a new restoration."""
        done = self._done.get(os.path.basename(str(rec["output"])))
        if done is not None:
            done.input, done.input_stat, done.output_stat = str(rec["input"]), tuple(rec["input_stat"]), tuple(rec["output_stat"])

    def _append_many(self, recs: list[Mapping[str, Any]]) -> None:
        self._append_lines(b"".join((json.dumps(r, sort_keys=True, separators=(",", ":")) + "\n").encode() for r in recs))

    def _append(self, rec: Mapping[str, Any]) -> None:
        self._append_lines((json.dumps(rec, sort_keys=True, separators=(",", ":")) + "\n").encode())

    def _append_lines(self, line: bytes) -> None:
        try:
            view = memoryview(line)
            while view:  # a regular file takes it all at once, short of a full disk; the loop is for that case
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as exc:
            raise JournalError(f"cannot write the journal {self.path}: {getattr(exc, 'strerror', None) or exc}") from None

    # ------------------------------------------------------------------ paths and hashes
    def output_path(self, src: str) -> str:
        """Where ``src``'s output goes: ``out_dir/basename(src)``."""
        return os.path.join(self.out_dir, os.path.basename(src))

    def partial_path(self, src: str) -> str:
        """Where a worker writes ``src``'s output before it is committed: ``out_dir/.deploy-kit-partial/
        basename(src)`` (same folder tree, so the commit is one rename; same extension, so the writer
        picks the same format)."""
        return os.path.join(self.partial_dir, os.path.basename(src))

    def key(self, src: str) -> str:
        """The fingerprint key of ``src``'s output (images ignore the video options)."""
        return self._keys[is_video_path(src)]

    def sha256(self, src: str) -> str:
        """The sha256 of ``src``'s content, hashed once per run (cached)."""
        a = os.path.abspath(src)
        if a not in self._sha:
            st = os.stat(a)
            self._sha[a], self._stat[a] = file_sha256(a), _stat(st)
        return self._sha[a]

    def _hash_inputs(self, files: list[str]) -> None:
        """Hash the inputs this run has not: a record's hash is reused when the input is the same path
        with the same size, mtime and inode as when it was hashed."""
        need = []
        for f in files:
            a = os.path.abspath(f)
            if a in self._sha:
                continue
            try:
                st = _stat(os.stat(a))
            except OSError:  # gone or unreadable: left to do, and the restore reports it for this file
                continue
            rec = self._done.get(os.path.basename(f))
            if rec is not None and rec.input == a and list(rec.input_stat) == st:
                self._sha[a], self._stat[a] = rec.input_sha256, st
            else:
                need.append(a)
        if need:
            with ThreadPoolExecutor(max_workers=min(_HASH_THREADS, len(need))) as pool:
                for a, found in zip(need, pool.map(_hash_stat, need)):
                    if found is not None:
                        self._sha[a], self._stat[a] = found

    # ------------------------------------------------------------------ planning
    def plan(self, files: list[str]) -> tuple[list[str], list[str], list[str]]:
        """Which inputs are done and which are to do, and why.

        Args:
            files: the inputs, in order.

        Returns:
            (todo, done, notes): inputs to restore and inputs whose output is done (both in input
            order), and one note line per kind of redo (after the notes of :meth:`open`).
        """
        notes = list(self.notes)
        if self.force:
            notes.append(f"--force: the journal is ignored; restoring all {len(files)} inputs")
            return list(files), [], notes
        self._hash_inputs(files)
        todo: list[str] = []
        done: list[str] = []
        why: dict[str, list[str]] = {}
        for f in files:
            reason = self._why_redo(f)
            if reason is None:
                done.append(f)
            else:
                todo.append(f)
                if reason:
                    why.setdefault(reason, []).append(os.path.basename(f))
        if self._seen:
            self._append_many(self._seen)
            for rec in self._seen:
                self._apply_seen(rec)
            self._seen.clear()
        for reason, names in why.items():
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            notes.append(f"{reason}: redoing {len(names)} output{'s' if len(names) != 1 else ''} ({shown})")
        return todo, done, notes

    def _why_redo(self, src: str) -> str | None:
        """None when ``src``'s output is done; else why not ("" for an input never restored here)."""
        name = os.path.basename(src)
        rec = self._done.get(name)
        if rec is None:
            return ""
        key = self.key(src)
        if rec.key != key:
            return self._fingerprint_change(rec.key, key)
        sha = self._sha.get(os.path.abspath(src))
        if sha is None:  # unreadable now: tried again, and reported for this file
            return ""
        if rec.input_sha256 != sha:
            return "input changed since the journal"
        out = self.output_path(src)
        try:
            st = _stat(os.stat(out))
        except FileNotFoundError:
            return "output missing"
        a = os.path.abspath(src)
        if st != list(rec.output_stat):
            if st[0] != rec.output_size or file_sha256(out) != rec.output_sha256:
                return "output modified since it was written"
        elif rec.input == a and list(rec.input_stat) == self._stat[a]:
            return None
        # the same bytes under another stat (copied, moved, touched): done, and seen so, so that the next
        # run does not hash them again
        self._seen.append({"t": "seen", "output": name, "input": a, "input_stat": self._stat[a], "output_stat": st})
        return None

    def _fingerprint_change(self, old_key: str, new_key: str) -> str:
        old, new = self._fingerprints.get(old_key), self._fingerprints.get(new_key, self.fingerprint)
        if old is None:
            return "made with settings this journal does not record"
        if old.get("target_sha256") != new.get("target_sha256"):
            return "bundle changed since the journal"
        runs = ("backend", "device", "artifact", "artifact_sha256")
        if any(old.get(k) != new.get(k) for k in runs):
            def what(fp):
                return " ".join(str(fp[k]) for k in ("backend", "device", "artifact") if fp.get(k))
            return f"backend changed since the journal ({what(old)} -> {what(new)})"
        a, b = old.get("options", {}), new.get("options", {})
        changed = [f"{k} {a.get(k)} -> {b.get(k)}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        if changed:
            return f"options changed since the journal ({', '.join(changed)})"
        return "made with other settings"

    # ------------------------------------------------------------------ committing
    def commit(self, src: str, partial: str) -> str:
        """Commit ``src``'s output: fsync and hash the partial, append its record (fsynced), rename it
        into place.

        Args:
            src: the input it was restored from.
            partial: the file written whole (normally :meth:`partial_path`); it must be in the output
                folder's file system (it is renamed).

        Returns:
            The output path.

        Raises:
            JournalError: the journal cannot be written (nothing is renamed).
        """
        out = self.output_path(src)
        digest, size, st = _digest_synced(partial)
        a = os.path.abspath(src)
        sha = self.sha256(src)
        rec = {"t": "done", "input": a, "input_sha256": sha, "input_stat": self._stat[a],
               "output": os.path.basename(out), "output_sha256": digest, "output_size": size,
               "output_stat": st, "key": self.key(src), "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        kill_point("before-record")
        self._append(rec)
        kill_point("after-record")
        os.replace(partial, out)
        kill_point("after-rename")
        self._done[rec["output"]] = _Done(rec)
        return out

    def records(self) -> dict[str, dict]:
        """Output name -> its last record (as a dict), for reports and tests."""
        return {name: {s: getattr(r, s) for s in _Done.__slots__} for name, r in self._done.items()}

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Make the renames durable, remove the empty partial folder, release the lock."""
        if self._fd < 0:
            return
        try:
            if os.path.isdir(self.partial_dir) and not os.listdir(self.partial_dir):
                os.rmdir(self.partial_dir)
            _fsync_dir(self.out_dir)
        except OSError:
            pass
        finally:
            os.close(self._fd)  # releases the flock
            self._fd = -1

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _hash_stat(path: str) -> tuple[str, list[int]] | None:
    """(sha256, stat as hashed) of an input, or None when it cannot be read (reported when it is restored)."""
    try:
        st = os.stat(path)
        return file_sha256(path), _stat(st)
    except OSError:
        return None


def _digest_synced(path: str) -> tuple[str, int, list[int]]:
    """(sha256, size, stat) of a file just written, after fsync: its bytes are on disk before its record is."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        st = os.fstat(fd)
        h = hashlib.sha256()
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest(), st.st_size, _stat(st)
