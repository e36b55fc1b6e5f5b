"""Commands that look without training: the models and datasets there are, a model's summary, a dataset's
samples, past runs side by side, and TensorBoard over a runs folder."""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ..errors import UserError


def register(sub: argparse._SubParsersAction) -> None:
    from .main import KeyValue, add_trust_flags  # shared with the training flags and the other commands

    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--torchvision", action="store_true", help="list torchvision's classification models")
    p.add_argument("--models-from", action="append", metavar="FILE",
                   help="a .py file whose @dlkit.register_model names are listed too (its code runs)")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("recipes", help="list the training recipes (`dlkit train --recipe NAME`) and what each sets")
    p.set_defaults(func=cmd_recipes)

    p = sub.add_parser("datasets", help="list built-in datasets and the folder layouts understood")
    p.set_defaults(func=cmd_datasets)

    p = sub.add_parser("summary", help="per-layer table, parameters, FLOPs and memory of a model or checkpoint")
    p.add_argument("model", metavar="MODEL|RUN|CHECKPOINT", help="a name from `dlkit models`, or a run folder or "
                   "checkpoint (which brings its input, classes and optimizer)")
    p.add_argument("--input", default="3x32x32", help="input as CxHxW (default 3x32x32), or F features for a table "
                   "model; a checkpoint brings its own")
    p.add_argument("--classes", type=int, default=10, metavar="K",
                   help="outputs of the model's head: classes, or 1 for numbers (default 10; a checkpoint brings "
                   "its own)")
    p.add_argument("--batch-size", type=int, help="batch size for the memory estimates (default: the run's own, "
                   "else train's default: 128 for images, 256 for tables)")
    p.add_argument("--optimizer", help="optimizer whose state the training estimate counts: sgd, sgd-momentum, "
                   "adagrad, rmsprop, adam, adamw (default adamw, or the checkpoint's own)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--models-from", action="append", metavar="FILE", help="a .py file registering models")
    add_trust_flags(p)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("tensorboard", help="start TensorBoard on a runs folder (loopback only by default)")
    p.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR",
                   help="the folder holding the runs (default: runs), or one run folder")
    p.add_argument("--port", type=int, default=6006, help="the port to serve on (default: 6006)")
    p.add_argument("--host", default="127.0.0.1", help="the address to bind (default: 127.0.0.1, this machine only)")
    p.add_argument("--no-wait", action="store_true", help=argparse.SUPPRESS)
    p.set_defaults(func=cmd_tensorboard)

    p = sub.add_parser("show-data", help="save a grid of samples with class names and print the class counts")
    p.add_argument("data", metavar="SPEC", help="what --data takes: a built-in name, a folder of images or a table")
    p.add_argument("--n", type=int, default=32, help="how many samples")
    p.add_argument("--out", help="PNG to write (default data_<name>.png)")
    p.add_argument("--data-dir", metavar="DIR", help="where built-in datasets are read from (as for train)")
    p.add_argument("--image-size", type=int, help="side of each shown image (default: native, or 96 for files)")
    p.add_argument("--target", help="a table's column to predict: shows what is inferred for every column")
    p.add_argument("--task", default="auto", choices=("auto", "classification", "regression"),
                   help="with --target: what the column is predicted as (default: auto, as for train)")
    p.add_argument("--data-arg", action=KeyValue, metavar="KEY=VALUE", help="options of a built-in table")
    p.set_defaults(func=cmd_show_data)

    p = sub.add_parser("runs", help="a table of past runs")
    p.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR",
                   help="the folder holding the runs (default: runs); a CV or sweep folder lists its runs")
    p.add_argument("--sort", default="name", help="name, data, model, epochs, best_val_acc, wall_s (process start to "
                   "the run's end), train_s (training steps) or images_per_s")
    p.add_argument("--json", action="store_true", help="print the rows as a JSON array")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("compare", help="overlay the curves of runs in one PNG and table their final metrics")
    p.add_argument("runs", nargs="+", metavar="RUN", help="the run folders to overlay")
    p.add_argument("--out", default="compare.png", metavar="FILE", help="the PNG to write (default: compare.png); "
                   "an existing file is kept")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_compare)


