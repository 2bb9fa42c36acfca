"""``deploy-kit run --ray [ADDRESS]``: one job's images and videos restored by a pool of Ray actors.

The driver (the ``run`` process) lists the inputs and asks the journal what is left to do
(:mod:`deploy_kit.runtime.journal`); this module hands that work to actors and commits what they
return. Each actor holds one :class:`~deploy_kit.runtime.restorer.Restorer`, built from the job's
options as the local run builds its own; it restores image files in small chunks
(:func:`~deploy_kit.runtime.restore.restore_images`) and videos as segments cut at keyframes
(:func:`~deploy_kit.runtime.video.plan_segments`, ``transcode(..., segment=s, audio=False)``), and
writes every output to a hidden file in the output folder: an image to the journal's partial path,
a segment to a part file. Only the driver commits (:meth:`Journal.commit`: the record, then the
rename) and joins a video's parts (:func:`~deploy_kit.runtime.video.join_segments`: packets copied,
audio copied once). Hence a Ray run, a local run and a resumed run write the same images byte for
byte, and the same video frames with a lossless codec (with a lossy one each segment is its own
encode: docs/cluster.md); a task that Ray retries (its actor died and was restarted) only rewrites a
hidden file nobody committed yet.

Pool: one actor per GPU (``num_gpus=1``) on a cluster with GPUs; otherwise one actor per CPU
(``num_cpus=1``), whose model runs on one thread (each backend that takes a thread count is given 1),
so that N actors on an N-core node do not oversubscribe it. Ray places the actors on the nodes,
restarts one that dies (``max_restarts``) and re-runs the tasks it had (``max_task_retries``).

Why Ray core actors and not Ray Data (the field's batch-inference engine): ``pip install ray`` (the
``ray`` extra) does not bring what Ray Data needs (``import ray.data`` fails without pandas and pyarrow;
that is ``ray[data]``), and what this job needs from it is small: actors that keep a model loaded,
Ray's placement, restarts and retries, and results back on the driver as they finish so that it
commits each one. Ray Data's actor pools are those same actors (``max_restarts``/``max_task_retries``)
behind a block-based streaming executor; a video's segments must come back to the driver to be
joined anyway. Work goes to the actors as :class:`ray.util.ActorPool` hands it out (an actor with
room takes the next item), written out here because ``ActorPool`` does not say which item a failure
belongs to and keeps one task per actor (an actor here has two queued, so it never waits for the
driver between items).

Inputs and outputs must be on a path every node sees under the same name (a shared filesystem: NFS,
Lustre, a FUSE mount of object storage); see docs/cluster.md.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .. import _deps
from ..backends import REGISTRY
from ..errors import DeployKitError, UsageError
from .journal import JobOptions, JobResult, input_fault
from .restore import restore_images
from .restorer import Restorer
from .video import is_video_path, join_segments, plan_segments, transcode

CPUS_PER_WORKER = 1  # a CPU actor's reservation, and its model's thread count
IN_FLIGHT = 2  # tasks queued per actor: it starts the next while the driver handles the last
MAX_CHUNK = 8  # images per task at most (a chunk keeps the Restorer's pipeline full on a GPU)
MAX_RESTARTS = 4  # Ray restarts a dead actor this many times ...
MAX_TASK_RETRIES = 4  # ... and re-runs its unfinished tasks on the restarted one
SEGMENTS_PER_WORKER = 2  # a video is cut into up to this many segments per actor (balance at the end)
PARTS_SUFFIX = ".parts"  # a video's part files: a folder beside its partial path (the journal's hidden folder)
PROGRESS_EVERY_S = 2.0
NAMESPACE = "deploy-kit"  # the Ray namespace of the workers' names
WORKER_PREFIX = "worker/"  # a worker's name: worker/<Ray job id>/<index>


@dataclass(frozen=True)
class PoolPlan:
    """How many actors, and what each reserves.

    Attributes:
        workers: actors in the pool.
        gpus: GPUs each reserves (1 on a cluster with GPUs, else 0).
        cpus: CPUs each reserves.
        threads: the thread count given to its backend's run options (0: the backend's default).
    """

    workers: int
    gpus: int
    cpus: int
    threads: int

    def describe(self) -> str:
        """One line: ``2 workers (1 CPU each, 1 model thread)``."""
        each = "1 GPU each" if self.gpus else f"{self.cpus} CPU each, {self.threads} model thread" + \
            ("s" if self.threads > 1 else "")
        return f"{self.workers} worker{'s' if self.workers != 1 else ''} ({each})"


def plan_pool(resources: dict, workers: Optional[int] = None) -> PoolPlan:
    """The actor pool for a cluster with ``resources`` (``ray.cluster_resources()``).

    One actor per GPU where the cluster has GPUs; otherwise one per :data:`CPUS_PER_WORKER` CPUs.

    Args:
        resources: the cluster's total resources (``{"CPU": 8.0, "GPU": 2.0, ...}``).
        workers: use this many actors instead (at most what the cluster can hold at once).

    Returns:
        a :class:`PoolPlan`.

    Raises:
        UsageError: ``workers`` below 1 or more than the cluster holds; a cluster with no CPU or GPU.
    """
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    if gpus >= 1:
        most, plan = gpus, PoolPlan(gpus, 1, 1 if cpus >= gpus else 0, 0)
    elif cpus >= CPUS_PER_WORKER:
        most = cpus // CPUS_PER_WORKER
        plan = PoolPlan(most, 0, CPUS_PER_WORKER, CPUS_PER_WORKER)
    else:
        raise UsageError("the Ray cluster has no CPU or GPU to run workers on (ray.cluster_resources() lists none)")
    if workers is None:
        return plan
    if workers < 1 or workers > most:
        raise UsageError(f"workers must be between 1 and {most} on this cluster "
                         f"({gpus} GPUs, {cpus} CPUs); got {workers}")
    return PoolPlan(workers, plan.gpus, plan.cpus, plan.threads)


@dataclass
class _Outcome:
    """What one task did, as an actor returns it to the driver."""

    key: int
    written: list = field(default_factory=list)  # (src, partial, output pixels) of each image written
    failed: list = field(default_factory=list)  # one line per input that failed
    fatal: Optional[str] = None  # what stops the whole job (an encoder option the encoder refuses)
    frames: int = 0  # a segment's frames
    node: str = ""
    pid: int = 0
    seconds: float = 0.0


class RestoreWorker:
    """A Ray actor's state: one Restorer, built once, used for every task the actor runs.

    Made into an actor class by :func:`run_on_ray` (``ray.remote(RestoreWorker)``), so that importing
    this module does not import Ray. A target that does not open on this node is kept as a line for
    :meth:`hello` to report, not raised (Ray would print its traceback and retry nothing useful).
    """

    def __init__(self, opts: JobOptions, threads: int):
        import ray

        self.node = ray.get_runtime_context().get_node_id()
        self.pid = os.getpid()
        self.restorer: Optional[Restorer] = None
        self.error: Optional[str] = None
        try:
            self.restorer = Restorer(opts.target, opts.backend, overlap=opts.overlap, context=opts.context,
                                     run_options=_run_options(opts, threads))
        except (DeployKitError, OSError, ValueError) as exc:
            self.error = str(exc)

    def hello(self) -> tuple:
        """(node id, pid, error line or None, the Restorer's note)."""
        return self.node, self.pid, self.error, self.restorer.note if self.restorer else ""

    def images(self, key: int, pairs: list, out_dir: str, max_pixels: Optional[int]) -> _Outcome:
        """Restore image files, each to its partial path: ``pairs`` is [(src, partial), ...]."""
        started = time.perf_counter()
        outcome = _Outcome(key, node=self.node, pid=self.pid)
        partial = dict(pairs)
        present = []
        for src, _ in pairs:
            if os.path.isfile(src):
                present.append(src)
            else:
                outcome.failed.append(f"{src}: not found on node {self.node[:8]} (inputs must be on a path every "
                                      "node sees)")
        if present:
            res = restore_images(self.restorer, present, out_dir, max_pixels=max_pixels, dest=partial.get,
                                 on_done=lambda src, path, pixels: outcome.written.append((src, path, pixels)))
            outcome.failed += res.failed
        outcome.seconds = time.perf_counter() - started
        return outcome

    def segment(self, key: int, src: str, part: str, segment: Any, codec: str, crf: Optional[int],
                preset: Optional[str]) -> _Outcome:
        """Restore one segment of a video into the part file ``part`` (video only: the join copies the audio)."""
        started = time.perf_counter()
        outcome = _Outcome(key, node=self.node, pid=self.pid)
        try:
            stats = transcode(src, part, self.restorer.restore_stream, codec=codec, crf=crf, preset=preset,
                              scale=self.restorer.scale, segment=segment, audio=False)
            outcome.frames = stats.frames
        except ValueError as exc:
            if input_fault(exc, src):  # the video's own fault: reported for it, the job goes on
                outcome.failed.append(str(exc))
            else:  # --codec/--crf/--preset or the container: every video would fail the same way
                outcome.fatal = str(exc)
        except OSError as exc:
            outcome.failed.append(f"{src}: segment {segment.index}: {exc}")
        except DeployKitError as exc:  # e.g. no PyAV on this node
            outcome.fatal = f"a worker on node {self.node[:8]}: {exc}"
        outcome.seconds = time.perf_counter() - started
        return outcome


def _run_options(opts: JobOptions, threads: int) -> Optional[list]:
    """Run options giving ``threads`` threads to every backend that takes a thread count, and the asked
    ``precision`` to the named backend (None: every backend's defaults)."""
    if not threads and opts.precision is None:
        return None
    given = []
    for backend in REGISTRY.values():
        values = {"threads": threads or None}
        if opts.precision is not None and backend.name == opts.backend:
            values["precision"] = opts.precision
        try:
            given.append(backend.run_options(**values))
        except UsageError:  # an engine backend: no thread count
            pass
    return given


@dataclass(frozen=True)
class _Task:
    key: int
    kind: str  # "images" or "segment"
    pairs: tuple = ()  # images: ((src, partial), ...)
    src: str = ""  # segment: the video
    part: str = ""  # segment: its part file
    segment: Any = None


@dataclass
class _Video:
    """A video being restored in segments: its part files and how many are still out."""

    src: str
    folder: str
    parts: list
    left: int
    failed: list = field(default_factory=list)


@dataclass
class _NodeStats:
    workers: set = field(default_factory=set)
    images: int = 0
    frames: int = 0
    pixels: int = 0
    busy: float = 0.0


def connect(ray, address: Optional[str]) -> bool:
    """Connect this process to a Ray cluster, unless it already is a driver (then that one is used).

    Args:
        address: ``auto`` (or None): ``RAY_ADDRESS``, else the cluster last started on this machine
            (``ray start``), else a new local one (Ray's own order, ``ray.init()``); anything else is
            passed to ``ray.init(address=...)`` (``HOST:PORT`` of a head node, ``ray://HOST:10001``).

    Returns:
        True when this call connected (the caller disconnects with ``ray.shutdown()``), False when
        the process was connected already.

    Raises:
        UsageError: no cluster answers at ``address``.
    """
    if ray.is_initialized():
        return False
    try:
        ray.init(address=None if address in (None, "", "auto") else address, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UsageError(f"cannot connect to the Ray cluster at {address}: {_first_line(exc)} (start one with "
                         "`ray start --head` and pass its HOST:PORT, see docs/cluster.md)") from None
    return True


def _print(line: str = "", err: bool = False) -> None:
    import sys

    print(line, file=sys.stderr if err else sys.stdout, flush=True)


def run_on_ray(opts: JobOptions, files: list, out_dir: str, journal, *, address: Optional[str] = "auto",
               echo: Callable[..., Any] = _print, workers: Optional[int] = None) -> JobResult:
    """Restore ``files`` (the journal's to-do list) on a Ray cluster's actors; commit each output here.

    Args:
        opts: the job's options (each actor builds its Restorer from them).
        files: the inputs to restore (image and video paths every node sees).
        out_dir: the output folder (every node sees it).
        journal: the open :class:`~deploy_kit.runtime.journal.Journal` of ``out_dir``.
        address: the cluster (see :func:`connect`).
        echo: ``echo(line, err=False)`` (``click.echo``): the summary on stdout; progress, notes and
            per-file failures with ``err=True``.
        workers: the pool's size instead of one per GPU / per CPU (see :func:`plan_pool`).

    Returns:
        a :class:`~deploy_kit.runtime.journal.JobResult` (``per_node``: node -> ``items`` (images +
        frames), ``seconds`` (its workers' busy time), ``images``, ``frames``, ``pixels``, ``workers``);
        ``skipped_done`` is 0 (the caller knows what the journal skipped).

    Raises:
        MissingDependencyError: Ray is not installed (names the ``ray`` extra).
        UsageError: no cluster at ``address``; a worker that cannot open the target on its node; an
            encoder option the encoder refuses (as a local run, it would fail every video).
    """
    ray = _deps.require("ray")
    started = time.perf_counter()
    owned = connect(ray, address)
    actors: list = []
    try:
        resources = ray.cluster_resources()
        plan = plan_pool(resources, workers)
        labels = _node_labels(ray)
        echo(f"ray: {len(labels)} node{'s' if len(labels) != 1 else ''}, {int(resources.get('CPU', 0))} CPUs, "
             f"{int(resources.get('GPU', 0))} GPUs; {plan.describe()}", err=True)
        cls = ray.remote(RestoreWorker)
        # named (namespace deploy-kit, worker/<job id>/<index>), so that `ray list actors` and a test find them
        job_id = ray.get_runtime_context().get_job_id()
        actors = [cls.options(num_cpus=plan.cpus, num_gpus=plan.gpus, max_restarts=MAX_RESTARTS,
                              max_task_retries=MAX_TASK_RETRIES, name=f"{WORKER_PREFIX}{job_id}/{i}",
                              namespace=NAMESPACE).remote(opts, plan.threads)
                  for i in range(plan.workers)]
        pids = _greet(ray, actors, labels, echo)
        driver = _Driver(ray, opts, out_dir, journal, actors, pids, labels, echo, started)
        return driver.run(files)
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)
        if owned:
            ray.shutdown()


def _node_labels(ray) -> dict:
    """node id -> a readable name: its hostname, or address, plus the id's start where those repeat."""
    nodes = [n for n in ray.nodes() if n.get("Alive", True)]
    names = [n.get("NodeManagerHostname") or n.get("NodeManagerAddress") or n["NodeID"][:8] for n in nodes]
    return {n["NodeID"]: name if names.count(name) == 1 else f"{name}/{n['NodeID'][:8]}"
            for n, name in zip(nodes, names)}


def _greet(ray, actors: list, labels: dict, echo) -> list:
    """Wait until every actor has built its Restorer; a node where it could not is one line.

    Returns:
        each actor's pid (a later result from another pid means Ray restarted it).

    Raises:
        UsageError: a worker could not open the target (not on a shared path, no runtime for it there).
    """
    refs = [a.hello.remote() for a in actors]
    waited = 0.0
    while True:
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=30.0)
        if len(ready) == len(refs):
            break
        waited += 30.0
        echo(f"ray: {len(refs) - len(ready)} of {len(refs)} workers not started after {waited:.0f} s "
             "(the cluster's CPUs/GPUs may be taken by other jobs)", err=True)
    pids = []
    notes = set()
    for node, pid, error, note in ray.get(refs):
        if error is not None:
            raise UsageError(f"a Ray worker on node {labels.get(node, node[:8])} cannot open the target: {error}")
        pids.append(pid)
        notes.add(note)
    for note in sorted(notes):
        echo(f"ray: workers run {note}", err=True)
    if len(notes) > 1:  # `auto` picked per node: their outputs are each backend's own
        echo("warning: the workers run different backends (each node picks under --backend auto), so outputs "
             "differ by node; name one with --backend to make them the same", err=True)
    return pids


