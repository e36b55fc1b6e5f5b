"""Inference: load a checkpoint without training code and predict on files, PIL images or tensors."""
from .predictor import Predictor, load, resolve_checkpoint

__all__ = ["Predictor", "load", "resolve_checkpoint"]
