"""`dlkit serve`: a FastAPI service over a trained model (torch or ONNX), with micro-batching and a page at /.

    from dlkit.serve import ServeSettings, create_app, load_backend
    app = create_app(load_backend("runs/x"), ServeSettings(max_batch=16))

FastAPI, uvicorn and the model load only when these are used, so importing this package stays light.
"""
from .settings import ServeSettings

_LAZY = {"create_app": "app", "load_backend": "backends", "serve": "server", "HttpError": "uploads"}

__all__ = ["ServeSettings", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'dlkit.serve' has no attribute {name!r}")
