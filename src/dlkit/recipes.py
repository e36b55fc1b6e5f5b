"""Recipes: named sets of training choices, filled in where the user set nothing, then fitted to the data and device.

One mechanism for every default: a folder of images gets `images` (TrainConfig's own defaults), a table gets
`table`, and `--recipe fast` or `--recipe finetune` asks for another. A recipe fills only the fields the user left
unset (config.yaml's `recipe_defaults` lists them), and its fit may change only those, once the trainer knows the
data's size and the device: a flag the user typed always wins.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from .registry import Registry

RECIPES: Registry = Registry("recipe")


@dataclass(frozen=True)
class Fitting:
    """What a recipe may fit itself to, known once the data is read."""
    train_rows: int
    device: str                      # cpu, cuda or mps
    image_size: int | None = None    # None for tables
    class_names: tuple = ()
    photo_side: int | None = None    # a folder's images: the median shorter side of a few (data.loaders.photo_side)


@dataclass(frozen=True)
class Recipe:
    name: str
    help: str
    values: dict[str, Any] = field(default_factory=dict)
    fit: Callable[[Any, Fitting], tuple[dict[str, Any], list[str]]] | None = None  # -> (changes, notes)

    def fitted(self, cfg, fitting: Fitting) -> tuple[Any, list[str]]:
        """cfg with the recipe fitted to the data and device; only fields the recipe filled may change."""
        if self.fit is None:
            return cfg, []
        changes, notes = self.fit(cfg, fitting)
        changes = {k: v for k, v in changes.items() if k in cfg.recipe_defaults}
        return replace(cfg, **changes), notes


def register(recipe: Recipe) -> Recipe:
    RECIPES.register(recipe.name, help=recipe.help)(recipe)
    return recipe


# ---- images: TrainConfig's defaults ----------------------------------------------------------------------------

PHOTO_SIDE = 64  # a folder whose images are larger than this is photos: fine-tuning a pretrained net suits it
FINETUNE_MODEL = "tv:resnet18"


def fit_images(cfg, fitting: Fitting) -> tuple[dict[str, Any], list[str]]:
    """The default recipe changes nothing; on a folder of photos it says what fine-tuning would take."""
    if not fitting.photo_side or fitting.photo_side <= PHOTO_SIDE or "model" not in cfg.recipe_defaults:
        return {}, []
    from .models.pretrained import pretrained_for

    weights = pretrained_for(FINETUNE_MODEL)
    return {}, [f"these look like photos (about {fitting.photo_side} px), which a small net at "
                f"{fitting.image_size} px sees poorly: --recipe finetune fine-tunes an ImageNet {FINETUNE_MODEL} "
                f"(it downloads {weights.file.name} once into {weights.file.parent}; without internet put the file "
                "there, and then photo folders get that recipe by default)"]


register(Recipe("images", "the default for images: lenet-modern, AdamW 2e-3, batch 128, 10 epochs",
                {"model": "lenet-modern", "optimizer": "adamw", "lr": 2e-3, "batch_size": 128, "epochs": 10},
                fit_images))


# ---- finetune: the course's "pretrained net, new head" as fastai's fine_tune does it ------------------------------

def fit_finetune(cfg, fitting: Fitting) -> tuple[dict[str, Any], list[str]]:
    changes: dict[str, Any] = {}
    notes = []
    if "batch_size" in cfg.recipe_defaults and fitting.train_rows < 8 * cfg.batch_size:  # ~8 steps an epoch
        changes["batch_size"] = max(4, 2 ** math.floor(math.log2(max(1, fitting.train_rows // 8))))
    if "recipe" in cfg.recipe_defaults:  # chosen for the data, not asked for
        notes.append(f"a folder of photos (about {fitting.photo_side} px) and ImageNet weights at hand: recipe "
                     f"finetune ({FINETUNE_MODEL}, head first, then everything; --recipe images for the small net)")
    return changes, notes


register(Recipe("finetune", "photos: an ImageNet-pretrained tv:resnet18, the new head trained first with the "
                "backbone frozen, then everything with the backbone at a tenth of the rate",
                {"model": FINETUNE_MODEL, "weights": "imagenet", "freeze_epochs": 1, "backbone_lr_scale": 0.1,
                 "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "schedule": "cosine",
                 "warmup_epochs": 0.0, "batch_size": 32, "epochs": 4, "augment": "light", "label_smoothing": 0.1},
                fit_finetune))


# ---- table: the default for tables (see models/tabular.py for the model's choices) -------------------------------

def fit_table(cfg, fitting: Fitting) -> tuple[dict[str, Any], list[str]]:
    """The batch size and epochs for this table's size: about 8 steps per epoch on small tables, and at least ~200
    steps in all (20 to 100 epochs); a faster rate for `linear`."""
    changes: dict[str, Any] = {}
    rows = fitting.train_rows
    if cfg.model == "linear":
        # one layer moves slowly at the recipe's 4e-3 (tuned for `tabular`): on y = 3 x1 - 2 x2 + noise its ~200
        # steps reached R^2 0.43; at 2e-2, 0.999
        changes["lr"] = 2e-2
    if "batch_size" in cfg.recipe_defaults:
        changes["batch_size"] = int(min(256, max(16, 2 ** math.floor(math.log2(max(1, rows / 8))))))
    steps = math.ceil(rows / changes.get("batch_size", cfg.batch_size))
    changes["epochs"] = int(min(100, max(cfg.epochs, math.ceil(200 / steps))))
    return changes, []


register(Recipe("table", "the default for tables: the tabular MLP, AdamW 4e-3 cosine, batch and epochs fitted to "
                "the rows", {"model": "tabular", "epochs": 20, "batch_size": 256, "lr": 4e-3, "weight_decay": 0.02,
                             "schedule": "cosine", "warmup_epochs": 1.0}, fit_table))


# ---- fast: airbench94_muon as dlkit parts, for images up to ~64 px -------------------------------------------------

FAST_GPU = {"model_args": {"widths": [64, 256, 256]}, "batch_size": 2000, "epochs": 8}
# On a 2-core CPU the GPU recipe's epoch takes minutes. Narrower groups and 3 epochs of 500, measured on
# Fashion-MNIST (benchmarks/recipes.py): 0.921 after 3 epochs, 0.927 with TTA, in ~50 s.
FAST_CPU = {"model_args": {"widths": [32, 48, 64]}, "batch_size": 500, "epochs": 3}
PER_STEP_DECAY = 2e-6  # airbench's weight decay per sample of the batch, per step
# Handwritten glyphs on a plain background are learned in far fewer steps than clothing or objects: on MNIST the CPU
# scale reached 0.9957 after one epoch of 120 steps (0.9965 after three, in 2.5x the time), where Fashion-MNIST was
# near 0.90. So on the CPU, digits and letters train for about this many steps (benchmarks/recipes.py).
GLYPH_STEPS = 120


def _mirror_breaks_labels(class_names: tuple) -> bool:
    """Digits and letters are not mirror-symmetric (a mirrored 2 is no digit): no flips for them."""
    return bool(class_names) and all(len(str(name)) == 1 and str(name).isalnum() for name in class_names)


def _cpu_note(cfg, changes: dict[str, Any], batch: int) -> str:
    """What the CPU run really uses (a flag the user typed wins over the recipe's scale)."""
    mine = {k for k in ("model_args", "batch_size", "epochs") if k in cfg.recipe_defaults}
    widths = (changes["model_args"] if "model_args" in mine else cfg.model_args).get("widths", WIDTHS_TEXT)
    widths = ",".join(map(str, widths)) if isinstance(widths, (list, tuple)) else widths
    epochs = changes["epochs"] if "epochs" in mine else cfg.epochs
    scaled = f" (scaled for the CPU: on a GPU widths {WIDTHS_TEXT}, batch 2000, 8 epochs)" if mine else ""
    return f"recipe fast on the CPU: widths {widths}, batch {batch}, {epochs} epoch{'s' * (epochs != 1)}{scaled}"


WIDTHS_TEXT = ",".join(map(str, FAST_GPU["model_args"]["widths"]))


def fit_fast(cfg, fitting: Fitting) -> tuple[dict[str, Any], list[str]]:
    scaled = FAST_CPU if fitting.device == "cpu" else FAST_GPU
    changes: dict[str, Any] = {k: v for k, v in scaled.items()}
    notes = []
    batch = changes["batch_size"] if "batch_size" in cfg.recipe_defaults else cfg.batch_size
    if fitting.train_rows < 8 * batch:  # a small folder: at least ~8 steps an epoch
        batch = changes["batch_size"] = max(16, 2 ** math.floor(math.log2(max(1, fitting.train_rows // 8))))
    changes["weight_decay"] = PER_STEP_DECAY * batch
    if _mirror_breaks_labels(fitting.class_names):
        changes.update(augment="shift", tta="shift")
        notes.append("recipe fast: the classes are digits or letters, which mirroring changes: translations only "
                     "(--augment shift, --tta shift)")
        if fitting.device == "cpu":  # glyphs: about GLYPH_STEPS steps (see above)
            changes["epochs"] = min(10, max(1, math.ceil(GLYPH_STEPS / math.ceil(fitting.train_rows / batch))))
    if fitting.device == "cpu":
        notes.append(_cpu_note(cfg, changes, batch))
    if fitting.image_size and fitting.image_size > 64:
        notes.append(f"recipe fast is made for images up to about 64 px; these are {fitting.image_size} px (try "
                     "--image-size 32, or --recipe finetune for photos)")
    return changes, notes


register(Recipe("fast", "airbench for small images (<= ~64 px): patch whitening, Muon, alternating flip, TTA; "
                "scaled to the CPU there",
                {"model": "airbench", **FAST_GPU, "optimizer": "muon", "lr": 0.24, "momentum": 0.85,
                 "weight_decay": PER_STEP_DECAY * FAST_GPU["batch_size"], "schedule": "linear", "warmup_epochs": 0.0,
                 "label_smoothing": 0.2, "augment": "alternating", "tta": "flip-shift", "amp": True}, fit_fast))


def describe(recipe: Recipe) -> str:
    """The recipe's fields as the `dlkit train` flags that would set them, for `dlkit recipes`."""
    return " ".join(_flags(name.replace("_", "-"), value) for name, value in recipe.values.items())


def _flags(flag: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"--{flag}" if value else f"--no-{flag}"
    if isinstance(value, dict):  # model_args: one --model-arg key=value each
        return " ".join(f"--{flag.removesuffix('s')} {k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                        for k, v in value.items())
    return f"--{flag} {value:g}" if isinstance(value, float) else f"--{flag} {value}"
