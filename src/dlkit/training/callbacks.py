"""Trainer callbacks: checkpointing and early stopping. A callback is any object with some of these methods:

on_fit_start(trainer), on_epoch_start(trainer), on_batch_end(trainer, batch_size, loss),
on_epoch_end(trainer, record), on_fit_end(trainer, summary), on_exception(trainer, error).
"""
from __future__ import annotations

from typing import Any


class Checkpointer:
    """checkpoints/last.safetensors (+ last.state.safetensors for --resume) every epoch; best.safetensors on improvement."""

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        if record["best"]:
            trainer.save_checkpoint("best")
        trainer.save_checkpoint("last", with_state=True)


class EarlyStopping:
    """Stop when validation accuracy has not improved for `patience` epochs."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        if record["epoch"] - trainer.best_epoch >= self.patience:
            trainer.should_stop = True
            trainer.console.print(f"early stopping: no better val acc for {self.patience} epoch(s)")
