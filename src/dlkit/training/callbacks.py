"""Trainer callbacks: checkpointing and early stopping. A callback is any object with some of these methods:

on_fit_start(trainer), on_epoch_start(trainer), on_batch_end(trainer, batch_size, loss),
on_epoch_end(trainer, record), on_fit_end(trainer, summary), on_exception(trainer, error).
"""
from __future__ import annotations

import time
from typing import Any


class Checkpointer:
    """best.safetensors on improvement; checkpoints/last.safetensors (+ last.state.safetensors for --resume) at the
    end of every epoch, but at most every `min_interval` seconds when epochs are shorter than that (a small table's
    epoch takes milliseconds; writing and fsyncing two files then costs more than the epoch). The last epoch, a
    signal and --save-every-steps always write it."""

    def __init__(self, min_interval: float = 10.0):
        self.min_interval = min_interval
        self.saved_at, self.saved_step = time.monotonic(), None

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        if record["best"]:
            trainer.save_checkpoint("best")
        due = trainer.epoch >= trainer.cfg.epochs or time.monotonic() - self.saved_at >= self.min_interval
        if trainer.dist.agree(due):  # rank 0's clock decides for all: under DDP saving the state is collective
            self._save_last(trainer)

    def on_fit_end(self, trainer, summary: dict[str, Any]) -> None:
        if self.saved_step != trainer.step:  # stopped early (patience, a callback): the last epoch is on disk too
            self._save_last(trainer)

    def _save_last(self, trainer) -> None:
        trainer.save_checkpoint("last", with_state=True)
        self.saved_at, self.saved_step = time.monotonic(), trainer.step


class EarlyStopping:
    """Stop when validation accuracy has not improved for `patience` epochs."""

    def __init__(self, patience: int):
        self.patience = patience

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        if record["epoch"] - trainer.best_epoch >= self.patience:
            trainer.should_stop = True
            trainer.console.print(f"early stopping: no better val acc for {self.patience} epoch(s)")
