"""Live training progress in a Jupyter cell: one display, updated in place, as d2l's Animator and fastai do.

It shows a progress bar within the epoch (loss, speed, time left), the table of finished epochs and the loss and
metric curves redrawn as they grow. A trainer callback, added by dlkit.train only under a Jupyter kernel and not
with quiet=True (or DLKIT_LIVE=0); elsewhere nothing changes. IPython is imported only when it is already loaded.

Cost: the display is updated at most every INTERVAL seconds from the training thread (a string and one message);
the curves, the heavy part (~0.1 s of matplotlib), are drawn on a side thread at most every FIGURE_INTERVAL seconds
and at each epoch's end. benchmarks/notebook_live.py measures the same run with the display on and off.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from . import html as h

INTERVAL = 0.5          # seconds between display updates: two a second at most
FIGURE_INTERVAL = 2.0   # seconds between requests to redraw the curves within an epoch (and one at each epoch's end)
FIGURE_BUDGET = 0.01    # the most of the time the drawing thread may spend drawing (one draw ~0.15 s of CPU: then
                        # the next waits ~15 s); the last picture is drawn at once when training ends


def in_notebook() -> bool:
    """True under a Jupyter kernel (not a terminal IPython, whose display is text). Never imports IPython."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and getattr(shell, "kernel", None) is not None


def with_live(callbacks: list | None, quiet: bool) -> list:
    """The caller's callbacks, plus a LiveDisplay when training runs in a notebook and may show things."""
    callbacks = list(callbacks or [])
    if quiet or os.environ.get("DLKIT_LIVE", "1") == "0" or not in_notebook() \
            or any(isinstance(c, LiveDisplay) for c in callbacks):
        return callbacks
    return [*callbacks, LiveDisplay()]


class _Painter:
    """Draws the curves on a side thread: the newest request wins, older ones are dropped unseen. After each draw
    it rests so that drawing stays within FIGURE_BUDGET of the time: on a machine whose cores all train, a thread
    drawing beside them slows every step (measured: redrawing every 2 s cost an 8 s Fashion-MNIST epoch ~10%)."""

    def __init__(self, name: str):
        self.name, self.html = name, ""
        self._lock, self._wake, self._hurry = threading.Lock(), threading.Event(), threading.Event()
        self._job: tuple | None = None
        self._stopping = False
        self.draws, self.cpu_s = 0, 0.0  # pictures drawn, and this thread's CPU seconds drawing them
        self._thread = threading.Thread(target=self._loop, name="dlkit-live-curves", daemon=True)
        self._thread.start()

    def submit(self, history: list, step_losses: list) -> None:
        with self._lock:
            self._job = (history, step_losses)
        self._wake.set()

    def finish(self, timeout: float = 30.0) -> str:
        """Draw what is pending, stop the thread; the last picture's HTML."""
        self._stopping = True
        self._hurry.set()
        self._wake.set()
        self._thread.join(timeout)
        return self.html

    def _loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            with self._lock:
                job, self._job = self._job, None
            if job is not None:
                started = time.thread_time()  # this thread's CPU: under load the wall clock says little
                self.html = self._draw(*job)
                spent = time.thread_time() - started
                self.draws, self.cpu_s = self.draws + 1, self.cpu_s + spent
                self._hurry.wait(spent * (1 / FIGURE_BUDGET - 1))
            elif self._stopping:
                return

    def _draw(self, history: list, step_losses: list) -> str:
        from . import figures

        try:
            return h.figure_img(figures.curves_figure({self.name: history}, step_losses), "curves", dpi=72)
        except Exception as e:  # noqa: BLE001 - a picture that fails must not stop the training it shows
            return f"<p class='muted'>curves not drawn: {h.esc(e)}</p>"


