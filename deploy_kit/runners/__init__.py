"""Runners: the one interface that runs a model (numpy in, numpy out) and its implementations.

Below the backends (:mod:`deploy_kit.backends` opens them) and the runtime (which drives them); it
imports neither (``.importlinter``):

* :mod:`.base` — :class:`~.base.Runner`, :class:`~.base.Pending`, :func:`~.base.in_child_process`;
* :mod:`.ort` — :class:`~.ort.OrtRunner` (ONNX Runtime), :func:`~.ort.run_isolated`;
* :mod:`.session` — :class:`~.session.EngineRunner` / :class:`~.session.EngineSession`: a TensorRT or
  TensorRT-RTX plan with pinned buffers, streams and slots; :func:`~.session.trt_logger`;
* :mod:`.cuda` — the CUDA runtime through ctypes (buffers, streams, events, GPU and driver probes).

Importing this package imports none of them: import the module you use.
"""
