"""Hyperparameter sweeps on Optuna: every trial a normal run folder, one study shared by processes and machines.

The study lives in its storage: by default an Optuna journal file in the sweep folder (safe for parallel processes on
one host, through its file lock), or a database given by URL (sqlite:///..., postgresql://...) that several machines
join. `trials` is the study's total over all processes: each trial takes a slot only if fewer than `trials` trials
numbered before it are complete, pruned or running, so parallel workers never overshoot. A trial left RUNNING by a
killed process on this host is marked failed when the sweep starts again, and its slot is run again.
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

from ..config import TrainConfig, make_config
from ..errors import UserError, require
from ..track.console import Console
from .sweep_space import Param, base_dicts, check_values, parse_params

STUDY_FILE = "study.journal"
HEARTBEAT_S, GRACE_S = 30, 120  # database storages: a trial whose process stopped beating this long is failed


@dataclass(frozen=True)
class SweepPlan:
    """What every worker process needs; picklable, so --jobs can hand it to new processes."""

    dir: Path
    config: str | None
    overrides: dict[str, Any]
    dicts: dict[str, dict]     # the base config's model_args and data_args, which model_args.KEY values join
    params: tuple[Param, ...]
    trials: int
    storage: str | None        # a database URL; None: the journal file in `dir`
    study_name: str
    monitor: str
    maximize: bool
    seed: int
    pruner: str
    prune_startup: int
    prune_warmup: int
    cv: int | None
    jobs: int
    quiet: bool
    stream: str = "stdout"     # where --jobs workers print: stderr when stdout carries --json


def sweep(config: str | Path | None = None, *, params: dict[str, str] | list[str], trials: int = 20,
          out: str | Path | None = None, jobs: int = 1, storage: str | None = None, study_name: str | None = None,
          cv: int | None = None, pruner: str = "median", prune_startup: int = 5, prune_warmup: int = 0,
          quiet: bool = False, log: TextIO | None = None, **overrides: Any) -> dict[str, Any]:
    """Search hyperparameters with Optuna (TPE sampler, median pruner); each trial is a run folder in `out`.

    Args:
        config: optional YAML file of TrainConfig fields; keyword arguments override it (as for dlkit.train).
        params: what to search, {"lr": "loguniform:1e-4:1e-1", "model_args.dropout": "uniform:0:0.5"} or a list of
            "NAME=KIND:ARGS" strings; kinds: loguniform, uniform, int, logint, choice (see sweep_space).
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
                  f"{_without_password(plan.storage) or plan.dir / STUDY_FILE}; {plan.jobs} process(es)")
    if plan.jobs == 1:
        run_worker(plan, 0, created, log)
    else:
        _run_processes(plan, created)
    from ..track.results import SweepResult
    from .sweep_report import report

    return SweepResult(report(plan, console))  # a dict that shows itself in a notebook


def require_optuna() -> None:
    import importlib.util

    require(importlib.util.find_spec("optuna") is not None,
            "dlkit sweep runs on Optuna, which is not installed: pip install 'dlkit[sweep]' (or pip install optuna)")


def _without_password(url: str | None) -> str | None:
    import re

    return url and re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


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


# ---- the study -----------------------------------------------------------------------------------------------------

def open_storage(plan: SweepPlan):
    """The study's storage: a journal file with its lock in the sweep folder, or a database with heartbeats (so a
    trial of a machine that died is failed after GRACE_S seconds)."""
    import optuna

    if plan.storage is None:
        from optuna.storages.journal import JournalFileBackend

        plan.dir.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(plan.dir / STUDY_FILE)))
    kwargs = {"connect_args": {"timeout": 60}} if plan.storage.startswith("sqlite") else {}  # wait for SQLite's lock
    import warnings

    from sqlalchemy.exc import SQLAlchemyError

    try:
        with warnings.catch_warnings():  # heartbeats are "experimental"; they fail a dead machine's trial
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(plan.storage, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                              grace_period=GRACE_S)
    except ImportError:
        raise UserError(f"--storage {_without_password(plan.storage)}: its database driver is not installed "
                        "(PostgreSQL: pip install psycopg2-binary; MySQL: pip install pymysql, URL mysql+pymysql://)"
                        ) from None
    except (ValueError, SQLAlchemyError) as e:  # a bad URL, no server, no permission
        where = _without_password(plan.storage)
        raise UserError(f"cannot open --storage {where}: {str(e).splitlines()[0]}") from None


