"""The export's records: the job every stage reads, the frozen result of each stage, and the report.

:class:`Job` is the request and the run's settings; :class:`Loaded`, :class:`Reference`,
:class:`Graph` and :class:`Engine` are what the stages return (deploy_kit/pipeline/graph.py,
precision.py, shipping.py); :class:`Finished` is where the chain ended; :class:`ExportResult`
accumulates what the run reports (artifacts, notes, timings, next steps).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

import numpy as np

from ..fsutil import human_size
from ..memory import PeakRss
from ..precision.int8 import Int8Options
from ..specs import ExportRequest, ModelSpec, Variant

if TYPE_CHECKING:  # pragma: no cover
    from torch import nn

    from ..backends import BuildOptions
    from ..backends._trt import EngineBackend
    from ..models.base import ModelAdapter
    from ..compare import Check, ParityReport

T = TypeVar("T")


@dataclass
class ExportResult:
    """What an export reports: filled stage by stage (the stages' own results are frozen records).

    ``report`` is set when the chain ends; ``request`` is the request as the checkpoint resolved it.
    """

    request: ExportRequest
    artifacts: list[tuple[str, str]] = field(default_factory=list)  # (label, path)
    timings: list[tuple[str, float]] = field(default_factory=list)
    # peak resident memory (MiB) of this process and its children, per stage and overall
    # (memory.PeakRss); None without psutil (the export extra installs it)
    stage_peaks: list[tuple[str, float | None]] = field(default_factory=list)
    peak_rss_mib: float | None = None
    notes: list[str] = field(default_factory=list)
    report: ParityReport | None = None
    quality: dict[str, dict[str, float]] | None = None  # INT8 quality table (precision -> PSNRs), image models only
    next_steps: list[str] = field(default_factory=list)
    bundle: str | None = None


Progress = Callable[[str, str], None]  # (event, text): event "start" | "done" | "detail" (a line within a step)


def _quiet(event: str, text: str) -> None:
    return None


@dataclass(frozen=True)
class Job:
    """What every stage reads: the request and the run's settings.

    The request changes once, when the checkpoint resolves its variant; that makes a new Job
    (:func:`_from_pytorch`). ``res`` is the one thing the stages fill as they go.

    Attributes:
        req: the export request.
        out_dir: directory of every artifact.
        work: scratch directory inside ``out_dir`` (removed when the run ends).
        samples: number of sample images for parity.
        int8: the INT8 settings (read when ``req.precision == "int8"``).
        engine_backend: the backend that builds the engine; None stops before the engine.
        build_options: the engine backend's typed build options (compute capabilities, timing cache);
            None when no engine is built.
        adapter: the model family's bridge to the pipeline.
        spec: the model family's spec (its parity tolerances).
        progress: the progress callback.
        memory: peak resident memory of the whole run.
        res: the result being filled (artifacts, notes, timings, next steps).
    """

    req: ExportRequest
    out_dir: str
    work: str
    samples: int
    int8: Int8Options
    engine_backend: EngineBackend | None
    build_options: BuildOptions | None
    adapter: ModelAdapter
    spec: ModelSpec
    progress: Progress
    memory: PeakRss
    res: ExportResult

    @property
    def stem(self) -> str:
        return os.path.join(self.out_dir, self.req.stem())

    @property
    def kind(self) -> str:
        return self.adapter.output_kind(self.req)

    @property
    def output_names(self) -> list[str]:
        return self.adapter.output_names(self.req)

    @property
    def input_names(self) -> list[str]:
        return self.adapter.input_names(self.req)

    def timed(self, label: str, fn: Callable[[], tuple[T, str]]) -> T:
        """Run one step between a "start" and a "done" progress event; record its time and peak memory.

        Args:
            label: the step's name (progress display, ``res.timings``, ``res.stage_peaks``).
            fn: does the work; returns (its result, the detail shown after the label).

        Returns:
            The result ``fn`` returned.
        """
        self.progress("start", label)
        self.memory.take()  # the stage's peak starts here
        t0 = time.perf_counter()
        value, detail = fn()
        self.res.timings.append((label, time.perf_counter() - t0))
        peak = self.memory.take()
        self.res.stage_peaks.append((label, peak))
        text = f"{label}: {detail}" if detail else label
        if peak is not None:
            text += f" [peak RSS {human_size(int(peak * 2**20))}]"
        self.progress("done", text)
        return value


@dataclass(frozen=True)
class Loaded:
    """:func:`stage_load`'s result: the PyTorch model and the request as its checkpoint resolved it."""

    req: ExportRequest
    model: nn.Module
    variant: Variant


@dataclass(frozen=True)
class Reference:
    """:func:`stage_reference`'s result: the sample inputs and the PyTorch FP32 outputs every
    parity row is judged against.

    Attributes:
        inputs: (N, C, H, W) batches of the sample images.
        refs: per batch, the outputs: each element its own sample's.
        members: per batch, the sample index of each element.
        ranges: per range-safe site, the largest FP32 statistics seen (what the range-safe FP16
            rewrites must hold).
        metadata: the request part of the manifest (:func:`request_metadata`).
        header: the parity report without checks (model, shape, reference, input labels).
    """

    inputs: list[np.ndarray]
    refs: list[list[np.ndarray]]
    members: list[list[int]]
    ranges: dict[str, dict[str, float]]
    metadata: dict[str, Any]
    header: ParityReport

    def report(self, checks: Sequence[Check]) -> ParityReport:
        """The parity report of ``checks`` (in order) under this reference's header."""
        return replace(self.header, checks=list(checks))


@dataclass(frozen=True)
class Graph:
    """An ONNX graph of the export with its parity rows.

    Attributes:
        precision: fp32 | fp16 | int8.
        path: the ONNX file.
        outputs: per batch, ONNX Runtime's outputs (the parity heatmap shows the first).
        checks: its parity rows in report order: ONNX Runtime, then true-FP16 rounding for FP16.
    """

    precision: str
    path: str
    outputs: list[list[np.ndarray]]
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class Engine:
    """:func:`stage_engine`'s result: the plan (None with ``--backend none``) and its parity row
    (skipped, with the reason, where it cannot run)."""

    plan: str | None
    check: Check


@dataclass(frozen=True)
class Finished:
    """Where the chain ended: what the bundle and the reports are written from.

    Attributes:
        job: the job, its request resolved.
        reference: the reference stage's result.
        graph: the last graph that went through parity (the one the bundle, the heatmap and
            ``verify`` name).
        checks: every parity row, in report order.
        plan: the engine plan, when one was built.
    """

    job: Job
    reference: Reference
    graph: Graph
    checks: tuple[Check, ...]
    plan: str | None = None


def check_line(check: Check) -> str:
    """The progress detail of a parity row: its status and its gates."""
    gates = "; ".join(g.text() for g in check.gates)
    return f"{check.status.upper()} ({gates})"
