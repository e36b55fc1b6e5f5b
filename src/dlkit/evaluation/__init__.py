"""Evaluation: metrics of a checkpoint on a data split, printed and saved with a confusion-matrix picture."""
from .evaluator import evaluate_checkpoint
from .metrics import classification_metrics, format_report

__all__ = ["classification_metrics", "evaluate_checkpoint", "format_report"]