def open_study(plan: SweepPlan) -> bool:
    """Create the study (or find it, when the sweep continues); returns whether this call created it. Done once, by
    one process, before any worker joins, since concurrent creation can corrupt a study."""
    import optuna

    _quiet_optuna()
    storage = open_storage(plan)
    direction = "maximize" if plan.maximize else "minimize"
    try:
        study = optuna.create_study(storage=storage, study_name=plan.study_name, direction=direction)
        study.set_user_attr("monitor", plan.monitor)
        return True
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=plan.study_name, storage=storage)
    known = study.user_attrs.get("monitor")
    require(known in (None, plan.monitor), f"study {plan.study_name!r} optimises {known}, not {plan.monitor}; use "
                                           "another --out or --study-name, or the same --monitor")
    return False


def load_study(plan: SweepPlan, seed: int = 0):
    """The study as a worker sees it (its own seeded TPE sampler, the plan's pruner), and its storage."""
    import optuna

    storage = open_storage(plan)
    sampler = optuna.samplers.TPESampler(seed=seed)
    study = optuna.load_study(study_name=plan.study_name, storage=storage, sampler=sampler,
                              pruner=PRUNERS[plan.pruner](plan))
    return study, storage


def _median(plan: SweepPlan):
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=plan.prune_startup, n_warmup_steps=plan.prune_warmup)


def _no_pruning(plan: SweepPlan):
    import optuna

    return optuna.pruners.NopPruner()


PRUNERS = {"median": _median, "none": _no_pruning}


def _quiet_optuna() -> None:
    """Optuna logs each trial at INFO; dlkit prints its own line per trial. Warnings stay, except for the trials that
    found the study full (failed on purpose, never counted)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for handler in logging.getLogger("optuna").handlers:  # a handler's filter sees its child loggers' records too
        if not any(isinstance(f, _HideFull) for f in handler.filters):
            handler.addFilter(_HideFull())


class _HideFull(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()  # Optuna's two lines on a failed trial: its error, then "failed with value None"
        return "StudyFull" not in message and not message.endswith("failed with value None.")


# ---- workers -------------------------------------------------------------------------------------------------------

LIVE = ("COMPLETE", "PRUNED", "RUNNING")  # the states that hold a slot of --trials


class StudyFull(Exception):
    """The trial asked for a slot after --trials others had taken them: it is failed and not counted."""


def run_worker(plan: SweepPlan, index: int, created: bool, log: TextIO | None = None) -> None:
    """Run trials until the study holds `plan.trials` complete, pruned or running ones."""
    from functools import partial

    from .sweep_trial import objective

    _quiet_optuna()
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


def taken(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=tuple(TrialState[s] for s in LIVE)))


def has_slot(trial, total: int) -> bool:
    """Whether fewer than `total` trials numbered before this one hold a slot. Numbers are given out by the storage
    in order, so of two workers racing for the last slot exactly one gets it."""
    from optuna.trial import TrialState

    before = trial.study.get_trials(deepcopy=False, states=tuple(TrialState[s] for s in LIVE))
    return sum(t.number < trial.number for t in before) < total


def owner() -> dict[str, Any]:
    """This process, as recorded in each trial it runs: host, pid and the pid's start time (pids are reused)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_ticks(os.getpid())}


def fail_dead_trials(study, storage, study_name: str) -> list[int]:
    """Mark failed the RUNNING trials whose process on this host is gone (a killed sweep); returns their numbers.
    Trials of other machines are failed by the database's heartbeat instead."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    failed, host = [], socket.gethostname()
    study_id = storage.get_study_id_from_name(study_name)
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        who = trial.user_attrs.get("owner")
        if not who or who.get("host") != host or _alive(who.get("pid"), who.get("started")):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        try:
            storage.set_trial_user_attr(trial_id, "failed", "its process ended before the trial did")
            storage.set_trial_state_values(trial_id, TrialState.FAIL)
            failed.append(trial.number)
        except UpdateFinishedTrialError:  # another process failed it first
            pass
    return failed


def _alive(pid: int | None, started: str | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process now has this pid
        return started is None
    now = _start_ticks(pid)
    return now is None or (now == started and _state(pid) != "Z")


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks after boot (Linux /proc); None where there is no /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


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
