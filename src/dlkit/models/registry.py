"""The model registry. Entries carry default_size (folders are resized to it) and min_size (smallest input)."""
from ..registry import Registry

MODELS: Registry = Registry("model")