class LiveDisplay:
    """Callback: the notebook display of a training run (progress, epochs table, curves), updated in place."""

    def __init__(self, interval: float | None = None, figure_interval: float | None = None):
        self.interval = INTERVAL if interval is None else interval
        self.figure_interval = FIGURE_INTERVAL if figure_interval is None else figure_interval
        self.handle = self.painter = None
        self.updates, self.hooks_s = 0, 0.0  # display updates sent; the training thread's seconds spent on them

    # ---- hooks -----------------------------------------------------------------------------------------------

    def on_fit_start(self, trainer) -> None:
        if not trainer.dist.is_main:
            return
        from IPython.display import display

        cfg = trainer.cfg
        self.title = f"{cfg.model} on {cfg.data}: {cfg.epochs} epochs x {trainer.steps_per_epoch} steps"
        self.where = f"{trainer.device_label} | {trainer.run_dir}"
        self.history: list[dict[str, Any]] = list(trainer.history)
        self.status, self.loss = "starting", None
        self.shown_at = self.drawn_at = time.perf_counter()
        self.drawn_losses = 0
        self.painter = _Painter(trainer.run_dir.name)
        self.handle = display(self._bundle(), raw=True, display_id=True)
        if self.history:  # a resumed run: its earlier epochs at once
            self.painter.submit(list(self.history), list(trainer.step_losses))

    def on_epoch_start(self, trainer) -> None:
        self.epoch_started, self.seen = time.perf_counter(), 0

    def on_batch_end(self, trainer, batch_size: int, loss) -> None:
        if self.handle is None:
            return
        self.seen += batch_size
        now = time.perf_counter()
        if now - self.shown_at < self.interval:
            return
        self.loss = float(loss)  # a device sync, only when the display is updated
        if len(trainer.step_losses) > self.drawn_losses and now - self.drawn_at >= self.figure_interval:
            self._paint(trainer, now)
        self.status = h.Raw(self._progress(trainer, now))
        self._show(now)
        self.hooks_s += time.perf_counter() - now

    def on_validation_end(self, trainer, record: dict[str, Any]) -> None:
        if self.handle is not None:
            self.history = list(trainer.history)
            self._paint(trainer, time.perf_counter())

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        if self.handle is None:
            return
        self.history = list(trainer.history)
        now = time.perf_counter()
        self._paint(trainer, now)
        self.status = (f"epoch {trainer.epoch}/{trainer.cfg.epochs} done: {trainer.task.headline(record)}"
                       f"{'  (best so far)' if record.get('best') else ''}")
        self._show(now)
        self.hooks_s += time.perf_counter() - now

    def on_fit_end(self, trainer, summary: dict[str, Any]) -> None:
        if self.handle is None:
            return
        best = summary.get("best_value")
        self.status = (f"finished: best {summary.get('monitor')} {h.number(best)} at epoch {summary.get('best_epoch')}"
                       f" of {summary.get('epochs')}, {summary.get('wall_s')}s" if best is not None else "finished")
        self._close()

    def on_exception(self, trainer, error: BaseException) -> None:
        if self.handle is None:
            return
        self.status = f"stopped at epoch {trainer.epoch}, step {trainer.step}: {type(error).__name__} {error}"
        self._close()

    # ---- drawing ---------------------------------------------------------------------------------------------

    def _paint(self, trainer, now: float) -> None:
        self.drawn_at, self.drawn_losses = now, len(trainer.step_losses)
        if self.history or trainer.step_losses:
            self.painter.submit(list(self.history), list(trainer.step_losses))

    def _progress(self, trainer, now: float) -> str:
        done, total = trainer.step_in_epoch, trainer.steps_per_epoch
        elapsed = now - self.epoch_started
        rate = self.seen / max(elapsed, 1e-9)
        left = (total - done) * elapsed / max(done, 1)
        return (f"<progress value='{done}' max='{total}' style='width:300px'></progress> "
                f"epoch {trainer.epoch}/{trainer.cfg.epochs}, step {done}/{total} ({done / max(total, 1):.0%})"
                f"  loss {self.loss:.4f}  {rate:,.0f} {h.esc(trainer.modality.unit)}/s  {left:.0f}s left in the epoch")

    def _html(self) -> str:
        from .notebook import epochs_table

        status = h.esc(self.status)  # a progress bar made here is Raw; messages are text
        table = epochs_table(self.history) if self.history else ""
        curves = self.painter.html if self.painter else ""
        return h.page(self.title, f"<p class='muted'>{h.esc(self.where)}</p><p>{status}</p>", table, curves)

    def _bundle(self) -> dict[str, str]:
        """The display's HTML, and a line of text for frontends without HTML (nbconvert to text, a console)."""
        text = h.strip_tags(self.status) if isinstance(self.status, h.Raw) else self.status
        return {"text/html": self._html(), "text/plain": f"{self.title}: {text}"}

    def _show(self, now: float) -> None:
        self.handle.update(self._bundle(), raw=True)
        self.shown_at = now
        self.updates += 1

    def cost(self) -> dict[str, float]:
        """What this display cost: updates sent, the training thread's seconds on them (the last picture's wait
        included), pictures drawn and the drawing thread's CPU seconds (benchmarks/notebook_live.py prints them)."""
        painter = self.painter
        return {"updates": self.updates, "hooks_s": round(self.hooks_s, 4), "draws": painter.draws if painter else 0,
                "draw_cpu_s": round(painter.cpu_s, 4) if painter else 0.0}

    def _close(self) -> None:
        started = time.perf_counter()
        self.painter.finish()  # the curves with every epoch, drawn before the last update
        self._show(time.perf_counter())
        self.hooks_s += time.perf_counter() - started
        self.handle = None
