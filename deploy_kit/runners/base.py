"""The one runner interface: numpy in, numpy out, whatever computes it.

Parity, ``verify``, the INT8 quality table, the seam check and the runtime all run models
through a :class:`Runner`:

* :class:`deploy_kit.runners.ort.OrtRunner` — ONNX Runtime (CPU; the CUDA execution provider when
  installed and asked for);
* :class:`deploy_kit.runners.openvino.OpenVINORunner` — OpenVINO on the CPU (FP32, or BF16/FP16 where
  the CPU has it);
* :class:`deploy_kit.runners.session.EngineRunner` — a TensorRT / TensorRT-RTX plan (needs a CUDA GPU);
* ``deploy_kit.reference.TorchRunner`` — the PyTorch FP32 reference (build machine only; it
  lives outside the device half because the device never imports torch).

numpy only at import time.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..memory import map_large_allocations, release_memory


class Runner:
    """Runs one model with a fixed-shape input.

    Attributes:
        name: ``pytorch`` | ``onnxruntime`` | ``tensorrt`` | ``tensorrt-rtx``.
        input_name: the (single) image input's name.
        output_names: output names, in the order :meth:`run` returns them.
        input_shape: (N, C, H, W) the model takes, or None when any shape is accepted.
    """

    name = ""
    input_name = "input"
    output_names: list[str] = []
    input_shape: tuple[int, ...] | None = None

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        """One forward pass: float32 NCHW in, the outputs (float32) in ``output_names`` order."""
        raise NotImplementedError

    def submit(self, x: np.ndarray) -> "Pending":
        """Start a forward pass of ``x``; :meth:`Pending.wait` returns its outputs.

        ``x`` may be reused by the caller as soon as ``submit`` returns. Runners that execute
        asynchronously (the engine runner) return before the pass ends, so up to :attr:`slots`
        passes can be in flight; the arrays ``wait`` returns stay valid until ``slots`` further
        passes have been submitted. The default runs the pass now.
        """
        return Pending(self.run(x))

    # passes that may be in flight at once (see submit)
    slots = 1

    def run_many(self, inputs: Sequence[np.ndarray]) -> list[list[np.ndarray]]:
        """:meth:`run` for each input (outputs per input)."""
        return [self.run(x) for x in inputs]

    def close(self) -> None:
        return None

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Pending:
    """A forward pass started by :meth:`Runner.submit`; synchronous runners hand back a done one."""

    def __init__(self, outputs: list[np.ndarray]):
        self._outputs = outputs

    def wait(self) -> list[np.ndarray]:
        """The outputs (float32, in ``output_names`` order), once the pass has finished."""
        return self._outputs


def in_child_process(fn, *args, lean: bool = True):
    """``fn(*args)`` in a fresh (spawned) process; returns its result (``fn`` must be importable).

    Used for ONNX Runtime runs next to a PyTorch process: the child imports numpy + onnxruntime
    only, so ONNX Runtime's peak memory does not stack on what PyTorch holds in this one
    (Restormer-Local at 720x1280 peaks at ~9 GB in ONNX Runtime alone, ~18 GB before the export form's
    graph changes; the export process OOM'd on 24 GB when both lived in one process). This
    process first hands its freed heap back to the OS (:func:`deploy_kit.memory.release_memory`):
    it waits idle, resident, for the whole child run. The child serves large allocations with
    their own mappings (:func:`deploy_kit.memory.map_large_allocations`): the 720p Restormer
    FP16 parity child peaked at 9624 MiB without, 9122 MiB with (two samples).
    ``lean=False`` leaves the child's allocator as glibc sets it, for timing runs: a fresh mapping
    per large allocation costs its page faults every time (PyTorch eager NAFNet-w32 at 256x256, 2
    threads: 283 ms with glibc's default, 904 ms with every 1 MiB+ allocation mapped).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    release_memory()
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                             initializer=map_large_allocations if lean else None) as pool:
        return pool.submit(fn, *args).result()
