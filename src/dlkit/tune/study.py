"""The study a sweep's trials share: its plan, its storage (an Optuna journal file in the sweep folder, or a database
by URL), the slots of --trials, and the trials a killed process left RUNNING. Read by the sweep, its trials and its
report, which import nothing of each other's."""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import UserError, require
from .space import Param


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


def without_password(url: str | None) -> str | None:
    import re

    return url and re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)


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
        raise UserError(f"--storage {without_password(plan.storage)}: its database driver is not installed "
                        "(PostgreSQL: pip install psycopg2-binary; MySQL: pip install pymysql, URL mysql+pymysql://)"
                        ) from None
    except (ValueError, SQLAlchemyError) as e:  # a bad URL, no server, no permission
        where = without_password(plan.storage)
        raise UserError(f"cannot open --storage {where}: {str(e).splitlines()[0]}") from None


def open_study(plan: SweepPlan) -> bool:
    """Create the study (or find it, when the sweep continues); returns whether this call created it. Done once, by
    one process, before any worker joins, since concurrent creation can corrupt a study."""
    import optuna

    quiet_optuna()
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


def quiet_optuna() -> None:
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


LIVE = ("COMPLETE", "PRUNED", "RUNNING")  # the states that hold a slot of --trials


class StudyFull(Exception):
    """The trial asked for a slot after --trials others had taken them: it is failed and not counted."""


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
