"""The small public API: train, evaluate (and load/predict in dlkit.infer)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from .config import make_config
from .track.console import Console


@dataclass
class Run:
    """A finished training run: its folder, final summary and per-epoch history."""

    dir: Path
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    trusted_code: bool = field(default=False, repr=False)  # its network is code this process was given to train


    @property
    def checkpoint(self) -> Path:
        return self.dir / "checkpoints" / "best.safetensors"

    def load(self, device: str = "auto", trust_code: bool | None = None):
        """A Predictor for this run's best checkpoint. A network you passed to train() in this process is your own
        code, so it is trusted here (trust_code=None); pass False to refuse it like any other file."""
        from .infer import load

        return load(self.dir, device, trust_code=self.trusted_code if trust_code is None else trust_code)

    def evaluate(self, **kwargs) -> dict[str, Any]:
        kwargs.setdefault("trust_code", self.trusted_code)
        return evaluate(self.dir, **kwargs)

    # ---- seeing it (track/views.py, track/notebook.py: imported on use) ----------------------------------------

    def __repr__(self) -> str:
        s = self.summary
        best = f"best {s.get('monitor')} {s['best_value']:.4g} at epoch {s.get('best_epoch')}" \
            if isinstance(s.get("best_value"), float) else "no validation yet"
        return f"Run({str(self.dir)!r}: {s.get('model')} on {s.get('data')}, {best} of {s.get('epochs')}, " \
               f"{s.get('wall_s')}s on {s.get('device')})"

    def _repr_html_(self) -> str:
        from .track.notebook import run_html

        return run_html(self)

    def plot(self):
        """The loss and metric curves: shows itself in a notebook, `.save("curves.png")` from a script."""
        from .track import views

        return views.plot(self)

    def show_batch(self, n: int = 16):
        """n training samples (classes in turn) at the model's input size."""
        from .track import views

        return views.show_batch(self, n)

    def confusion(self):
        """The best checkpoint's confusion matrix on the validation split."""
        from .track import views

        return views.confusion(self)

    def mistakes(self, k: int = 12):
        """The k most confident wrong validation predictions, with their images."""
        from .track import views

        return views.mistakes(self, k)

    def report(self):
        """The run's report.html, inline."""
        from .track import views

        return views.report(self)


def train(config: str | Path | None = None, *, resume: str | Path | None = None, quiet: bool = False,
          log: TextIO | None = None, callbacks: list | None = None, val_data: Any = None, trust_code: bool = False,
          **overrides: Any) -> Run:
    """Train a model; keyword arguments are TrainConfig fields (data, model, epochs, lr, ...).

    `model` may also be your own network: an nn.Module instance, or a class or function that builds one (called
    with the model_args, plus in_channels / num_classes / image_size where its signature takes them).
    `data` may also be your own map-style Dataset of (image, label), with `val_data` its validation Dataset (else
    val_split of it is held out): PIL images or uint8 tensors are resized and normalised as dlkit's own files are;
    float tensors are used as your transform made them. Labels are class indices or names.

    Args:
        config: optional YAML file of TrainConfig fields; keyword arguments override it.
        resume: a run folder to continue from its last checkpoint (its saved config is the base).
        trust_code: with resume, import the code the run folder names (your own network, models_from files);
            without it such a folder is refused before anything of it is imported.
        quiet: print nothing.
        log: where progress is printed (default stdout).
        callbacks: extra objects with any of the hooks on_fit_start(trainer), on_epoch_start(trainer),
            on_batch_end(trainer, batch_size, loss), on_epoch_end(trainer, record), on_fit_end(trainer, summary),
            on_exception(trainer, error); setting trainer.should_stop ends training after the epoch.
    Returns:
        Run, with .dir, .summary, .history, .checkpoint and .load().
    Raises:
        UserError: for bad input, before any work starts.
    Example:
        run = dlkit.train(data="fashion-mnist", model="lenet-modern", epochs=10)
    """
    from .track.rundir import read_config
    from .training.trainer import Trainer

    model_object = None
    if "model" in overrides and not isinstance(overrides["model"], str):  # the learner's own nn.Module/class/factory
        from .models.user import source_of, spec_name

        model_object = overrides["model"]
        overrides["model"] = spec_name(source_of(model_object))
    data_objects = _data_objects(overrides, val_data)

    if resume is not None:
        base = read_config(Path(resume))
        _require_trust_to_resume(base, overrides, resume, trust_code)
        base["recipe_defaults"] = [k for k in base.get("recipe_defaults", []) if k not in overrides]
        cfg = make_config({**base, **overrides}, None)
    else:
        cfg = make_config(overrides, config)
    finder = None
    if cfg.lr == "auto":  # the LR finder first, on the same model and data; config.yaml records the rate used
        from .training.lr_find import auto_lr

        cfg, finder = auto_lr(cfg, Console(quiet=quiet, stream=log), model_object=model_object,
                              data_objects=data_objects)
    trainer = Trainer(cfg, Console(quiet=quiet, stream=log), resume=resume, model_object=model_object,
                      data_objects=data_objects, prepared=finder and finder.prepared).setup()
    if finder is not None and trainer.dist.is_main:
        finder.plot(trainer.run_dir / "lr_find.png")
    from .track.live import with_live

    summary = trainer.fit(with_live(callbacks, quiet))  # in a notebook: the live display (progress, table, curves)
    return Run(trainer.run_dir, summary, trainer.history, trusted_code=trainer.model_source is not None)


def _require_trust_to_resume(base: dict, overrides: dict, run_dir, trust_code: bool) -> None:
    """A run folder's config.yaml is a file like any other: the code it names (and the flags of this call do not
    name again themselves) runs only if trusted."""
    from .trust import CodeTrust, code_in_config, require_trust

    named_here = {k: v for k, v in base.items() if k in ("model", "models_from") and k not in overrides}
    require_trust(code_in_config(named_here), Path(run_dir) / "config.yaml", CodeTrust.of(trust_code))


def _data_objects(overrides: dict[str, Any], val_data: Any) -> tuple | None:
    """The learner's own Dataset objects, replaced in the config by a name (a config holds only plain values)."""
    from .data.modality import DATASET_PREFIX
    from .errors import UserError

    data = overrides.get("data")
    if data is None or isinstance(data, (str, Path)):
        if val_data is not None:
            raise UserError("val_data= goes with your own Dataset object as data=; with --data SPEC the data's own "
                            "validation split (or --val-split) is used")
        return None
    overrides["data"] = DATASET_PREFIX + type(data).__name__
    return data, val_data


def evaluate(path: str | Path, data: str | None = None, split: str = "val", **kwargs: Any) -> dict[str, Any]:
    """Loss, accuracy, top-5, per-class precision/recall/F1 and the confusion matrix of a run or checkpoint
    (trust_code=True / model_code=FILE for one whose network is your own code, as dlkit.load)."""
    from .evaluation import evaluate_checkpoint

    return evaluate_checkpoint(path, data=data, split=split, **kwargs)
