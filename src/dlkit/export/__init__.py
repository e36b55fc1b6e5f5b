"""Taking a model out of dlkit: ONNX export with a parity check (onnx.py), and OnnxModel to run the file
(runtime.py). onnx, onnxscript and onnxruntime are optional extras, imported only when these run."""
from __future__ import annotations

_LAZY = {"export_onnx": "onnx", "ExportResult": "onnx", "format_result": "onnx", "OnnxModel": "runtime"}

__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'dlkit.export' has no attribute {name!r}")
