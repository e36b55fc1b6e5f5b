"""The modality seam: images or a table. A modality owns reading, the preprocessing spec saved in checkpoints,
batching, the model's input shape and its default recipe. Everything else (the loop, checkpoints, evaluate,
predict, TensorBoard, the report) is shared and asks the modality where they differ.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import torch

from ..errors import DataWarning, UserError, require
from ..registry import Registry
from ..tasks import Classification
from .source import DataSource, Rows, Samples, holdout_indices

MODALITIES: Registry = Registry("modality")


def modality_for(data: str, objects: tuple | None = None) -> "Images | Tables":
    """The modality of a --data spec; `objects`: the user's own Dataset objects, passed from Python."""
    from .table_builtins import is_table

    if objects or str(data).startswith(DATASET_PREFIX):  # data/user.py registers it (imported by data/__init__)
        datasets = MODALITIES.get("dataset")
        return datasets(*(objects or (None,)))  # unbound (a saved config): preparing it says what to do
    return MODALITIES.get("table" if is_table(str(data)) else "image")


DATASET_PREFIX = "dataset:"  # cfg.data of a run trained on a Dataset object: dataset:<its class name>


# ---- images --------------------------------------------------------------------------------------------------------

@MODALITIES.register("image", help="image files, folders, IDX/CIFAR batches, CSV manifests of path,label")
class Images:
    name = "image"
    unit = "img"                 # what a sample is called in speeds
    has_images = True
    recipe_name = "images"       # the recipe (dlkit/recipes.py) a run gets when it names none

    @staticmethod
    def prepare(cfg, default_size: int, smallest: int = 1):
        from .layouts import open_source
        from .prepare import prepare_data

        source = open_source(cfg.data, cfg.data_dir, cfg.val_split, cfg.seed, cfg.allow_outside_root)
        if cfg.folds or cfg.refit:
            source = image_folds(source, cfg)
        data = prepare_data(source, cfg.image_size, cfg.channels, default_size, cfg.cache, cfg.strict, cfg.disk_cache,
                            smallest)
        if len(data.train) == 0 or len(data.val) == 0:
            raise UserError(f"{cfg.data}: no readable images left in the "
                            f"{'training' if not len(data.train) else 'validation'} split")
        s = data.spec
        data.headline = (f"{source.summary()}; layout: {source.layout}; input {s.channels}x{s.image_size}x{s.image_size}"
                         f" ({_where_kept(data, cfg.cache)})")
        return data

    @staticmethod
    def task(spec):
        return Classification(spec.class_names)

    @staticmethod
    def callbacks(cfg) -> list:
        return []

    @staticmethod
    def model_args(spec) -> dict[str, Any]:
        return {"in_channels": spec.channels, "num_classes": spec.num_classes, "image_size": spec.image_size}

    @staticmethod
    def input_shape(spec) -> tuple[int, ...]:
        return (spec.channels, spec.image_size, spec.image_size)

    @staticmethod
    def spec_from_dict(d: dict[str, Any]):
        from .spec import PreprocessSpec

        return PreprocessSpec.from_dict(d)

    @staticmethod
    def inputs(spec, augment=None, channels_last: bool = False) -> Callable:
        """uint8 batches -> augmented (in-memory data, training), normalised float input."""
        from .transforms import Inputs

        return Inputs(spec, augment, channels_last)


def _where_kept(data, cache: str) -> str:
    """In memory or streamed, and why: the decoded size against --cache auto's budget (half the available memory)."""
    from .loaders import memory_budget

    s = data.spec
    need = (len(data.train) + len(data.val)) * s.channels * s.image_size ** 2
    if data.source.train.images is not None:
        return "in memory"
    if cache != "auto":
        return "in memory (--cache " + cache + ")" if data.in_memory else "streamed from files (--cache off)"
    budget = memory_budget()
    verdict = "in memory" if data.in_memory else "streamed from files"
    return f"{verdict}: {need / 2**30:.2f} GiB decoded vs a budget of {budget / 2**30:.1f} GiB, half the available memory"


def image_folds(source: DataSource, cfg) -> DataSource:
    """Fold `cfg.fold` of K over the training pool (train + val, unless val is an official test set)."""
    pool = source.train if source.test is not None else _concat(source.train, source.val)
    if cfg.refit:
        return replace(source, train=pool, val=pool, notes=source.notes + ["refit: trained on all the data; "
                                                                           "the validation figures are on training data"])
    train, val = holdout_indices(len(pool), pool.labels, cfg.val_split, cfg.seed, cfg.folds, cfg.fold)
    layout = f"{source.layout}, fold {cfg.fold + 1} of {cfg.folds}"
    return replace(source, train=pool.subset(train), val=pool.subset(val), layout=layout)


