"""Data: open a dataset (built-in, folder, CSV), fix its PreprocessSpec, and serve batches of uint8 images."""
from __future__ import annotations

from .builtin import BUILTINS
from .layouts import LAYOUTS, open_source
from .prepare import make_batches, prepare_data, prepare_split
from .source import DataSource, PreparedData, Samples
from .spec import PreprocessSpec

__all__ = ["BUILTINS", "LAYOUTS", "DataSource", "PreparedData", "PreprocessSpec", "Samples", "make_batches",
           "open_source", "prepare_data", "prepare_split"]

from . import user  # noqa: E402,F401  (registers the "dataset" modality, which modality_for looks up)
