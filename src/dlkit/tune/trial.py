"""One sweep trial: a normal training run (or a K-fold cross-validation) in SWEEP_DIR/trial-NNN, scored by the
monitored validation metric, reported to Optuna's pruner after every epoch."""
from __future__ import annotations

import math
import time
from typing import Any

from ..errors import UserError
from ..track.console import Console
from .space import apply_params


class TrialReporter:
    """Trainer callback: each epoch's monitored validation metric goes to the trial; when the pruner says so, the
    run stops after this epoch (its folder is a normal, shorter run) and the trial is marked pruned."""

    def __init__(self, trial, monitor: str, maximize: bool):
        self.trial, self.monitor, self.maximize = trial, monitor, maximize
        self.pruned_at: float | None = None
        self.diverged = False

    def on_fit_start(self, trainer) -> None:
        if (trainer.monitor, trainer.maximize) != (self.monitor, self.maximize):  # the study's direction rests on it
            raise RuntimeError(f"the sweep planned for {self.monitor} (maximize={self.maximize}) but the run "
                               f"monitors {trainer.monitor} (maximize={trainer.maximize})")

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        value = record[self.monitor]
        self.trial.report(value, step=int(record["epoch"]))
        if self.trial.should_prune():
            self.pruned_at = record["epoch"]
            trainer.should_stop = True
            trainer.stopped = {"reason": "pruned by the sweep: below the median of finished trials",
                               "value": value, "epoch": record["epoch"], "step": trainer.step}
            trainer.console.print(f"pruned: {self.monitor} {value:.4g} after epoch {record['epoch']:g} is worse "
                                  "than the median of the finished trials there")

    def on_exception(self, trainer, error: BaseException) -> None:
        # A rate too high for the model makes the loss NaN and the Trainer stop with a UserError: a result of the
        # trial's settings (a very bad one), not the user's mistake, so the trial counts as pruned.
        from ..training.loop import epoch_metrics

        totals = getattr(trainer, "totals", None)
        self.diverged = isinstance(error, UserError) and totals is not None and \
            not math.isfinite(epoch_metrics(totals)["loss"])


def objective(plan, console: Console, worker: int, trial) -> float:
    """Optuna's objective: take a slot, draw the trial's values, train, return the monitored metric."""
    import optuna

    from .study import StudyFull, has_slot, owner

    trial.set_user_attr("owner", owner())  # first: a kill from here on leaves a trial this host can fail later
    if not has_slot(trial, plan.trials):
        raise StudyFull(f"trial {trial.number}: the study already has --trials {plan.trials}")
    values = {p.name: p.suggest(trial) for p in plan.params}
    run_dir = plan.dir / f"trial-{trial.number:03d}"
    trial.set_user_attr("run_dir", str(run_dir))
    who = f"[worker {worker}] " if plan.jobs > 1 else ""
    console.print(f"{who}== trial {trial.number}: {format_values(values)} ==")
    overrides = {**apply_params(plan.overrides, plan.dicts, values), "out": str(run_dir)}
    started = time.perf_counter()
    try:
        value = (_cross_validated if plan.cv else _trained)(plan, trial, overrides, console.stream)
    except optuna.TrialPruned as pruned:
        trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
        console.print(f"{who}trial {trial.number}: pruned ({pruned}) in {time.perf_counter() - started:.1f}s")
        raise
    trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
    console.print(f"{who}trial {trial.number}: {plan.monitor} {value:.4g} in {time.perf_counter() - started:.1f}s")
    return value


def _trained(plan, trial, overrides: dict[str, Any], log) -> float:
    import optuna

    from ..api import train

    reporter = (TrialReporter if plan.pruner != "none" else _Watch)(trial, plan.monitor, plan.maximize)
    quiet = plan.quiet or plan.jobs > 1  # parallel trials print one line each, not interleaved epochs
    try:
        run = train(plan.config, quiet=quiet, log=log, callbacks=[reporter], **overrides)
    except UserError:
        if reporter.diverged:
            trial.set_user_attr("diverged", True)
            raise optuna.TrialPruned("the training loss became NaN or infinite") from None
        raise
    trial.set_user_attr("epochs", run.summary["epochs"])
    if reporter.pruned_at is not None:
        raise optuna.TrialPruned(f"after epoch {reporter.pruned_at:g}")
    value = run.summary["best_value"]
    if value is None or not math.isfinite(value):
        trial.set_user_attr("diverged", True)
        raise optuna.TrialPruned(f"{plan.monitor} is {value}")
    return float(value)


class _Watch(TrialReporter):
    """--pruner none: the intermediate values are still recorded (Optuna's plots show them), nothing is pruned."""

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        self.trial.report(record[self.monitor], step=int(record["epoch"]))


def _cross_validated(plan, trial, overrides: dict[str, Any], log) -> float:
    """--cv K: the mean over K folds of each fold's best monitored metric (cross_validate runs the folds whole,
    so these trials are not pruned)."""
    from ..cv import cross_validate

    out = overrides.pop("out")
    summary = cross_validate(plan.config, folds=plan.cv, out=out, quiet=plan.quiet or plan.jobs > 1, log=log,
                             **overrides)
    if plan.monitor not in summary["mean"]:
        raise UserError(f"--cv scores trials by {plan.monitor}, which cross-validation does not report; "
                        f"use --monitor with one of {', '.join(summary['mean'])}")
    trial.set_user_attr("folds", [r[plan.monitor] for r in summary["folds"]])
    return float(summary["mean"][plan.monitor])


def format_values(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