def _concat(a: Samples, b: Samples) -> Samples:
    if a.images is not None and b.images is not None:
        return Samples(torch.cat([a.labels, b.labels]), torch.cat([a.images, b.images]))
    return Samples(torch.cat([a.labels, b.labels]), None, list(a.paths) + list(b.paths))


# ---- tables --------------------------------------------------------------------------------------------------------

@dataclass
class TableSource:
    """A table as read: the frame, its target column and task, and what reading noticed."""

    name: str
    layout: str
    frame: Any                         # pandas DataFrame, rows with a missing target dropped
    target: str
    task: str
    class_names: list[str]
    notes: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def classes(self) -> list[str]:
        return self.class_names

    def labels(self) -> torch.Tensor | None:
        """Class indices for stratified splits (None for regression)."""
        if self.task != "classification":
            return None
        from .tables import category_keys

        index = {c: i for i, c in enumerate(self.class_names)}
        return torch.tensor(category_keys(self.frame[self.target]).map(index).to_numpy(dtype="int64"))

    def summary(self) -> str:
        rows, cols = self.frame.shape
        kind = f"{len(self.class_names)} classes" if self.task == "classification" else "a number"
        return f"data: {self.name}, {rows} rows x {cols} columns; target {self.target!r}: {self.task} ({kind})"


def open_table(data: str, target: str | None, task: str = "auto", data_args: dict | None = None) -> TableSource:
    """Read a table file or built-in, find its target, drop rows without one and settle the task.

    The last table opened is kept, keyed by its path, size and modification time: `dlkit cv` opens the same
    table once per fold, and reading and inferring a wide table costs more than a short fold's training.
    """
    import copy
    import json

    path = Path(str(data)).expanduser()
    stat = path.stat() if path.is_file() else None
    key = (str(data), stat and (stat.st_size, stat.st_mtime_ns), target, task, json.dumps(data_args or {}, sort_keys=True))
    if _LAST_TABLE.get("key") != key:
        _LAST_TABLE.update(key=key, source=_open_table(data, target, task, data_args))
    source = copy.copy(_LAST_TABLE["source"])  # callers may change notes and layout, never the frame
    source.notes = list(source.notes)
    return source


_LAST_TABLE: dict[str, Any] = {}


def _open_table(data: str, target: str | None, task: str, data_args: dict | None) -> TableSource:
    import pandas as pd

    from .table_builtins import TABLE_BUILTINS
    from .table_reading import find_target, infer_task, read_table
    from .tables import category_keys

    data_args = dict(data_args or {})
    if data in TABLE_BUILTINS:
        frame, default_target = TABLE_BUILTINS.get(data)(data_args)
        layout, notes, target = "built-in table", [], target or default_target
    else:
        path = Path(data).expanduser()
        frame, notes = read_table(path)
        layout = {".parquet": "table (Parquet)", ".pq": "table (Parquet)"}.get(path.suffix.lower(), "table (CSV)")
    name = find_target(frame, target, str(data))
    present = frame[name].notna()
    require(bool(present.any()), f"target column {name!r} is empty on every row; choose another --target")
    if not present.all():
        notes.append(DataWarning(f"dropped {int((~present).sum())} row(s) with no value in the target {name!r}"))
        frame = frame[present].reset_index(drop=True)
    task = infer_task(frame[name], task)
    classes: list[str] = []
    if task == "classification":
        keys = sorted(set(category_keys(frame[name])))
        numeric = pd.to_numeric(pd.Series(keys), errors="coerce")
        if numeric.notna().all():
            keys = [k for _, k in sorted(zip(numeric, keys))]
        require(len(keys) >= 2, f"target {name!r} has only one class ({keys[0][:30]}); a classifier needs at least "
                                "two (or use --task regression for numbers)")
        classes = keys
    return TableSource(str(data), layout, frame, name, task, classes, notes, dict(data_args))


