"""Hyperparameter sweeps on Optuna: every trial a normal run folder, one study shared by processes and machines.

The study lives in its storage: by default an Optuna journal file in the sweep folder (safe for parallel processes on
one host, through its file lock), or a database given by URL (sqlite:///..., postgresql://...) that several machines
join. `trials` is the study's total over all processes: each trial takes a slot only if fewer than `trials` trials
numbered before it are complete, pruned or running, so parallel workers never overshoot. A trial left RUNNING by a
killed process on this host is marked failed when the sweep starts again, and its slot is run again.
"""
from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from ..config import TrainConfig, make_config
from ..errors import UserError, require
from ..track.console import Console
from .space import base_dicts, check_values, parse_params
from .study import (PRUNERS, STUDY_FILE, StudyFull, SweepPlan, fail_dead_trials, load_study, open_study,
                    quiet_optuna, taken, without_password)


def sweep(config: str | Path | None = None, *, params: dict[str, str] | list[str], trials: int = 20,
          out: str | Path | None = None, jobs: int = 1, storage: str | None = None, study_name: str | None = None,
          cv: int | None = None, pruner: str = "median", prune_startup: int = 5, prune_warmup: int = 0,
          quiet: bool = False, log: TextIO | None = None, **overrides: Any) -> dict[str, Any]:
    """Search hyperparameters with Optuna (TPE sampler, median pruner); each trial is a run folder in `out`.

    Args:
        config: optional YAML file of TrainConfig fields; keyword arguments override it (as for dlkit.train).
        params: what to search, {"lr": "loguniform:1e-4:1e-1", "model_args.dropout": "uniform:0:0.5"} or a list of
            "NAME=KIND:ARGS" strings; kinds: loguniform, uniform, int, logint, choice (see tune/space.py).
        trials: the study's total of complete and pruned trials, over every process that joins it.
        out: the sweep folder (required); running again with the same folder continues the study.
        jobs: worker processes on this machine, each with cores/jobs threads.
        storage: a database URL shared by several machines; default: a journal file in `out`.
        study_name: the study's name in the storage (default: the folder's name).
        cv: score each trial by K-fold cross-validation (the mean of the monitored metric; no pruning).
        pruner: median (stop a trial whose metric is below the median of finished trials at that epoch) or none.
        prune_startup, prune_warmup: trials finished, and epochs of a trial, before pruning starts.
    Returns:
        the sweep's summary: trial rows, the best trial, and the files written (trials.csv, best.yaml, plots).
    Raises:
        UserError: for bad input, before any trial starts. In a script, call it under `if __name__ == "__main__":`
        when jobs > 1 (the workers are new Python processes that import the script).
    Example:
        dlkit.sweep(data="digits", epochs=3, out="sweeps/digits", trials=20, params={"lr": "loguniform:1e-4:1e-1"})
    """
    require_optuna()
    plan = make_plan(config, params, trials, out, jobs, storage, study_name, cv, pruner, prune_startup, prune_warmup,
                     quiet, overrides)
    if log is sys.stderr:
        plan = replace(plan, stream="stderr")
    console = Console(quiet=quiet, stream=log)
    created = open_study(plan)
    console.print(f"sweep: {plan.trials} trials of {', '.join(p.text for p in plan.params)}; {plan.monitor} "
                  f"({'max' if plan.maximize else 'min'}imised); study {plan.study_name!r} in "
                  f"{without_password(plan.storage) or plan.dir / STUDY_FILE}; {plan.jobs} process(es)")
    if plan.jobs == 1:
        run_worker(plan, 0, created, log)
    else:
        _run_processes(plan, created)
    from ..track.results import SweepResult
    from .report import report

    return SweepResult(report(plan, console))  # a dict that shows itself in a notebook


def require_optuna() -> None:
    import importlib.util

    require(importlib.util.find_spec("optuna") is not None,
            "dlkit sweep runs on Optuna, which is not installed: pip install 'dlkit[sweep]' (or pip install optuna)")


