"""dlkit: from a folder of images to a trained, evaluated model in one command.

    import dlkit
    run = dlkit.train(data="digits", model="lenet-modern", epochs=5)
    dlkit.load(run.dir).predict("seven.png")
"""
__version__ = "0.1.0"

import time as _time  # noqa: E402

_IMPORTED = _time.time()  # the fallback for "seconds since the process started" where /proc is missing

from .errors import UserError  # noqa: E402

_LAZY = {
    "train": "api", "evaluate": "api", "Run": "api", "load": "infer", "Predictor": "infer",
    "create_model": "models", "list_models": "models", "TrainConfig": "config", "summarize": "evaluation.summary",
    "cross_validate": "cv", "register_model": "models.user", "lr_find": "training.lr_find", "sweep": "tune.sweep",
    "show_data": "track.views", "export_onnx": "export",
}

__all__ = ["UserError", "__version__", *_LAZY]


def __dir__() -> list[str]:
    """The public API for tab completion, without importing it."""
    return sorted(__all__)


def __getattr__(name: str):
    """Import torch-heavy parts on first use, so `import dlkit` and `dlkit --help` stay fast."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'dlkit' has no attribute {name!r}")