@MODALITIES.register("table", help="CSV, TSV or Parquet tables and scikit-learn's bundled ones, with --target")
class Tables:
    name = "table"
    unit = "rows"
    has_images = False
    recipe_name = "table"  # dlkit/recipes.py; see models/tabular.py for the model's choices

    @staticmethod
    def prepare(cfg, default_size: int = 0, smallest: int = 1):
        from .source import PreparedData
        from .table_reading import infer_columns
        from .tables import TableSpec

        source = open_table(cfg.data, cfg.target, cfg.task, cfg.data_args)
        frame, labels = source.frame, source.labels()
        n = len(frame)
        require(n >= 4, f"{cfg.data} has only {n} row(s) with a target; a model needs more rows to train and validate")
        if cfg.refit:
            train_idx = val_idx = torch.arange(n)
            source.notes.append("refit: trained on all rows; the validation figures are on training rows")
        else:
            train_idx, val_idx = holdout_indices(n, labels, cfg.val_split, cfg.seed, cfg.folds, cfg.fold)
            if cfg.folds:
                source.layout += f", fold {cfg.fold + 1} of {cfg.folds}"
        choices = infer_columns(frame, source.target, cfg.drop, cfg.categorical, cfg.numeric, cfg.id_column)
        notes = list(source.notes)
        train_frame = frame.iloc[train_idx.numpy()]
        scaling = cfg.numeric_scaling if cfg.numeric_scaling != "auto" else \
            "standard" if cfg.model == "linear" else "robust"  # smooth clipping would bend a linear model's inputs
        spec = TableSpec.fit(train_frame, source.target, source.task, choices, source.class_names,
                             cfg.target_transform, scaling, cfg.categorical_encoding, notes)
        notes += [f"left out column {s['name']!r}: {s['kind']}" + (f" ({s['why']})" if s["why"] else "")
                  for s in spec.skipped]
        notes += [f"column {c.name!r}: {c.why}" for c in choices if c.kind == "categorical" and c.why.startswith("mixed")]

        inputs, targets = spec.transform(frame, cfg.data), spec.encode_target(frame[source.target], cfg.data)

        def rows(index: torch.Tensor) -> Rows:
            return Rows(targets[index], inputs[index], index)

        data = PreparedData(source, spec, rows(train_idx), rows(val_idx), notes)
        kinds: dict[str, int] = {}
        for c in spec.columns:
            kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
        used = ", ".join(f"{v} {k}" for k, v in kinds.items())
        data.headline = (f"{source.summary()}; layout: {source.layout}; {len(data.train)} train / {len(data.val)} val "
                         f"rows; inputs: {used} column(s) -> {spec.numeric_width + len(spec.cardinalities)} features")
        return data

    @staticmethod
    def task(spec):
        return spec.make_task()

    @staticmethod
    def callbacks(cfg) -> list:
        return [LinearTruth(cfg.data_args)] if cfg.data == "synthetic-linear" and cfg.model == "linear" else []

    @staticmethod
    def model_args(spec) -> dict[str, Any]:
        return spec.model_inputs()

    @staticmethod
    def input_shape(spec) -> tuple[int, ...]:
        return (spec.numeric_width + len(spec.cardinalities),)

    @staticmethod
    def inputs(spec, augment=None, channels_last: bool = False) -> Callable:
        return TableInputs()

    @staticmethod
    def spec_from_dict(d: dict[str, Any]):
        from .tables import TableSpec

        return TableSpec.from_dict(d)


class LinearTruth:
    """d2l 3.2: after training `linear` on synthetic-linear, print the learned w and b beside the true ones."""

    def __init__(self, data_args: dict):
        self.args = data_args

    def on_fit_end(self, trainer, summary: dict[str, Any]) -> None:
        from .table_builtins import synthetic_truth

        w, b = learned_linear(trainer.model, trainer.data.spec)
        true_w, true_b = synthetic_truth(self.args)
        summary["learned"] = {"w": w, "b": b, "true_w": true_w, "true_b": true_b}
        trainer.console.print(f"learned w = [{', '.join(f'{v:.4f}' for v in w)}], b = {b:.4f}   "
                              f"(true w = [{', '.join(f'{v:g}' for v in true_w)}], b = {true_b:g})")


def learned_linear(model, spec) -> tuple[list[float], float]:
    """The weights and bias of a linear regression in the data's own units, undoing input and target scaling."""
    from ..tasks import TargetScale

    layer = model.net[1]
    weight, bias = layer.weight.detach().double()[0], float(layer.bias.detach()[0])
    scale = TargetScale.from_dict(spec.target_scale)
    numbers = [c for c in spec.columns if c["kind"] == "numeric"]
    centers, spreads = zip(*(spec.scale_of(c) for c in numbers))
    w = [float(weight[i]) * scale.std / spreads[i] for i in range(len(numbers))]
    b = scale.mean + scale.std * bias - sum(wi * ci for wi, ci in zip(w, centers))
    return w, b


class TableInputs:
    """Table rows are model input as they are: scaled when the spec transformed them."""

    channels_last = False
    augment = None

    def __call__(self, rows: torch.Tensor, train: bool) -> torch.Tensor:
        return rows


def inputs_for(modality, spec, augment=None, channels_last: bool = False) -> Callable:
    """What turns a batch from the loader into the model's input: the modality decides."""
    return modality.inputs(spec, augment, channels_last)
