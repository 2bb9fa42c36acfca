"""Serving a bundle: a Triton Inference Server model repository (:mod:`.triton`) and the python
backend model it contains (:mod:`.triton_model`). numpy + the standard library only."""
