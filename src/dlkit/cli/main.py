"""`dlkit` subcommands: one short function each, calling the library. User mistakes exit 2 with one line."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import typing
from dataclasses import fields
from pathlib import Path

from ..errors import UserError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `dlkit train --nproc-per-node N` reruns it in each rank
    try:
        return args.func(args) or 0
    except UserError as e:
        if getattr(e, "details", None):  # a bug in the user's own code: their traceback, trimmed to their files
            print(e.details, file=sys.stderr)
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader stopped early (`dlkit predict ... | head -1`): end quietly, as Unix tools do
        _silence_stdout()
        return 141  # 128 + SIGPIPE, the status a shell shows for `yes | head -1`'s yes
    except Exception as e:
        from ..errors import TrainingInterrupted

        if "does not have a deterministic implementation" in str(e):  # --deterministic met an op that has none
            op = str(e).split(" does not have")[0].strip()
            print(f"error: --deterministic: {op} has no deterministic implementation on this device; drop "
                  "--deterministic, or choose a model without that operation", file=sys.stderr)
            return 2
        if not isinstance(e, TrainingInterrupted):
            raise
        print(f"interrupted: {e}\nresume with: dlkit train --resume {e.run_dir}", file=sys.stderr)
        return e.exit_code


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the flush at exit does not meet the closed pipe again (Python's docs on
    SIGPIPE: a note in the signal module)."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is no file here (a test capturing it): nothing to flush
        pass


def run() -> None:
    """The `dlkit` command: main(), then an exit that skips the interpreter's teardown. With torch loaded, Python
    spends ~1.2 s here dismantling every module at exit, after the work is done; by then every file dlkit wrote is
    closed (writes are atomic), so only what a normal exit still runs is kept: other threads joined, atexit
    handlers run (logging and multiprocessing flush and stop there), the console flushed."""
    exit_now(main())


def exit_now(code: int) -> typing.NoReturn:
    import atexit
    import os
    import threading

    threading._shutdown()  # as at a normal exit: idle pool workers told to stop, then other threads joined
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`dlkit runs | head`): nothing left to say
            pass
    os._exit(code)


# ---- train ---------------------------------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    from ..api import train
    from ..training import distributed

    overrides = {f.name: getattr(args, f.name) for f in _config_fields() if hasattr(args, f.name)}
    settings = {**_saved_settings(args), **overrides}
    processes = settings.get("nproc_per_node") or 1
    if str(settings.get("lr")) == "auto" and max(processes, distributed.world_size()) > 1:
        raise UserError("--lr auto runs the LR finder in one process; with several, run `dlkit lr-find` with the "
                        "same options first and pass its suggestion as --lr")
    if processes > 1 and not distributed.under_torchrun():  # torchrun runs this same command in every process
        distributed.check_launch(settings.get("device", "auto"), bool(settings.get("sync_bn")))
        return distributed.launch(processes, args.argv)
    log = sys.stderr if args.json else sys.stdout  # with --json, stdout carries only the JSON summary
    try:
        run = train(args.config, resume=args.resume, quiet=args.quiet, log=log, trust_code=args.trust_code, **overrides)
    except Exception as e:
        return distributed.exit_code(e)  # under DDP one rank explains, once; alone, the CLI below does
    if not distributed.is_main_process():
        return 0
    if args.json:
        print(json.dumps(run.summary))
    elif not args.quiet:
        print(_closing(run.summary))
    return 0


def _saved_settings(args: argparse.Namespace) -> dict:
    """The --config file's values, or the resumed run's: where --nproc-per-node may come from besides the flag."""
    from ..config import read_config_file

    if args.resume:
        from ..track.rundir import read_config

        return read_config(Path(args.resume))
    return read_config_file(args.config) if args.config else {}


def _closing(s: dict) -> str:
    best = ", ".join(f"{k} {v:.4g}" for k, v in s.get("best_metrics", {}).items() if k != "val_loss")
    t = s.get("timing", {})
    parts = f" (setup {t['setup_s']:.1f}s, training {t['train_s']:.1f}s, validation {t['val_s']:.1f}s, " \
            f"between epochs {t.get('tracking_s', 0):.2f}s, writing {t['write_s']:.1f}s)" if t else ""
    stopped = f"  stopped:     {s['stopped']['reason']} at step {s['stopped']['step']}\n" if s.get("stopped") else ""
    return (f"done: best {best} at epoch {s['best_epoch']:g}, {s['images_per_s']:,.0f} "
            f"{'rows' if s.get('modality') == 'table' else 'img'}/s on {s['device']}\n"
            f"  time:        {t.get('total_s', s['wall_s']):.1f}s from process start{parts}\n" + stopped +
            f"  run:         {s['run_dir']}\n  checkpoint:  {s['checkpoint']}\n"
            + (f"  tensorboard: tensorboard --logdir {s['tensorboard']}\n" if s.get("tensorboard") else "")
            + f"  predict:     dlkit predict {s['run_dir']} "
            + ("TABLE.csv --out predictions.csv" if s.get("modality") == "table" else "IMAGE..."))


def cmd_cv(args: argparse.Namespace) -> int:
    from ..cv import cross_validate, format_cv

    overrides = {f.name: getattr(args, f.name) for f in _config_fields() if hasattr(args, f.name)}
    folds, refit = overrides.pop("folds", None) or 5, overrides.pop("refit", False)
    overrides.pop("fold", None)
    out = overrides.pop("out", None)
    log = sys.stderr if args.json else sys.stdout
    summary = cross_validate(args.config, folds=folds, refit=refit, out=out, quiet=args.quiet, log=log, **overrides)
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"\n{folds}-fold cross-validation of {summary['model']} on {summary['data']} ({summary['wall_s']:.1f}s):")
    print(format_cv(summary))
    print(f"  folder: {summary['cv_dir']} (cv.json, cv.md, cv.png, one run folder per fold)")
    if "refit" in summary:
        print(f"  refit on all the data: {summary['refit']['run_dir']}")
    print(f"  predict:  dlkit predict {summary['cv_dir']} FILE" + ("" if "refit" in summary else
                                                                   "   (averages the fold models)"))
    return 0


# ---- the parser ----------------------------------------------------------------------------------------------------

def _config_fields():
    from ..config import TrainConfig

    return fields(TrainConfig)


def _add_config_flags(parser: argparse.ArgumentParser, leave_out: tuple[str, ...] = ()) -> None:
    """One flag per TrainConfig field (but those in `leave_out`, which the command defines itself); defaults are
    suppressed so only what the user typed overrides."""
    from ..config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)
    for f in _config_fields():
        if f.metadata.get("flag") == "" or f.name in leave_out:  # "": set by dlkit itself, not a user option
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        base = next((t for t in typing.get_args(kind) if t is not type(None)), kind)
        common = {"dest": f.name, "default": argparse.SUPPRESS, "help": f.metadata["help"] + _default_note(f)}
        if base is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **common)
        elif base is dict:
            parser.add_argument(flag, action=KeyValue, metavar="KEY=VALUE", **common)
        elif base is list:
            parser.add_argument(flag, action="extend", metavar=METAVARS.get(f.name, "COLUMN"), type=_comma_list,
                                **common)
        else:
            parser.add_argument(flag, type=f.metadata.get("parse") or base, choices=f.metadata.get("choices"),
                                metavar=METAVARS.get(f.name), **common)


# What a flag's value names, where its field's name does not say it (argparse would print --id-column ID_COLUMN).
METAVARS = {"models_from": "FILE", "id_column": "COLUMN", "target": "COLUMN", "data_dir": "DIR", "out": "DIR",
            "runs_dir": "DIR", "weights": "FILE", "init_from": "RUN", "data": "DATA"}
# Where the table recipe (dlkit/recipes.py, checked by a test) differs from the image defaults.
TABLE_DEFAULTS = {"model": "tabular", "epochs": "20-100, fitted to the rows", "batch_size": "16-256, fitted to the rows",
                  "lr": "0.004", "weight_decay": "0.02", "schedule": "cosine", "warmup_epochs": "1.0"}


def _default_note(f) -> str:
    """' (default: X)', with a table's own default beside it; nothing where there is no default to show or the
    help text already says it."""
    value = _default(f)
    if "default" in f.metadata["help"] or value is None or value == [] or value == {}:
        return ""
    table = f"; tables: {TABLE_DEFAULTS[f.name]}" if f.name in TABLE_DEFAULTS else ""
    return f" (default: {value:g}{table})" if isinstance(value, float) else f" (default: {value}{table})"


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _default(f):
    from dataclasses import MISSING

    return f.default_factory() if f.default is MISSING else f.default


class KeyValue(argparse.Action):
    """--model-arg hidden=256,128 --model-arg dropout=0.5 -> {"hidden": [256, 128], "dropout": 0.5}."""

    def __call__(self, parser, namespace, value, option_string=None):
        import yaml

        key, sep, raw = value.partition("=")
        if not sep or not key:
            parser.error(f"{option_string} expects KEY=VALUE (got {value!r})")
        parsed = [yaml.safe_load(v) for v in raw.split(",")] if "," in raw else yaml.safe_load(raw)
        current = dict(getattr(namespace, self.dest, None) or {})
        current[key.replace("-", "_")] = parsed
        setattr(namespace, self.dest, current)


def add_device_flag(p: argparse.ArgumentParser, help: str = "where the model runs (auto: a GPU when one is "
                    "visible, else the CPU)") -> None:
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "mps"), help=help)


def add_max_image_pixels_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-image-pixels", type=int, metavar="N",
                   help="Pillow's decompression-bomb limit: images over twice this are refused (default ~89 megapixels)")


def add_tta_flag(p: argparse.ArgumentParser) -> None:
    from ..config import TTA_MODES

    p.add_argument("--tta", choices=TTA_MODES,
                   help="test-time augmentation: default the run's own (`dlkit train --tta`, the fast recipe's); "
                        "none turns it off")


def add_trust_flags(p: argparse.ArgumentParser, resume: bool = False) -> None:
    """A checkpoint or run folder is data: the code it names (your own network, models_from files) runs only when
    you say you trust it."""
    what = "the resumed run folder" if resume else "the checkpoint"
    p.add_argument("--trust-code", action="store_true",
                   help=f"import the code {what} names (your own network's file or module, models_from files); "
                        "only for files you trust")
    if not resume:
        p.add_argument("--model-code", metavar="FILE", help="your own network's .py file, which you trust (where it "
                       "is now, if it moved since training)")


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="dlkit", description="Train, evaluate and deploy models of images or "
                                     "tables (a folder of images or a CSV), classifying or predicting numbers.")
    parser.add_argument("--version", action="version", version=f"dlkit {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (defaults: digits, lenet-modern)")
    p.add_argument("--config", help="YAML file of training options; flags override it")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    p.add_argument("--json", action="store_true", help="print the final summary as one JSON object on stdout")
    add_trust_flags(p, resume=True)
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("cv", help="K-fold cross-validation: one run per fold, per-fold metrics, mean and std")
    p.add_argument("--config", help="YAML file of training options; flags override it")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but the result")
    p.add_argument("--json", action="store_true", help="print the summary (per fold, mean and std) as one JSON object")
    p.add_argument("--folds", type=int, metavar="K", help="the number of folds, one run each (default: 5)")
    p.add_argument("--refit", action="store_true", help="then train once more on all the data, for the folds' median "
                   "best epoch count (the model `dlkit predict CV_FOLDER` uses)")
    p.add_argument("--out", metavar="DIR", help="the CV folder to create, a run folder per fold inside it (default: "
                   "runs/<time>-<data>-cvK-<model>)")
    _add_config_flags(p, leave_out=("folds", "fold", "refit", "out"))  # dlkit cv sets each run's fold and folder
    p.set_defaults(func=cmd_cv)

    for name in COMMAND_MODULES:  # commands that live in their own module register themselves, in this order
        importlib.import_module(f"{__package__}.{name}").register(sub)

    return parser


# Each names a module of dlkit.cli with register(subparsers); it imports only argparse at the top, so `dlkit --help`
# stays fast, and its heavy parts (onnx, fastapi, optuna) only when its command runs.
COMMAND_MODULES = ("evaluate", "predict", "export", "serve", "sweep", "lr_find", "looking")


if __name__ == "__main__":
    run()