def cmd_models(args: argparse.Namespace) -> int:
    from ..models import MODELS
    from ..models.user import load_models_from
    from ..models.zoo import torchvision_names

    load_models_from(args.models_from)
    if args.torchvision:
        print("\n".join(f"tv:{n}" for n in torchvision_names()))
        return 0
    from ..models import TABLE_MODELS

    print("models for images (--model NAME; options with --model-arg key=value):")
    for entry in MODELS:
        print(f"  {entry.name:<14} {entry.help} [default size {entry.info.get('default_size')}]")
    print("  tv:<name>      any torchvision classification model, head replaced (`dlkit models --torchvision` lists them)")
    print("  FILE.py:Name   your own nn.Module class or factory (the file's code runs, as `python FILE.py` would)")
    print("models for tables (--data TABLE --target COLUMN; default tabular):")
    for entry in TABLE_MODELS:
        print(f"  {entry.name:<14} {entry.help}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from ..recipes import RECIPES, describe

    print("recipes (dlkit train --recipe NAME; any flag you give overrides the recipe's; config.yaml's "
          "recipe_defaults lists what it set):")
    for entry in RECIPES:
        print(f"  {entry.name:<10} {entry.help}\n  {'':<10} {describe(entry.obj)}")
    print("a folder of images gets `images` unless you name one, a table `table`; a recipe may fit its batch size, "
          "epochs and widths to the data and the device, and says so in a note")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from ..data import BUILTINS, LAYOUTS
    from ..data.table_builtins import TABLE_BUILTINS

    print("built-in image datasets (--data NAME):")
    for entry in BUILTINS:
        print(f"  {entry.name:<16} {entry.help}")
    print("built-in tables (--data NAME; the target is preset):")
    for entry in TABLE_BUILTINS:
        print(f"  {entry.name:<16} {entry.help}")
    print("layouts understood (--data FOLDER), detected in this order:")
    for entry in LAYOUTS:
        print(f"  {entry.name:<24} {entry.help}")
    print("  CSV manifest             --data FILE.csv with rows path,label[,split]; paths relative to the CSV")
    print("  table                    --data FILE.csv|.tsv|.parquet --target COLUMN (any other CSV)")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from ..evaluation.summary import format_summary, summarize, summarize_checkpoint

    target = Path(args.model)
    if args.batch_size is None:  # 0 stays 0, for summarize to refuse in one line
        args.batch_size = _default_batch(target, table=args.input.isdigit())
    if target.exists():
        result = summarize_checkpoint(target, batch_size=args.batch_size, optimizer=args.optimizer,
                                      trust_code=args.trust_code, model_code=args.model_code)
    elif args.input.isdigit():  # a table model: the number of input features
        from ..models import create_model

        shape = (int(args.input),)
        model = create_model(args.model, in_features=shape[0], continuous=shape[0], num_outputs=args.classes)
        result = summarize(model, shape, batch_size=args.batch_size, optimizer=args.optimizer, name=args.model)
    else:
        from ..models import create_model, is_user_spec
        from ..models.user import create_user_model, load_models_from

        load_models_from(args.models_from)
        shape = _shape(args.input)
        if is_user_spec(args.model):  # the learner's own network, file.py:Class
            model = create_user_model(args.model, shape[0], args.classes, shape[1])[0]
        else:
            model = create_model(args.model, in_channels=shape[0], num_classes=args.classes, image_size=shape[1])
        result = summarize(model, shape, batch_size=args.batch_size, optimizer=args.optimizer,
                           name=args.model)
    print(json.dumps(result, default=str) if args.json else format_summary(result))
    return 0


def _shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 3 or not all(p.isdigit() for p in parts) or parts[1] != parts[2]:
        raise UserError(f"--input must be CxHxW with a square image, e.g. 3x32x32 (got {text!r})")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _default_batch(target: Path, table: bool) -> int:
    """The batch the memory estimates assume: a run's own (its config.yaml), else what `dlkit train` would use."""
    from ..config import TrainConfig
    from ..recipes import RECIPES
    from ..track.rundir import read_config

    run_dir = target if (target / "config.yaml").is_file() else target.parent.parent if target.is_file() else None
    if run_dir and (run_dir / "config.yaml").is_file():
        saved = read_config(run_dir).get("batch_size")
        if isinstance(saved, int):
            return saved
    return RECIPES.get("table").values["batch_size"] if table else TrainConfig.batch_size


def cmd_tensorboard(args: argparse.Namespace) -> int:
    from tensorboard import program

    logdir = Path(args.runs_dir)
    if not logdir.is_dir():
        raise UserError(f"{logdir} does not exist; pass the folder holding your runs (default: runs)")
    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", str(logdir), "--host", args.host, "--port", str(args.port)])
    url = board.launch()
    print(f"TensorBoard on {url} for {logdir} (Ctrl-C to stop)", flush=True)
    if args.no_wait:
        return 0
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0


def cmd_show_data(args: argparse.Namespace) -> int:
    from ..data.table_builtins import is_table
    from ..track.datashow import describe_table, format_counts, show_data

    out = args.out or f"data_{Path(args.data.rstrip('/')).name or 'data'}.png"
    if is_table(args.data):
        text, path = describe_table(args.data, args.target, out, args.task, args.data_arg or {})
        print(text)
        print(f"target distribution: {path}")
        return 0
    path, counts = show_data(args.data, out, n=args.n, data_dir=args.data_dir, image_size=args.image_size)
    print(format_counts(counts))
    print(f"samples: {path}\nclass counts: {path.with_name(path.stem + '_counts.png')}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from ..track.runs import format_runs, list_runs

    rows = list_runs(args.runs_dir, args.sort)
    print(json.dumps(rows) if args.json else format_runs(rows))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from ..track.runs import compare_runs

    path, table = compare_runs(args.runs, args.out, args.overwrite)
    print(table)
    print(f"curves: {path}")
    return 0
