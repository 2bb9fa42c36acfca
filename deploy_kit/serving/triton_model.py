"""The python backend model ``<name>_tiled`` of a deploy-kit Triton repository (see :mod:`.triton`).

It serves images of any size through the fixed-size graph with the runtime's own tiling and
blending (:func:`deploy_kit.runtime.tiling.tile_run`, what ``deploy-kit run`` uses), so a served
image equals ``deploy-kit run``'s output for it (``scale`` times its size for a super-resolution
graph). Each tile goes through a :class:`~deploy_kit.runners.base.Runner`:

* ``tiles_through: bls`` — :class:`TritonModelRunner`, a BLS request to the fixed-size model
  ``tile_model`` in the same server (the TensorRT plan on a GPU server: one engine in GPU memory,
  scheduled by Triton across every instance and request, with its own statistics);
* ``tiles_through: in-process`` — the registry's graph runner named by ``cpu_runner`` in this
  process (ONNX Runtime's :class:`~deploy_kit.runners.ort.OrtRunner`, or OpenVINO's; CPU nodes, or a
  server without the onnxruntime backend).

``context: sync:N`` (a global-context model whose bundle has a sync graph, copied into the version
folder as ``sync_onnx``) replaces both: the tiles run N passes through the sync graph on an
:class:`~deploy_kit.runners.ort.OrtRunner` in this process
(:func:`deploy_kit.runtime.context.sync_tile_run`, what ``deploy-kit run --context sync:N`` uses), so
every tile is normalised by the whole image's statistics. ``context: tile`` (the default) is the above.

Every setting is a ``parameters`` entry of the model's config.pbtxt, written from the manifest.
Runs inside Triton's python backend stub: ``triton_python_backend_utils`` exists only there, so it
is imported when the model is initialised, not when this module is.
"""

from __future__ import annotations

import json
import os

import numpy as np

from .. import __version__, backends
from ..errors import UsageError
from ..runners.base import Runner
from ..runners.ort import OrtRunner
from ..runtime.context import graph_fn, parse_context, sync_tile_run
from ..runtime.tiling import tile_run


class TritonModelRunner(Runner):
    """A fixed-size model of the same Triton server, called through BLS (one tile per request)."""

    name = "triton-bls"

    def __init__(self, pb_utils, model: str, input_name: str, output_name: str, dtype: str):
        self.pb = pb_utils
        self.model = model
        self.input_name = input_name
        self.output_names = [output_name]
        self.dtype = np.dtype(dtype)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        pb = self.pb
        request = pb.InferenceRequest(
            model_name=self.model,
            requested_output_names=self.output_names,
            inputs=[pb.Tensor(self.input_name, np.ascontiguousarray(x, dtype=self.dtype))],
        )
        response = request.exec()
        if response.has_error():
            raise RuntimeError(f"'{self.model}' failed on a tile: {response.error().message()}")
        out = pb.get_output_tensor_by_name(response, self.output_names[0])
        return [np.asarray(out.as_numpy(), dtype=np.float32)]


