"""Console output: a tqdm bar per epoch on a terminal, one plain line per epoch everywhere, a closing summary."""
from __future__ import annotations

import sys
import time
from typing import Any, TextIO


class Console:
    """Prints to `stream` (stdout, or stderr when stdout carries --json). quiet prints nothing but warnings;
    warnings=False not even those (a DDP rank other than 0: rank 0 says them once)."""

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, warnings: bool = True):
        self.quiet, self.warnings = quiet, warnings
        self.stream = stream or sys.stdout

    def print(self, text: str) -> None:
        if not self.quiet:
            print(text, file=self.stream, flush=True)

    def warn(self, text: str) -> None:
        """Data left out is not chatter: shown under quiet too, on stderr (so stdout stays --json's alone)."""
        if self.warnings:
            print(f"warning: {text}", file=sys.stderr if self.quiet else self.stream, flush=True)

    def note(self, text: str) -> None:
        """A note, or a warning when it is one (errors.DataWarning)."""
        from ..errors import DataWarning

        if isinstance(text, DataWarning):
            self.warn(text)
        else:
            self.print(f"note: {text}")


class ConsoleProgress:
    """Callback. On a terminal: an epochs bar with a nested batches bar (ETA, loss, images/s). Elsewhere (log files,
    CI): a plain progress line every `interval` seconds, no carriage returns. Always: one summary line per epoch."""

    def __init__(self, console: Console, interval: float = 30.0, lines: bool = True):
        """lines=False: another callback shows the progress and the epochs (the notebook's live display), so the
        bars and lines would say it twice."""
        self.console, self.interval, self.lines = console, interval, lines
        self.use_bars = lines and not console.quiet and console.stream.isatty()
        self.epochs_bar = self.bar = None

    def on_fit_start(self, trainer) -> None:
        if self.use_bars:
            from tqdm.auto import tqdm

            self.epochs_bar = tqdm(total=trainer.cfg.epochs, initial=trainer.epoch, desc="epochs", unit="epoch",
                                   position=0, file=self.console.stream, dynamic_ncols=True)

    def on_epoch_start(self, trainer) -> None:
        self.started = self.last_line = time.perf_counter()
        self.seen = 0
        if self.use_bars:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=trainer.steps_per_epoch, initial=trainer.step_in_epoch, leave=False, position=1,
                            desc=f"epoch {trainer.epoch}/{trainer.cfg.epochs}", file=self.console.stream,
                            unit="step", dynamic_ncols=True)

    def on_batch_end(self, trainer, batch_size: int, loss) -> None:
        self.seen += batch_size
        now = time.perf_counter()
        rate = self.seen / max(1e-9, now - self.started)
        if self.bar is not None:
            self.bar.update(1)
            if self.bar.n % 10 == 1:  # reading the loss syncs the device: not every step
                self.bar.set_postfix(loss=f"{float(loss):.4f}", img_s=f"{rate:,.0f}", refresh=False)
        elif self.lines and now - self.last_line >= self.interval and not self.console.quiet:
            self.last_line = now
            done, total = trainer.step_in_epoch, trainer.steps_per_epoch
            eta = (total - done) * (now - self.started) / max(1, done)
            self.console.print(f"  epoch {trainer.epoch}/{trainer.cfg.epochs} step {done}/{total} ({done / total:.0%}) "
                               f"loss {float(loss):.4f}  {rate:,.0f} {trainer.modality.unit}/s  eta {eta:.0f}s")

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        line = format_epoch(record, trainer.cfg.epochs, trainer.device_label, trainer.task.headline(record),
                            trainer.modality.unit)
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.epochs_bar is not None:
            self.epochs_bar.update(1)
            self.epochs_bar.set_postfix({f"best_{trainer.monitor}": f"{trainer.best_value:.4g}"})
            self.epochs_bar.write(line, file=self.console.stream)
        elif self.lines:
            self.console.print(line)

    def on_fit_end(self, trainer, summary: dict[str, Any]) -> None:
        self._close()

    def on_exception(self, trainer, error: BaseException) -> None:
        self._close()

    def _close(self) -> None:
        for bar in (self.bar, self.epochs_bar):
            if bar is not None:
                bar.close()
        self.bar = self.epochs_bar = None


def format_epoch(r: dict[str, Any], epochs: int, device: str, metrics: str, unit: str = "img") -> str:
    """One line per epoch; `metrics` is the task's own account of the losses and metrics."""
    width = len(str(epochs))
    mark = " *" if r.get("best") else ""
    seconds = f"{r['epoch_s']:.1f}s" if r["epoch_s"] >= 0.05 else f"{r['epoch_s'] * 1000:.0f}ms"
    rate = f"{r['images_per_s']:,.0f}" if r["epoch_s"] >= MIN_TIMED_S else "-"
    return (f"epoch {r['epoch']:>{width}}/{epochs}  {metrics}  lr {r['lr']:.2e}  "
            f"{rate} {unit}/s  {seconds}  {device}{mark}")


MIN_TIMED_S = 0.1  # an epoch shorter than this shows no speed: a few ms of its own swung rows/s 10x between epochs
