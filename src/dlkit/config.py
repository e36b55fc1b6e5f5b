"""The training config: one typed dataclass, resolved once (defaults < config file < CLI) and saved in every run."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import UserError, require


TTA_MODES = ("none", "flip", "shift", "flip-shift")  # infer/tta.py defines the views


def opt(default: Any, help: str, choices: tuple | None = None, flag: str | None = None, parse=None) -> Any:
    """A config field whose metadata also defines its CLI flag (and, where the type is not enough, its parser)."""
    meta = {"help": help, "choices": choices, "flag": flag, "parse": parse}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


def int_or_auto(text: str):
    """CLI parser for --batch-size: an integer or the word auto."""
    return "auto" if str(text).lower() == "auto" else int(text)


def float_or_auto(text: str):
    """CLI parser for --lr: a number or the word auto (run the LR finder first)."""
    return "auto" if str(text).lower() == "auto" else float(text)


@dataclass(frozen=True)
class TrainConfig:
    # data
    data: str = opt("digits", "dataset: a built-in name, a directory or a CSV manifest")
    data_dir: str | None = opt(None, "where built-in datasets are read from / downloaded to (default ~/.cache/dlkit/datasets/<name>)")
    val_split: float = opt(0.2, "fraction held out for validation when the data has no validation split")
    image_size: int | None = opt(None, "side in pixels images are resized to (default: native for built-ins, the model's size for folders)")
    channels: int | None = opt(None, "1 (grayscale) or 3 (RGB); default: what the data holds", choices=(1, 3))
    augment: str = opt("none", "training augmentation: light (crop, flip), standard (light + jitter, rotation), shift "
                       "(2 px translations), alternating (shift + each image mirrored on every other epoch, airbench)",
                       choices=("none", "light", "standard", "alternating", "shift"))
    strict: bool = opt(False, "fail on unreadable images instead of skipping them")
    allow_outside_root: bool = opt(False, "let a CSV manifest name files outside its own folder")
    max_image_pixels: int | None = opt(None, "raise Pillow's decompression-bomb limit (default ~89 megapixels)")
    cache: str = opt("auto", "keep the decoded dataset in memory: auto (RAM, or GPU memory when training there, when it "
                     "fits), ram, device, off (stream files through DataLoader workers)", choices=("auto", "ram", "device", "off"))
    disk_cache: bool = opt(True, "cache decoded image folders on disk (~/.cache/dlkit/decoded) so the next run skips decoding")
    workers: int | None = opt(None, "DataLoader worker processes when not cached (default: from the core count)")
    worker_timeout: float = opt(120.0, "seconds a DataLoader worker may take for a batch before the run fails")
    # tables
    target: str | None = opt(None, "the column to predict, when --data is a table (CSV, TSV, Parquet)")
    task: str = opt("auto", "classification or regression; auto: regression for a numeric target with many distinct "
                    "values", choices=("auto", "classification", "regression"))
    data_args: dict = opt({}, "options of a built-in table, as key=value (e.g. w=2,-3.4 b=4.2 noise=0.01)", flag="--data-arg")
    drop: list = opt([], "table columns to leave out (repeat, or comma-separate)")
    categorical: list = opt([], "table columns to treat as categories")
    numeric: list = opt([], "table columns to treat as numbers (text in them becomes missing)")
    id_column: str | None = opt(None, "the identifier column: left out of the inputs, written beside predictions")
    target_transform: str = opt("auto", "regression target: log, standardize or none; auto: log for a positive "
                                "right-skewed target, else standardize", choices=("auto", "none", "log", "standardize"))
    numeric_scaling: str = opt("auto", "table numbers: robust (median/IQR, smooth clipping of outliers) or standard "
                               "(mean/std, as d2l); auto: standard for the linear model, else robust",
                               choices=("auto", "robust", "standard"))
    categorical_encoding: str = opt("onehot", "table categories: onehot (as d2l's get_dummies) or embedding (learned)",
                                    choices=("onehot", "embedding"))
    folds: int | None = opt(None, "train one fold of K-fold cross-validation: the number of folds, K (`dlkit cv` "
                            "trains them all)")
    fold: int = opt(0, "which fold (0-based) this run validates on, with --folds")
    refit: bool = opt(False, "train on all the data, with no held-out split (the final step of `dlkit cv --refit`)")
    # recipe
    recipe: str | None = opt(None, "a named recipe from `dlkit recipes` (fast, finetune, ...): it fills model, "
                             "optimizer, schedule, batch size, epochs and augmentation; your flags still win "
                             "(default: the data's own, images or table)")
    tta: str = opt("none", "test-time augmentation, recorded with the model: evaluate, predict, serve, the report and "
                   "export average these views (flip, shift, flip-shift)", choices=TTA_MODES)
    # model
    model: str = opt("lenet-modern", "model name from `dlkit models`, or tv:<torchvision name>")
    model_args: dict = opt({}, "extra model keyword arguments as key=value (e.g. dropout=0.5 hidden=256,128)", flag="--model-arg")
    models_from: list = opt([], "a .py file whose @dlkit.register_model names --model can use (its code runs)")
    weights: str | None = opt(None, "pretrained weights for the backbone: a local file (.safetensors/.pt/.pth), or "
                                    "imagenet: torchvision's for a tv: model, downloaded once into torch.hub's cache")
    freeze_backbone: bool = opt(False, "train only the classifier head")
    freeze_epochs: int = opt(0, "train the new head alone for this many epochs with the backbone frozen, then "
                                "everything (fastai's fine_tune)")
    backbone_lr_scale: float = opt(1.0, "the backbone's learning rate relative to --lr (the head's), e.g. 0.1 for "
                                        "fine-tuning pretrained weights")
    init: str = opt("default", "initialise every Linear and Conv layer: default (PyTorch's/the model's own), xavier "
                    "(uniform), kaiming (normal, fan-in, ReLU) or normal (std 0.01), as in d2l",
                    choices=("default", "xavier", "kaiming", "normal"))
    init_from: str | None = opt(None, "start a new run from the weights of this run or checkpoint (fine-tuning)",
                                flag="--resume-weights-only")
    # optimisation
    loss: str = opt("auto", "loss function; auto: cross-entropy for classes, mse for numbers (on softmax "
                    "probabilities for classes)", choices=("auto", "cross-entropy", "mse", "l1", "huber"))
    label_smoothing: float = opt(0.0, "label smoothing for cross-entropy, in [0, 1)")
    optimizer: str = opt("adamw", "optimizer", choices=("sgd", "adagrad", "rmsprop", "adam", "adamw", "muon"))
    lr: float | str = opt(2e-3, "peak learning rate, or auto: run the LR finder first and use its suggestion",
                          parse=float_or_auto)
    momentum: float = opt(0.0, "momentum for sgd and rmsprop (0 = plain SGD, as in torch)")
    nesterov: bool = opt(False, "Nesterov momentum for sgd")
    weight_decay: float = opt(0.0, "L2 penalty (decoupled for adamw)")
    schedule: str = opt("none", "learning-rate schedule", choices=("none", "step", "cosine", "onecycle", "linear"))
    warmup_epochs: float = opt(0.0, "linear warm-up length in epochs")
    clip_grad: float | None = opt(None, "clip the gradient norm to this value")
    epochs: int = opt(10, "number of passes over the training data")
    batch_size: int | str = opt(128, "images per step, or auto: the largest power of two that fits in memory",
                                parse=int_or_auto)
    patience: int | None = opt(None, "stop early after this many epochs without a better monitored validation metric")
    val_every: int | None = opt(None, "also validate every N training steps, not only at each epoch's end (best "
                                "checkpoint, --patience and --stop-at then act at that granularity)")
    stop_at: float | None = opt(None, "stop as soon as the monitored validation metric reaches this value "
                                "(>= for accuracy and R2, <= for losses and errors)")
    monitor: str | None = opt(None, "validation metric that picks the best checkpoint: val_acc (classes, default), "
                              "val_rmse (numbers, default), val_loss, val_mae, val_r2, val_rmsle")
    nan_policy: str = opt("stop", "on a NaN/inf loss: stop (keeping the last good checkpoint) or skip the batch",
                          choices=("stop", "skip-batch"))
    save_every_steps: int | None = opt(None, "also save checkpoints/last every N steps, for exact mid-epoch resume")
    seed: int = opt(0, "random seed for the split, the initialisation and the sample order")
    device: str = opt("auto", "where to train", choices=("auto", "cpu", "cuda", "mps"))
    amp: bool = opt(False, "mixed precision: bf16 autocast on CUDA and on CPUs with native bf16 (AMX, AVX512-BF16)")
    compile: bool = opt(False, "torch.compile the model (slower start, faster steps on big models)")
    cuda_graphs: str = opt("auto", "on CUDA, capture the training step (forward, loss, backward) once and replay it: "
                           "auto (where it can be), off", choices=("auto", "off"))
    nproc_per_node: int | None = opt(None, "train with N processes on this machine (DistributedDataParallel, started "
                                     "through torchrun); --batch-size is then per process")
    sync_bn: bool = opt(False, "with several processes: convert BatchNorm to SyncBatchNorm (CUDA only)")
    deterministic: bool = opt(False, "deterministic algorithms (bitwise repeatable on the CPU; slower on CUDA)")
    # run
    out: str | None = opt(None, "run directory to create (must not exist); default runs/<time>-<data>-<model>")
    runs_dir: str = opt("runs", "parent folder of auto-named runs")
    tensorboard: bool = opt(True, "write TensorBoard event files to <run>/tb")
    tb_images: bool = opt(True, "TensorBoard: the first training batch and each epoch's validation mistakes")
    tb_graph: bool = opt(True, "TensorBoard: the model graph")
    tb_histograms: bool = opt(True, "TensorBoard: weight and gradient histograms every epoch")
    tb_pr_curves: bool = opt(True, "TensorBoard: per-class PR curves and the confusion matrix every epoch")
    recipe_defaults: list = opt([], "the fields the data's default recipe filled in, which the recipe may still fit "
                                "to the data's size (set by dlkit, not a flag)", flag="")
    report: bool = opt(True, "write plots (PNG) and a self-contained report.html into the run at the end")

    def validated(self) -> "TrainConfig":
        """Check values a user can get wrong, before any work starts."""
        require(self.epochs >= 1, f"--epochs must be at least 1 (got {self.epochs})")
        require(self.batch_size == "auto" or (isinstance(self.batch_size, int) and self.batch_size >= 1),
                f"--batch-size must be at least 1 or auto (got {self.batch_size}); try 64")
        require(self.save_every_steps is None or self.save_every_steps >= 1,
                f"--save-every-steps must be at least 1 (got {self.save_every_steps})")
        require(self.worker_timeout > 0, f"--worker-timeout must be positive (got {self.worker_timeout})")
        require(self.lr == "auto" or (isinstance(self.lr, (int, float)) and self.lr > 0),
                f"--lr must be positive or auto (got {self.lr}); try 0.01")
        require(self.nproc_per_node is None or self.nproc_per_node >= 1,
                f"--nproc-per-node must be at least 1 (got {self.nproc_per_node})")
        require(0 < self.val_split < 1, f"--val-split must be between 0 and 1 (got {self.val_split}); try 0.2")
        require(0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1) (got {self.label_smoothing})")
        require(self.weight_decay >= 0, f"--weight-decay must be >= 0 (got {self.weight_decay})")
        require(self.image_size is None or self.image_size >= 4, f"--image-size must be at least 4 (got {self.image_size})")
        require(self.warmup_epochs >= 0, f"--warmup-epochs must be >= 0 (got {self.warmup_epochs})")
        require(self.patience is None or self.patience >= 1, f"--patience must be at least 1 (got {self.patience})")
        require(self.val_every is None or self.val_every >= 1, f"--val-every must be at least 1 (got {self.val_every})")
        require(self.folds is None or self.folds >= 2, f"--folds must be at least 2 (got {self.folds})")
        require(self.folds is None or 0 <= self.fold < self.folds, f"--fold must be in 0..{(self.folds or 1) - 1} (got {self.fold})")
        require(self.monitor is None or self.monitor.startswith(("val_", "train_")),
                f"--monitor names a metric such as val_acc, val_loss or val_rmse (got {self.monitor!r})")
        require(self.clip_grad is None or self.clip_grad > 0, f"--clip-grad must be positive (got {self.clip_grad})")
        require(self.freeze_epochs >= 0, f"--freeze-epochs must be >= 0 (got {self.freeze_epochs})")
        require(self.backbone_lr_scale > 0, f"--backbone-lr-scale must be positive (got {self.backbone_lr_scale})")
        for f in fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value is not None and value not in choices:
                raise UserError(f"--{f.name.replace('_', '-')} must be one of {', '.join(map(str, choices))} (got {value!r})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def make_config(overrides: dict[str, Any] | None = None, config_file: str | Path | None = None) -> TrainConfig:
    """Defaults, then a YAML config file, then explicit overrides; unknown keys are refused."""
    values: dict[str, Any] = {}
    if config_file is not None:
        values.update(read_config_file(config_file))
    values.update({k: v for k, v in (overrides or {}).items()})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(values) - known)
    require(not unknown, f"unknown config key(s) {', '.join(unknown)}; see `dlkit train --help` for the valid ones")
    values = {k: absolute_path(v) if k in PATH_FIELDS else v for k, v in values.items()}
    if isinstance(values.get("model"), str) and values["model"].count(":") == 1 and not values["model"].startswith("tv:"):
        where, _, name = values["model"].partition(":")
        values["model"] = f"{absolute_path(where)}:{name}"
    values["models_from"] = [absolute_path(p) for p in values.get("models_from", [])]
    from .recipes import RECIPES

    chosen = values.get("recipe") is None  # left to the data: recorded in recipe_defaults as the rest
    name = values.get("recipe") or default_recipe(values)
    recipe = RECIPES.get(name)
    values["recipe"] = name
    filled = ["recipe"] * chosen + [k for k in recipe.values if k not in values]
    if "recipe_defaults" not in values:
        values["recipe_defaults"] = filled
    return TrainConfig(**{**recipe.values, **values}).validated()


def default_recipe(values: dict[str, Any]) -> str:
    """The data's own recipe (images, table); a folder of photos gets finetune when the user chose no model or
    weights and the pretrained weights are already on this machine (the images recipe's note says how to get them:
    a run never downloads what nobody asked for)."""
    from .data.loaders import photo_side
    from .data.modality import modality_for
    from .recipes import FINETUNE_MODEL, PHOTO_SIDE

    data = values.get("data", TrainConfig.data)
    name = modality_for(data).recipe_name
    if name != "images" or "model" in values or "weights" in values or (photo_side(data) or 0) <= PHOTO_SIDE:
        return name
    from .models.pretrained import pretrained_for

    return "finetune" if pretrained_for(FINETUNE_MODEL).at_hand else name


# Fields naming files or folders. They are saved absolute, so a run can be evaluated or resumed from any folder.
PATH_FIELDS = ("data", "data_dir", "weights", "init_from")
# --model file.py:Name is made absolute too (see absolute_model), so predict finds the file from any folder


def absolute_path(value: Any) -> Any:
    """An existing path made absolute; a built-in dataset name, a missing path or a non-string stays as it is."""
    from .data.builtin import BUILTINS
    from .data.table_builtins import TABLE_BUILTINS

    if not isinstance(value, str) or not value or value in BUILTINS or value in TABLE_BUILTINS:
        return value
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


def read_config_file(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    require(path.is_file(), f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    require(isinstance(values, dict), f"config file {path} must hold a mapping of key: value")
    return values