def make_plan(config, params, trials, out, jobs, storage, study_name, cv, pruner, prune_startup, prune_warmup,
              quiet, overrides) -> SweepPlan:
    """Check everything a user can get wrong before any trial: the folder, the counts, every --param and its values."""
    require(out is not None, "dlkit sweep needs --out SWEEP_DIR, the folder holding the study and a run per trial "
                             "(the same --out continues the study)")
    require(isinstance(trials, int) and trials >= 1, f"--trials must be at least 1 (got {trials})")
    require(isinstance(jobs, int) and jobs >= 1, f"--jobs must be at least 1 (got {jobs})")
    require(cv is None or cv >= 2, f"--cv must be at least 2 folds (got {cv})")
    require(pruner in PRUNERS, f"--pruner must be one of {', '.join(PRUNERS)} (got {pruner!r})")
    require(prune_startup >= 0 and prune_warmup >= 0, "--prune-startup and --prune-warmup must be >= 0")
    require(storage is None or "://" in str(storage), f"--storage takes a database URL such as sqlite:///sweep.db or "
                                                      f"postgresql://user@host/db (got {storage!r})")
    require(isinstance(overrides.get("model", ""), str) and isinstance(overrides.get("data", ""), (str, Path)),
            "a sweep's trials build their model and data from names (they may run in other processes): pass "
            "model='NAME' or 'FILE.py:Class' and data='SPEC', not Python objects")
    folder = Path(out).expanduser().resolve()
    require(not (folder / "config.yaml").is_file(), f"{folder} is a run folder; give the sweep a folder of its own")
    space = parse_params(params)
    base_overrides = {k: v for k, v in overrides.items() if k not in ("out", "folds", "fold", "refit")}
    base = make_config(base_overrides, config)
    check_values(base, base_overrides, space, config)
    monitor = planned_monitor(base)
    config_path = str(Path(config).resolve()) if config else None
    return SweepPlan(folder, config_path, base_overrides, base_dicts(base), space, trials, storage,
                     study_name or folder.name, monitor, maximizes(monitor), base.seed, pruner, prune_startup,
                     prune_warmup, cv, jobs, quiet)


def planned_monitor(cfg: TrainConfig) -> str:
    """The validation metric the trials' Trainers will monitor, known before any runs (the study's direction)."""
    from ..data.modality import modality_for
    from ..tasks import TASKS

    if cfg.monitor:
        return cfg.monitor
    if modality_for(cfg.data).has_images:  # images are always classified
        return TASKS.get("classification").monitor
    from ..data.modality import open_table  # a table's task depends on its target column (read once, then cached)

    return TASKS.get(open_table(cfg.data, cfg.target, cfg.task, cfg.data_args).task).monitor


def maximizes(monitor: str) -> bool:
    """Whether a higher value of the metric is better; the rule the Trainer uses to pick `best`."""
    return any(word in monitor for word in ("acc", "r2", "f1"))


def run_worker(plan: SweepPlan, index: int, created: bool, log: TextIO | None = None) -> None:
    """Run trials until the study holds `plan.trials` complete, pruned or running ones."""
    from functools import partial

    from .trial import objective

    quiet_optuna()
    # The process that created the study seeds its sampler with --seed (+ its worker index): a fresh sweep repeats.
    # A process joining an existing study (another command, a machine, a resumed sweep) adds its pid, or it would
    # draw the same random start-up trials as the first process did.
    seed = plan.seed + index + (0 if created else os.getpid())
    study, storage = load_study(plan, seed)
    console = Console(quiet=plan.quiet, stream=log)
    parent = os.getppid()
    while True:
        fail_dead_trials(study, storage, plan.study_name)
        if taken(study) >= plan.trials or (plan.jobs > 1 and os.getppid() != parent):  # full, or the sweep was killed
            return
        study.optimize(partial(objective, plan, console, index), n_trials=1, catch=(StudyFull,))


def _run_processes(plan: SweepPlan, created: bool) -> None:
    """--jobs N: N worker processes (spawned: a fresh interpreter each, no forked torch threads)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_worker_main, args=(plan, i, created), name=f"dlkit-sweep-{i}")
               for i in range(plan.jobs)]
    for w in workers:
        w.start()
    try:
        for w in workers:
            w.join()
    except KeyboardInterrupt:  # the workers got the Ctrl-C too: each saves its trial's run and stops
        for w in workers:
            w.join()
        raise
    failed = [w.exitcode for w in workers if w.exitcode]
    if failed:
        raise UserError(f"{len(failed)} of {plan.jobs} sweep worker(s) stopped with an error (exit "
                        f"{', '.join(map(str, failed))}), printed above; fix it and run the same command to continue")


def _worker_main(plan: SweepPlan, index: int, created: bool) -> None:
    """A --jobs worker process: cores/jobs threads for torch, trials until the study is full."""
    import torch

    from ..device import usable_cpus

    torch.set_num_threads(max(1, usable_cpus() // plan.jobs))
    try:
        run_worker(plan, index, created, getattr(sys, plan.stream))
    except UserError as e:
        print(f"error: [worker {index}] {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        code = getattr(e, "exit_code", None)  # TrainingInterrupted: the signal's 128 + n
        if code is None:
            raise
        print(f"[worker {index}] {e}", file=sys.stderr, flush=True)
        sys.exit(code)
