"""Live training progress in a Jupyter cell: one display, updated in place, as d2l's Animator and fastai do.

It shows a progress bar within the epoch (loss, speed, time left), the table of finished epochs and the loss and
metric curves redrawn as they grow. A trainer callback, added by dlkit.train only under a Jupyter kernel and not
with quiet=True (or DLKIT_LIVE=0); elsewhere nothing changes. IPython is imported only when it is already loaded.

Cost: the training thread only hands the newest state to a display thread, at most every INTERVAL seconds and at
each epoch's end. That thread builds the HTML and sends it (ipykernel's publish waits for its output thread: ~0.1 s
a message on a loaded machine, measured, which on the training thread cost ~20% of the steps), and draws the
curves (~0.2 s of matplotlib) within FIGURE_BUDGET of the time since the start: a newer request replaces an older one, and the
last picture is drawn when training ends. benchmarks/notebook_live.py measures the same run with the display on
and off; LiveDisplay.cost() is the display's own account.
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
FIGURE_BUDGET = 0.01    # the most of the time since training started that the display thread may have spent drawing
                        # (one picture ~0.2 s of CPU: the first waits ~20 s, and each after it as long as it cost);
                        # the last picture is drawn at once when training ends
PICTURE_CPU_S = 0.2     # what a picture is expected to cost before one has been drawn (measured on a quiet 2-core CPU)


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


class _Shower:
    """The display thread: sends the newest view (older ones are dropped unseen) and draws the curves."""

    def __init__(self, handle, name: str):
        self.handle, self.name, self.curves = handle, name, ""
        self._lock, self._wake, self._idle = threading.Lock(), threading.Event(), threading.Event()
        self._view: dict | None = None
        self._job: tuple | None = None        # (history, step_losses) to draw
        self._stopping = False
        self._started = time.perf_counter()
        self._picture_cpu_s = PICTURE_CPU_S    # what the next picture should cost: the last one's figure
        self._idle.set()                       # nothing to send yet
        self.sent = self.draws = 0
        self.failed = False
        self.draw_cpu_s = self.send_cpu_s = self.end_draw_cpu_s = 0.0
        self._thread = threading.Thread(target=self._loop, name="dlkit-live-display", daemon=True)
        self._thread.start()

    def show(self, view: dict, curves: tuple | None = None) -> None:
        """From the training thread: the newest view, and the data to redraw the curves from, if they grew."""
        with self._lock:
            self._view = view
            self._job = curves or self._job
            self._idle.clear()
        self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Wait until the newest view is sent (tests; a last look before the cell ends); False if it was not."""
        return self._idle.wait(timeout)

    def finish(self, view: dict, curves: tuple | None, timeout: float = 60.0) -> None:
        """The last view, with the curves drawn now whatever the budget; returns once it is sent."""
        with self._lock:
            self._view, self._job, self._stopping = view, curves or self._job, True
        self._wake.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        last = None
        while True:
            with self._lock:
                waiting = self._job is not None and not self._stopping
            rest = self.draw_after() - time.perf_counter()
            self._wake.wait(rest if waiting and rest > 0 else None)
            self._wake.clear()
            with self._lock:
                stopping, job = self._stopping, self._job
                draw = job is not None and (stopping or time.perf_counter() >= self.draw_after())
                view, self._view = self._view, None
                if draw:
                    self._job = None
            if draw:
                self._draw(*job)
                view = view or last  # the new picture, under the newest view
            if view is not None:
                self._send(view)
                last = view
            with self._lock:
                if self._view is None:
                    self._idle.set()
            if stopping and self._job is None and self._view is None:
                return

    def draw_after(self) -> float:
        """The perf_counter time before which no picture is drawn: when the time since the start pays, at
        FIGURE_BUDGET, for the pictures drawn and the next. So a short run (a 5 s epoch) gets its one picture at the
        end instead of a mid-run one costing it 6%, and a long one a picture every ~20 s."""
        return self._started + (self.draw_cpu_s + self._picture_cpu_s) / FIGURE_BUDGET

    def _draw(self, history: list, step_losses: list) -> None:
        from . import figures

        started = time.thread_time()  # this thread's CPU: under load the wall clock says little
        try:
            self.curves = h.figure_img(figures.curves_figure({self.name: history}, step_losses), "curves", dpi=72)
        except Exception as e:  # noqa: BLE001 - a picture that fails must not stop the training it shows
            self.curves = f"<p class='muted'>curves not drawn: {h.esc(e)}</p>"
        spent = time.thread_time() - started
        self.draws, self.draw_cpu_s = self.draws + 1, self.draw_cpu_s + spent
        if self._stopping:  # the last picture, drawn after the training steps (while the training thread waits)
            self.end_draw_cpu_s += spent
        self._picture_cpu_s = spent

    def _send(self, view: dict) -> None:
        if self.failed:
            return
        started = time.thread_time()
        try:
            self.handle.update(bundle(view, self.curves), raw=True)
            self.sent += 1
        except Exception as e:  # noqa: BLE001 - a display that fails must not stop the training it shows
            self.failed = True  # said once, then no more tries
            print(f"note: the live display stopped ({type(e).__name__}: {e}); training goes on", file=sys.stderr)
        self.send_cpu_s += time.thread_time() - started


