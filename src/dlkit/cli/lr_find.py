"""`dlkit lr-find [train options] [--start --end --steps] [--out PNG]`: the LR finder on the model and data that
`dlkit train` with the same options would train; a plot and a suggested --lr."""
from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from .main import _add_config_flags

    p = sub.add_parser("lr-find", help="ramp the learning rate on a copy of the model: loss-vs-rate plot, a "
                       "suggested --lr")
    p.add_argument("--start", type=float, default=1e-7, help="first learning rate of the ramp (default: 1e-7)")
    p.add_argument("--end", type=float, default=10.0, help="last learning rate of the ramp (default: 10)")
    p.add_argument("--steps", type=int, default=100, help="training steps of the ramp; it stops early when the loss "
                   "diverges (default: 100)")
    p.add_argument("--config", help="YAML file of training options; flags override it")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the suggested rate")
    p.add_argument("--json", action="store_true", help="print the result (suggestion, rates, losses) as JSON")
    p.add_argument("--out", metavar="FILE", help="the plot's PNG (default: lr_find.png); an existing file is kept")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    _add_config_flags(p, leave_out=("out",))  # the model and data options, as for train
    p.set_defaults(func=cmd_lr_find)


def cmd_lr_find(args: argparse.Namespace) -> int:
    import json

    from pathlib import Path

    from ..infer.tabular import refuse_existing
    from ..training.lr_find import lr_find
    from .main import _config_fields

    overrides = {f.name: getattr(args, f.name) for f in _config_fields() if hasattr(args, f.name)}
    out = overrides.pop("out", None) or "lr_find.png"
    refuse_existing(Path(out), args.overwrite)  # one rule for every file a command writes: kept unless --overwrite
    log = sys.stderr if args.json else sys.stdout
    result = lr_find(args.config, start=args.start, end=args.end, steps=args.steps, out=out,
                     quiet=args.quiet or args.json, log=log, **overrides)
    if args.json:
        print(json.dumps(result.to_dict()))
    elif args.quiet:
        print(f"{result.suggestion:.2g}")
    else:
        print(f"suggested lr: {result.suggestion:.2g} ({result.method} of the smoothed loss; the loss was lowest at "
              f"{result.min_loss_lr:.2g})\n  plot: {result.plot_path}\n  train: dlkit train ... --lr "
              f"{result.suggestion:.2g}   (or --lr auto, which runs this first)")
    return 0
