"""Model zoo: registry (torch-free) + checkpoint loading (imports torch lazily)."""

from .registry import get_adapter, get_spec, model_names

__all__ = ["get_adapter", "get_spec", "model_names"]
