"""Model zoo: registry (torch-free) + checkpoint loading (imports torch lazily)."""

from .registry import get_adapter, get_spec, model_names, spec_for

__all__ = ["get_adapter", "get_spec", "model_names", "spec_for"]
