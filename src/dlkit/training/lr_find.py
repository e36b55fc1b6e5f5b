"""The LR finder: an exponential learning-rate ramp on a copy of the model, the loss against the rate, a suggestion.

As fastai's and Lightning's: the rate grows from `start` to `end` over `steps` training steps (cycling through the
training batches) and the ramp stops once the smoothed loss diverges, past 4x its best. The suggestion is the rate
of steepest descent of the smoothed loss (see `suggest`). The model and data are built exactly as `dlkit train`
builds them, by a Trainer set up in a temporary folder; the ramp trains a deep copy, so no weights are kept.
"""
from __future__ import annotations

import copy
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from ..config import TrainConfig, make_config
from ..errors import require
from ..track.console import Console

BETA = 0.8        # loss smoothing (exponential average, bias-corrected): a lag of ~4 steps, a third of a decade
DIVERGED = 4.0    # the ramp stops once the smoothed loss exceeds this multiple of its best
SKIP_START = 0.1  # the first tenth of the ramp is too slow to move the loss: never suggested from there
METHOD = "steepest descent"


@dataclass
class LRFinderResult:
    """The ramp as run: rates, raw and smoothed losses, why it stopped, and the suggested rate."""

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    method: str
    stopped: str
    plot_path: Path | None = None
    prepared: Any = field(default=None, repr=False)  # the finder's data, read and decoded: the run reuses it

    @property
    def min_loss_lr(self) -> float:
        """The rate at the lowest smoothed loss."""
        return self.lrs[min(range(len(self.smoothed)), key=self.smoothed.__getitem__)]

    def __repr__(self) -> str:
        return (f"LRFinderResult(suggestion {self.suggestion:.2g} ({self.method}), {len(self.lrs)} steps, "
                f"{self.stopped}, plot {self.plot_path})")

    def _repr_html_(self) -> str:
        """In a notebook: the suggestion and the loss-against-rate picture."""
        from ..track import html as h

        return h.page(f"LR finder: suggested {self.suggestion:.2g} ({self.method})",
                      f"<p>{h.esc(self.stopped)}; lowest smoothed loss at {self.min_loss_lr:.2g}</p>",
                      h.figure_img(self.figure(), "LR finder"))

    def plot(self, path: str | Path) -> Path:
        """A PNG of the loss against the rate (log scale), the suggestion marked."""
        from ..track import figures

        self.plot_path = figures.save(self.figure(), Path(path))
        return self.plot_path

    def figure(self):
        """The loss against the rate (log scale), the suggestion marked: a matplotlib Figure."""
        from ..track import figures

        fig, ax = figures.subplots(figsize=(6, 4))
        ax.plot(self.lrs, self.losses, color="C0", alpha=0.3, lw=1, label="loss")
        ax.plot(self.lrs, self.smoothed, color="C0", lw=2, label=f"smoothed (beta {BETA})")
        ax.axvline(self.suggestion, color="C3", ls="--", lw=1.2,
                   label=f"suggested {self.suggestion:.2g} ({self.method})")
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss", title="LR finder")
        top = max(self.smoothed[0], min(self.smoothed) * DIVERGED)  # the raw loss of the last steps can dwarf the rest
        ax.set_ylim(min(min(self.losses), min(self.smoothed)) * 0.95, top * 1.05)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict[str, Any]:
        return {"suggestion": self.suggestion, "method": self.method, "stopped": self.stopped,
                "min_loss_lr": self.min_loss_lr, "steps": len(self.lrs), "plot": str(self.plot_path or "") or None,
                "lrs": self.lrs, "losses": self.losses, "smoothed": self.smoothed}


def lr_find(config: str | Path | None = None, *, start: float = 1e-7, end: float = 10.0, steps: int = 100,
            out: str | Path | None = "lr_find.png", quiet: bool = False, log: TextIO | None = None,
            **overrides: Any) -> LRFinderResult:
    """Run the LR finder on the model and data that `dlkit.train` with the same arguments would train.

    Args:
        config: optional YAML file of TrainConfig fields; keyword arguments override it.
        start, end: the first and last learning rate of the exponential ramp.
        steps: training steps of the ramp (it stops earlier when the loss diverges).
        out: where the PNG of loss against rate is written (None: no plot).
        quiet, log: as for dlkit.train.
    Returns:
        LRFinderResult, with .suggestion (the rate of steepest descent), .lrs, .losses, .smoothed and .plot_path.
    Raises:
        UserError: for bad input, before any work starts.
    Example:
        dlkit.lr_find(data="digits", model="lenet-modern").suggestion
    """
    check_ramp(start, end, steps)
    cfg = make_config({k: v for k, v in overrides.items() if k != "lr"}, config)
    result = find_lr(cfg, Console(quiet=quiet, stream=log), start, end, steps)
    if out is not None:
        result.plot(out)
    return result


def check_ramp(start: float, end: float, steps: int) -> None:
    require(0 < start < end, f"the LR finder ramps from --start to a larger --end, both positive (got {start:g} to "
                             f"{end:g}); try --start 1e-7 --end 10")
    require(steps >= 10, f"--steps must be at least 10 for a curve worth reading (got {steps}); try 100")