def bundle(view: dict, curves: str) -> dict[str, str]:
    """The display as HTML, and a line of text for frontends without HTML (nbconvert to text, a console)."""
    from .notebook import epochs_table

    status = view["status"]
    table = epochs_table(view["history"]) if view["history"] else ""
    html = h.page(view["title"], f"<p class='muted'>{h.esc(view['where'])}</p><p>{h.esc(status)}</p>", table, curves)
    text = h.strip_tags(status) if isinstance(status, h.Raw) else status
    return {"text/html": html, "text/plain": f"{view['title']}: {text}"}


class LiveDisplay:
    """Callback: the notebook display of a training run (progress, epochs table, curves), updated in place."""

    shows_epochs = True  # the console's epoch lines and progress would repeat it below the display

    def __init__(self, interval: float | None = None, figure_interval: float | None = None):
        self.interval = INTERVAL if interval is None else interval
        self.figure_interval = FIGURE_INTERVAL if figure_interval is None else figure_interval
        self.shower: _Shower | None = None
        self.hooks_s = 0.0  # the training thread's seconds spent on the display during training
        self.end_s = 0.0    # and after the last step, waiting for the last picture

    # ---- hooks -----------------------------------------------------------------------------------------------

    def on_fit_start(self, trainer) -> None:
        if not trainer.dist.is_main:
            return
        from IPython.display import display

        cfg = trainer.cfg
        self.title = f"{cfg.model} on {cfg.data}: {cfg.epochs} epochs x {trainer.steps_per_epoch} steps"
        self.where = f"{trainer.device_label} | {trainer.run_dir}"
        self.history: list[dict[str, Any]] = list(trainer.history)
        self.shown_at = self.asked_at = time.perf_counter()
        self.asked_losses = 0
        handle = display(bundle(self._view("starting"), ""), raw=True, display_id=True)
        self.shower = _Shower(handle, trainer.run_dir.name)
        if self.history:  # a resumed run: its earlier epochs at once
            self.shower.show(self._view("resumed"), self._curves(trainer, self.shown_at))

    def on_epoch_start(self, trainer) -> None:
        self.epoch_started, self.seen = time.perf_counter(), 0

    def on_batch_end(self, trainer, batch_size: int, loss) -> None:
        if self.shower is None:
            return
        self.seen += batch_size
        now = time.perf_counter()
        if now - self.shown_at < self.interval:
            return
        grew = len(trainer.step_losses) > self.asked_losses and now - self.asked_at >= self.figure_interval
        status = h.Raw(self._progress(trainer, now, float(loss)))  # float(loss): a device sync, only here
        self.shower.show(self._view(status), self._curves(trainer, now) if grew else None)
        self.shown_at = now
        self.hooks_s += time.perf_counter() - now

    def on_validation_end(self, trainer, record: dict[str, Any]) -> None:
        if self.shower is not None:
            now = time.perf_counter()
            self.history = list(trainer.history)
            self.shower.show(self._view(f"validated at step {trainer.step}"), self._curves(trainer, now))
            self.hooks_s += time.perf_counter() - now

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        if self.shower is None:
            return
        now = time.perf_counter()
        self.history = list(trainer.history)
        status = (f"epoch {trainer.epoch}/{trainer.cfg.epochs} done: {trainer.task.headline(record)}"
                  f"{'  (best so far)' if record.get('best') else ''}")
        self.shower.show(self._view(status), self._curves(trainer, now))
        self.shown_at = now
        self.hooks_s += time.perf_counter() - now

    def on_fit_end(self, trainer, summary: dict[str, Any]) -> None:
        best = summary.get("best_value")
        self._close(trainer, f"finished: best {summary.get('monitor')} {h.number(best)} at epoch "
                             f"{summary.get('best_epoch')} of {summary.get('epochs')}, {summary.get('wall_s')}s"
                    if best is not None else "finished")

    def on_exception(self, trainer, error: BaseException) -> None:
        self._close(trainer, f"stopped at epoch {trainer.epoch}, step {trainer.step}: {type(error).__name__} {error}")

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the display shows the newest state (tests use it to count updates, not a race)."""
        return self.shower.flush(timeout) if self.shower is not None else True

    def cost(self) -> dict[str, float]:
        """What this display cost: updates sent and pictures drawn; the training thread's seconds on it during
        training, and after it (end_s: the wait for the last picture); the display thread's CPU seconds sending and
        drawing, and of that drawing, the last picture's (end_draw_cpu_s: after the training steps)."""
        shower = self.shower or getattr(self, "_done", None)
        if shower is None:
            return {"updates": 0, "draws": 0, "hooks_s": 0.0, "end_s": 0.0, "send_cpu_s": 0.0, "draw_cpu_s": 0.0,
                    "end_draw_cpu_s": 0.0}
        return {"updates": shower.sent, "draws": shower.draws, "hooks_s": round(self.hooks_s, 4),
                "end_s": round(self.end_s, 4), "send_cpu_s": round(shower.send_cpu_s, 4),
                "draw_cpu_s": round(shower.draw_cpu_s, 4), "end_draw_cpu_s": round(shower.end_draw_cpu_s, 4)}

    # ---- what is shown ---------------------------------------------------------------------------------------

    def _view(self, status: str) -> dict[str, Any]:
        return {"title": self.title, "where": self.where, "status": status, "history": self.history}

    def _curves(self, trainer, now: float) -> tuple | None:
        """The data to redraw the curves from (copies: training goes on while they are drawn)."""
        self.asked_at, self.asked_losses = now, len(trainer.step_losses)
        return (list(self.history), list(trainer.step_losses)) if self.history or trainer.step_losses else None

    def _progress(self, trainer, now: float, loss: float) -> str:
        done, total = trainer.step_in_epoch, trainer.steps_per_epoch
        elapsed = now - self.epoch_started
        rate = self.seen / max(elapsed, 1e-9)
        left = (total - done) * elapsed / max(done, 1)
        return (f"<progress value='{done}' max='{total}' style='width:300px'></progress> "
                f"epoch {trainer.epoch}/{trainer.cfg.epochs}, step {done}/{total} ({done / max(total, 1):.0%})"
                f"  loss {loss:.4f}  {rate:,.0f} {h.esc(trainer.modality.unit)}/s  {left:.0f}s left in the epoch")

    def _close(self, trainer, status: str) -> None:
        if self.shower is None:
            return
        started = time.perf_counter()
        self.history = list(trainer.history)
        self.shower.finish(self._view(status), self._curves(trainer, started))  # the last picture: every epoch
        self._done, self.shower = self.shower, None
        self.end_s += time.perf_counter() - started