class _Driver:
    """The driver's side of one Ray job: hands tasks to actors, commits results, reports progress."""

    def __init__(self, ray, opts: JobOptions, out_dir: str, journal, actors: list, pids: list, labels: dict,
                 echo, started: float):
        self.ray, self.opts, self.out_dir, self.journal = ray, opts, out_dir, journal
        self.actors, self.pids, self.labels, self.echo, self.started = actors, pids, labels, echo, started
        self.result = JobResult()
        self.nodes: dict = {}
        self.videos: dict = {}
        self.restarts = 0
        self.images_total = self.images_done = 0
        self.frames_total = 0
        self.last_progress = 0.0
        self.ready = time.perf_counter()  # the workers are up: the work starts

    # ------------------------------------------------------------------ planning
    def tasks(self, files: list) -> list:
        """The job as tasks: video segments first (the longest work, and a join waits for the last of
        each), then images in chunks."""
        images = [f for f in files if not is_video_path(f)]
        videos = [f for f in files if is_video_path(f)]
        self.images_total = len(images)
        tasks = []
        for src in videos:
            try:
                segments = plan_segments(src, len(self.actors) * SEGMENTS_PER_WORKER)
            except ValueError as exc:
                if not input_fault(exc, src):
                    raise UsageError(str(exc)) from None
                self.fail(str(exc))
                continue
            partial = self.journal.partial_path(src)
            folder = partial + PARTS_SUFFIX  # the journal's next open removes it if this run is stopped
            shutil.rmtree(folder, ignore_errors=True)
            os.makedirs(folder)
            ext = os.path.splitext(partial)[1]
            parts = [os.path.join(folder, f"{s.index:04d}{ext}") for s in segments]
            self.videos[src] = _Video(src, folder, parts, len(segments))
            self.frames_total += segments[0].total_frames
            self.echo(f"ray: {os.path.basename(src)}: {len(segments)} segment{'s' if len(segments) != 1 else ''} "
                      f"of {', '.join(str(s.frames) for s in segments)} frames", err=True)
            for seg, part in zip(segments, parts):
                tasks.append(_Task(len(tasks), "segment", src=src, part=part, segment=seg))
        chunk = max(1, min(MAX_CHUNK, len(images) // (len(self.actors) * 4)))
        for i in range(0, len(images), chunk):
            pairs = tuple((src, self.journal.partial_path(src)) for src in images[i:i + chunk])
            tasks.append(_Task(len(tasks), "images", pairs=pairs))
        return tasks

    def submit(self, index: int, task: _Task):
        actor = self.actors[index]
        if task.kind == "images":
            return actor.images.remote(task.key, list(task.pairs), self.out_dir, self.opts.max_pixels)
        return actor.segment.remote(task.key, task.src, task.part, task.segment, self.opts.codec, self.opts.crf,
                                    self.opts.preset)

    # ------------------------------------------------------------------ the loop
    def run(self, files: list) -> JobResult:
        queue = deque(self.tasks(files))
        load = [0] * len(self.actors)
        alive = set(range(len(self.actors)))
        probing: set = set()  # actors whose task failed with ActorDiedError: restarting, or gone for good?
        inflight: dict = {}  # ObjectRef -> (task, actor index); task None: a probe (hello)
        while queue or inflight:
            while queue:  # an actor with room takes the next task (ray.util.ActorPool's rule)
                free = [i for i in alive - probing if load[i] < IN_FLIGHT]
                if not free:
                    break
                i = min(free, key=lambda k: (load[k], k))
                task = queue.popleft()
                inflight[self.submit(i, task)] = (task, i)
                load[i] += 1
            if not inflight:  # every actor is gone for good
                while queue:
                    self.fail_task(queue.popleft(), f"no Ray worker left to run it (each died more than "
                                                    f"{MAX_RESTARTS} times)")
                break
            [ref], _ = self.ray.wait(list(inflight), num_returns=1)
            task, i = inflight.pop(ref)
            if task is None:  # a probe: the actor answers once Ray has restarted it, or is dead for good
                probing.discard(i)
                try:
                    node, pid, _, _ = self.ray.get(ref)
                except self.ray.exceptions.RayActorError:
                    alive.discard(i)
                else:
                    self.restarted(i, pid, node)
                continue
            load[i] -= 1
            try:
                outcome = self.ray.get(ref)
            except self.ray.exceptions.ActorDiedError as exc:  # the task's retries are spent
                self.fail_task(task, f"its Ray worker died and Ray did not run it again ({_first_line(exc)})")
                if i not in probing:  # send it no more work until it answers again
                    probing.add(i)
                    inflight[self.actors[i].hello.remote()] = (None, i)
            except self.ray.exceptions.RayError as exc:
                self.fail_task(task, f"Ray gave up on it: {_first_line(exc)}")
            else:
                if outcome.fatal is not None:
                    raise UsageError(outcome.fatal)
                self.take(task, i, outcome)
            self.progress()
        self.result.seconds = time.perf_counter() - self.started
        self.summary()
        return self.result

    def restarted(self, index: int, pid: int, node: str) -> None:
        """Note a new process behind worker ``index`` (Ray restarted it)."""
        if pid != self.pids[index]:
            self.pids[index] = pid
            self.restarts += 1
            self.echo(f"ray: worker {index} was restarted by Ray (now pid {pid} on "
                      f"{self.labels.get(node, node[:8])}); Ray re-ran its unfinished tasks", err=True)

    # ------------------------------------------------------------------ results
    def take(self, task: _Task, index: int, outcome: _Outcome) -> None:
        """Commit what a task wrote (images), or count a video's segment and join the video after its last."""
        self.restarted(index, outcome.pid, outcome.node)
        stats = self.nodes.setdefault(self.labels.get(outcome.node, outcome.node[:8]), _NodeStats())
        stats.workers.add(index)
        stats.busy += outcome.seconds
        if task.kind == "images":
            for line in outcome.failed:
                self.images_done += 1
                self.fail(line)
            for src, partial, pixels in outcome.written:
                self.images_done += 1
                try:
                    self.result.written.append(self.journal.commit(src, partial))
                except FileNotFoundError:
                    self.fail(f"{src}: the worker on node {self.labels.get(outcome.node, outcome.node[:8])} wrote "
                              f"{partial}, which this machine does not see: --out must be a folder every node "
                              "sees (a shared filesystem)")
                    continue
                stats.images += 1
                stats.pixels += pixels
                self.result.pixels += pixels
            return
        video = self.videos[task.src]
        video.left -= 1
        if outcome.failed:
            video.failed += outcome.failed
        else:
            stats.frames += outcome.frames
        if video.left == 0:
            self.join(video)

    def join(self, video: _Video) -> None:
        """Join a video's parts into its partial path (packets copied, src's audio once) and commit it."""
        try:
            if video.failed:
                self.fail(video.failed[0])
                return
            partial = self.journal.partial_path(video.src)
            try:
                stats = join_segments(video.parts, video.src, partial)
            except (OSError, ValueError) as exc:
                self.fail(str(exc) if os.path.basename(video.src) in str(exc) else f"{video.src}: {exc}")
                return
            self.result.written.append(self.journal.commit(video.src, partial))
            self.result.frames += stats.frames
        finally:
            shutil.rmtree(video.folder, ignore_errors=True)

    def fail_task(self, task: _Task, why: str) -> None:
        """A task Ray could not run: each of its inputs failed (the job goes on)."""
        if task.kind == "images":
            for src, _ in task.pairs:
                self.images_done += 1
                self.fail(f"{src}: {why}")
            return
        video = self.videos[task.src]
        video.left -= 1
        video.failed.append(f"{task.src}: segment {task.segment.index}: {why}")
        if video.left == 0:
            self.join(video)

    def fail(self, line: str) -> None:
        self.result.failed.append(line)
        self.echo(f"skipped: {line}", err=True)

    # ------------------------------------------------------------------ reporting
    def progress(self) -> None:
        """A progress line for the whole job: after the first result, then every PROGRESS_EVERY_S."""
        now = time.perf_counter()
        if self.last_progress and now - self.last_progress < PROGRESS_EVERY_S:
            return
        self.last_progress = now
        done_frames = sum(s.frames for s in self.nodes.values())
        parts = []
        if self.images_total:
            parts.append(f"images {self.images_done}/{self.images_total}")
        if self.videos:
            parts.append(f"frames {done_frames}/{self.frames_total}")
        self.echo(f"progress: {', '.join(parts)}, {len(self.result.failed)} failed, {now - self.started:.1f} s",
                  err=True)

    def summary(self) -> None:
        """The job's closing lines: totals, then each node's share and throughput (``per_node``)."""
        work = max(time.perf_counter() - self.ready, 1e-9)
        r = self.result
        images = sum(s.images for s in self.nodes.values())
        what = [f"{_count(images, 'image')} ({r.pixels / 1e6:.2f} MP, {images / work:.2f} images/s)"]
        if self.videos:
            what.append(f"{_count(r.frames, 'frame')} of {_count(len(self.videos), 'video')} "
                        f"({r.frames / work:.2f} frames/s)")
        self.echo(f"restored {' and '.join(what)} into {self.out_dir} on Ray in {work:.1f} s "
                  f"(+ {self.ready - self.started:.1f} s to connect and start {len(self.actors)} workers)")
        for name in sorted(self.nodes):
            s = self.nodes[name]
            r.per_node[name] = {"items": s.images + s.frames, "seconds": round(s.busy, 3), "images": s.images,
                                "frames": s.frames, "pixels": s.pixels, "workers": len(s.workers)}
            rates = [f"{_count(s.images, 'image')} ({s.images / work:.2f}/s)"] if s.images else []
            rates += [f"{_count(s.frames, 'frame')} ({s.frames / work:.2f}/s)"] if s.frames else []
            self.echo(f"  node {name}, {_count(len(s.workers), 'worker')}: "
                      f"{', '.join(rates) or 'nothing'}; busy {s.busy:.1f} s")
        if self.restarts:
            self.echo(f"ray: {self.restarts} worker restart{'s' if self.restarts != 1 else ''}; Ray re-ran their "
                      "tasks and only this process committed, so no output is missing or doubled", err=True)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