class TritonPythonModel:
    """Triton's python backend interface (``initialize`` / ``execute`` / ``finalize``)."""

    def initialize(self, args: dict) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        p = {k: v.get("string_value", "") for k, v in (config.get("parameters") or {}).items()}
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.channels = int(p["channels"])
        self.tile = (int(p["tile_height"]), int(p["tile_width"]))
        self.batch = int(p.get("tile_batch") or 1)  # tiles per call: the graph's static batch
        self.scale = int(p.get("scale") or 1)  # output size / input size (absent in repositories written before it)
        self.overlap = int(p["overlap"])
        self.multiple = int(p["multiple"])
        self.runner: Runner | None = None
        self.sync_runner: OrtRunner | None = None
        name = args["model_name"]
        try:  # absent in repositories written before the context mode: tile
            self.context, self.passes = parse_context(p.get("context") or "tile")
        except UsageError as exc:
            raise ValueError(f"{name}: config.pbtxt parameter 'context': {exc}") from None
        log = pb_utils.Logger
        if p.get("deploy_kit_version") != __version__:
            log.log_warn(f"{name}: written by deploy-kit {p.get('deploy_kit_version')}, served by "
                         f"deploy-kit {__version__}: tiling may differ from the writer's 'deploy-kit run'")
        if self.context == "sync":
            if not p.get("sync_onnx") or not int(p.get("sync_stats") or 0) > 0:
                raise ValueError(f"{name}: context {p['context']!r} needs a sync graph, and config.pbtxt names none "
                                 "(sync_onnx, sync_stats); write the repository from a bundle that has one")
            self.sync_stats = int(p["sync_stats"])
            self.sync_pad = (p.get("sync_pad") or "none", int(p.get("sync_pad_multiple") or 1))
            path = os.path.join(args["model_repository"], args["model_version"], p["sync_onnx"])
            self.sync_runner = OrtRunner(path, device="auto", threads=int(p.get("intra_op_threads") or 0))
            return  # the sync graph runs every tile: no other runner
        if p.get("global_context") == "true":
            hint = ("; its sync graph is here: set the parameter 'context' to 'sync' for tiles that match the full "
                    "image" if p.get("sync_onnx") else "; export it with --tlc for tiled use")
            log.log_warn(f"{name}: the graph pools over its whole input, so tiles cannot match a "
                         f"full-image output exactly{hint}")
        if p["tiles_through"] == "in-process":
            path = os.path.join(args["model_repository"], args["model_version"], p["onnx"])
            # the registry's graph runner the repository names (onnxruntime before cpu_runner existed)
            runner = backends.get(p.get("cpu_runner") or backends.ONNXRUNTIME)
            ok, why = runner.can_run()
            if not ok:
                raise ValueError(f"{name}: cpu_runner {runner.name} cannot run in this python backend: {why}")
            self.runner = runner.open_runner(path, runner.run_options(threads=int(p.get("intra_op_threads") or 0)))
        elif p["tiles_through"] == "bls":
            self.runner = TritonModelRunner(pb_utils, p["tile_model"], p["tile_input"], p["tile_output"],
                                            p["tile_input_dtype"])
        else:
            raise ValueError(f"{name}: unknown tiles_through {p['tiles_through']!r} in config.pbtxt")

    def restore(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 in [0, 1] -> (N, C2, s*H, s*W) float32 (s: the graph's scale, 1 unless it is a
        super-resolution one), each image tiled as ``deploy-kit run`` does (with ``--context sync:N`` in
        the sync context mode).

        Raises:
            ValueError: not (N, channels, H, W) with N, H, W >= 1.
        """
        if batch.ndim != 4 or batch.shape[1] != self.channels or min(batch.shape) < 1:
            raise ValueError(f"expected a float32 (N, {self.channels}, H, W) image batch; got shape {list(batch.shape)}")
        if self.context == "sync":
            sync_fn = graph_fn(self.sync_runner)
            return np.stack([sync_tile_run(image, sync_fn, self.tile, self.overlap, self.multiple, passes=self.passes,
                                           stats=self.sync_stats, batch=self.batch, scale=self.scale,
                                           pad=self.sync_pad)
                             for image in batch])
        fn = lambda t: self.runner.run(t)[0]  # noqa: E731 - one model call of `batch` tiles, as 'deploy-kit run' makes it
        return np.stack([tile_run(image, fn, self.tile, self.overlap, self.multiple, batch=self.batch, scale=self.scale)
                         for image in batch])

    def execute(self, requests: list) -> list:
        pb = self.pb
        responses = []
        for request in requests:
            try:
                batch = pb.get_input_tensor_by_name(request, self.input_name).as_numpy()
                out = self.restore(np.asarray(batch, dtype=np.float32))
                responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor(self.output_name, out)]))
            except (ValueError, RuntimeError) as exc:  # this request fails; the others are served
                responses.append(pb.InferenceResponse(output_tensors=[], error=pb.TritonError(str(exc))))
        return responses

    def finalize(self) -> None:
        for attr in ("runner", "sync_runner"):
            runner = getattr(self, attr, None)
            if runner is not None:
                runner.close()