def auto_lr(cfg: TrainConfig, console: Console, **objects: Any) -> tuple[TrainConfig, LRFinderResult]:
    """`--lr auto`: the config with the LR finder's suggestion as its learning rate, printed, and the finder's result
    (its `prepared` data is the run's too). `objects`: the learner's own model or Dataset objects, as dlkit.train
    hands them to the Trainer."""
    from .distributed import is_main_process

    result = find_lr(cfg, Console(quiet=True), **objects)
    if is_main_process():  # under DDP every rank ran the finder and took rank 0's rate; rank 0 alone speaks
        console.print(f"lr auto: {result.suggestion:.2g} (LR finder, {result.method}; its plot: lr_find.png in the run)")
    return replace(cfg, lr=float(f"{result.suggestion:.2g}")), result


def find_lr(cfg: TrainConfig, console: Console, start: float = 1e-7, end: float = 10.0, steps: int = 100,
            **objects: Any) -> LRFinderResult:
    """Set up a Trainer as `dlkit train` would (in a temporary run folder, deleted after); ramp a copy of its model."""
    from .trainer import Trainer

    with tempfile.TemporaryDirectory(prefix="dlkit-lr-find-") as tmp:
        probe = replace(cfg, lr=start, out=str(Path(tmp) / "run"), tensorboard=False, report=False)
        trainer = Trainer(probe, console, **{k: v for k, v in objects.items() if v is not None}).setup()
        lrs, losses, stopped = ramp(trainer, start, end, steps)
        smoothed = smooth(losses)
        lr = suggest(lrs, smoothed)
        dist = getattr(trainer, "dist", None)  # under DDP each rank ramped on its own shard: all take rank 0's rate
        lr = dist.agree(lr) if dist is not None else lr
    console.print(f"LR finder: {len(lrs)} steps from {lrs[0]:.1e} to {lrs[-1]:.1e} ({stopped}); suggested {lr:.2g} "
                  f"({METHOD} of the smoothed loss)")
    return LRFinderResult(lrs, losses, smoothed, lr, METHOD, stopped, prepared=trainer.data)


def ramp(trainer, start: float, end: float, steps: int) -> tuple[list[float], list[float], str]:
    """Train a deep copy of the trainer's model for `steps` steps, the rate growing exponentially from start to end.

    Returns the rates and raw losses of the steps taken, and why the ramp stopped.
    """
    import torch

    from .optim import make_optimizer

    cfg, parts = trainer.cfg, trainer.parts
    model = copy.deepcopy(trainer.model)  # the copy learns; the trainer's model keeps its initial weights
    model.train()
    optimizer = make_optimizer(model, replace(cfg, lr=start))
    lrs: list[float] = []
    losses: list[float] = []
    average, best = 0.0, math.inf
    for i, (inputs, targets) in zip(range(steps), _endless(trainer.train_batches)):
        lr = start * (end / start) ** (i / (steps - 1))
        for group in optimizer.param_groups:  # each group keeps its rate relative to --lr (muon's SGD groups)
            group["lr"] = lr * group.get("lr_scale", 1.0)
        with parts.autocast():
            loss = parts.loss_fn(model(parts.inputs(inputs, train=True)), targets)
        value = float(loss.detach())  # one sync per step: the ramp must see each loss to stop in time
        if not math.isfinite(value):
            return lrs, losses, f"stopped at {lr:.1e}: the loss became {value}"
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad:
            torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        optimizer.step()
        lrs.append(lr)
        losses.append(value)
        average = BETA * average + (1 - BETA) * value
        smoothed = average / (1 - BETA ** (i + 1))
        best = min(best, smoothed)
        if smoothed > DIVERGED * best:
            return lrs, losses, f"stopped at {lr:.1e}: the loss diverged"
    return lrs, losses, f"ran all {len(lrs)} steps"


def _endless(batches):
    """The training batches again and again (a new order each pass), for ramps longer than an epoch."""
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            return


def smooth(losses: list[float], beta: float = BETA) -> list[float]:
    """Exponential moving average with bias correction, as the ramp computes it step by step."""
    out, average = [], 0.0
    for i, value in enumerate(losses):
        average = beta * average + (1 - beta) * value
        out.append(average / (1 - beta ** (i + 1)))
    return out


def suggest(lrs: list[float], smoothed: list[float]) -> float:
    """The rate where the smoothed loss falls fastest per decade of rate, before its minimum.

    Why steepest descent: it is a rate at which the model is learning quickly and still stably, well below the
    divergence; the minimum itself sits at the edge of divergence (fastai's alternative, minimum/10, lands near it
    on most problems). Searched after the first tenth of the ramp, where the loss has not started moving yet, and
    no later than the minimum of the smoothed loss, beyond which the loss only rises.
    """
    import numpy as np

    y = np.asarray(smoothed, dtype=float)
    if len(y) < 3:
        return float(lrs[0])
    lowest = int(np.argmin(y))
    first = min(int(len(y) * SKIP_START), max(0, lowest - 1))
    window = slice(first, max(lowest + 1, first + 2))
    slope = np.gradient(y, np.log10(np.asarray(lrs, dtype=float)))[window]  # loss change per decade
    return float(lrs[first + int(np.argmin(slope))])
