"""`dlkit sweep --trials N --out SWEEP_DIR --param NAME=KIND:ARGS ... [train options]`: an Optuna search, each trial a
run folder in SWEEP_DIR; the same command again continues the study."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from .main import _add_config_flags

    p = sub.add_parser("sweep", help="search hyperparameters with Optuna (TPE, median pruning); a run per trial",
                       usage="dlkit sweep --out SWEEP_DIR --param NAME=KIND:ARGS [--param ...] [--trials N] "
                             "[sweep options] [train options]")  # argparse's own would show --out optional
    p.add_argument("--param", action="append", metavar="NAME=KIND:ARGS", dest="sweep_params",
                   help="what to search (repeat): NAME is a train option or model_args.KEY; KIND:ARGS is "
                   "loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH, logint:LOW:HIGH or choice:A,B,... "
                   "(e.g. --param lr=loguniform:1e-4:1e-1 --param batch_size=choice:64,128,256)")
    p.add_argument("--trials", type=int, default=20, help="the study's total of finished (complete or pruned) trials, "
                   "over every process that joins it (default: 20)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes on this machine, each with cores/N threads "
                   "(default: 1)")
    p.add_argument("--storage", metavar="URL", help="a database shared by several processes or machines "
                   "(sqlite:///sweep.db, postgresql://user@host/db); default: a journal file in --out")
    p.add_argument("--study-name", help="the study's name in --storage (default: the --out folder's name)")
    p.add_argument("--cv", type=int, metavar="K", help="score each trial by K-fold cross-validation (the mean of the "
                   "monitored metric; trials are then not pruned)")
    p.add_argument("--pruner", default="median", choices=("median", "none"), help="median: stop a trial whose "
                   "metric after an epoch is worse than the median of finished trials there (default: median)")
    p.add_argument("--prune-startup", type=int, default=5, metavar="N",
                   help="finished trials before any pruning (default: 5)")
    p.add_argument("--prune-warmup", type=int, default=0, metavar="E",
                   help="epochs of a trial before it can be pruned (default: 0)")
    p.add_argument("--config", help="YAML file of training options; flags override it")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the table of trials")
    p.add_argument("--json", action="store_true", help="print the summary (trials, best, files) as one JSON object")
    p.add_argument("--out", metavar="SWEEP_DIR", help="required: the sweep's folder, a run folder per trial, the "
                   "study's journal and its report (the same --out again continues the study)")
    _add_config_flags(p, leave_out=("out",))  # every other train option applies to each trial
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    import json

    from ..tune.sweep import sweep
    from .main import _config_fields

    overrides = {f.name: getattr(args, f.name) for f in _config_fields() if hasattr(args, f.name)}
    out = overrides.pop("out", None)
    log = sys.stderr if args.json else sys.stdout
    try:
        summary = sweep(args.config, params=args.sweep_params or [], trials=args.trials, out=out, jobs=args.jobs,
                        storage=args.storage, study_name=args.study_name, cv=args.cv, pruner=args.pruner,
                        prune_startup=args.prune_startup, prune_warmup=args.prune_warmup, quiet=args.quiet,
                        log=log, **overrides)
    except Exception as e:
        code = getattr(e, "exit_code", None)
        if code is None or type(e).__name__ != "TrainingInterrupted":
            raise
        print(f"interrupted: {e}\ncontinue the sweep with the same command", file=sys.stderr)
        return code
    if args.json:
        print(json.dumps(summary, default=str))
    elif args.quiet:  # the table alone
        from ..tune.report import format_trials

        print(format_trials(summary["trials"], list(summary["params"]), summary["monitor"]))
    return 0
