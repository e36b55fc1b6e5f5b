"""Console output: a tqdm bar per epoch on a terminal, one plain line per epoch everywhere, a closing summary."""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Console:
    """Prints to `stream` (stdout, or stderr when stdout carries --json). quiet prints nothing."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None):
        self.quiet = quiet
        self.stream = stream or sys.stdout

    def print(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)


class ConsoleProgress:
    """Callback: progress bar with loss and images/s while an epoch runs, then its summary line."""

    def __init__(self, console: Console):
        self.console = console
        self.bar = None
        self.use_bar = not console.quiet and console.stream.isatty()

    def on_epoch_start(self, trainer) -> None:
        self.started, self.seen = time.perf_counter(), 0
        if self.use_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=trainer.steps_per_epoch, desc=f"epoch {trainer.epoch}/{trainer.cfg.epochs}",
                            leave=False, file=self.console.stream, unit="step", dynamic_ncols=True)

    def on_batch_end(self, trainer, batch_size: int, loss) -> None:
        self.seen += batch_size
        if self.bar is not None:
            self.bar.update(1)
            if self.bar.n % 10 == 1:  # reading the loss syncs the device: not every step
                rate = self.seen / max(1e-9, time.perf_counter() - self.started)
                self.bar.set_postfix(loss=f"{float(loss):.4f}", img_s=f"{rate:,.0f}", refresh=False)

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self.console.print(format_epoch(record, trainer.cfg.epochs, trainer.device_label))


def format_epoch(r: dict[str, Any], epochs: int, device: str) -> str:
    width = len(str(epochs))
    mark = " *" if r.get("best") else ""
    return (f"epoch {r['epoch']:>{width}}/{epochs}  train loss {r['train_loss']:.4f} acc {r['train_acc']:.4f}  "
            f"val loss {r['val_loss']:.4f} acc {r['val_acc']:.4f}  lr {r['lr']:.2e}  "
            f"{r['images_per_s']:,.0f} img/s  {r['epoch_s']:.1f}s  {device}{mark}")
