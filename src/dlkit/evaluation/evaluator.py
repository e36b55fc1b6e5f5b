"""evaluate_checkpoint: rebuild the checkpoint's data split with its own spec and measure it."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..data import make_batches, open_source, prepare_split
from ..data.source import relabel
from ..errors import UserError
from ..infer.predictor import Predictor, run_dir_of
from ..data.transforms import Inputs
from ..infer.logits import predict_logits
from .metrics import classification_metrics, save_confusion_png


def evaluate_checkpoint(path: str | Path, data: str | None = None, split: str = "val", data_dir: str | None = None,
                        batch_size: int = 256, device: str = "auto", out_dir: str | Path | None = None,
                        trust_code: bool = False, model_code: str | None = None, tta: str | None = None) -> dict[str, Any]:
    """Metrics of a run/checkpoint on `split` of its own data (or `data`), with a confusion-matrix PNG.
    trust_code / model_code: as for dlkit.load, for a checkpoint whose network is your own code.
    tta: test-time augmentation, default the run's own; "none" turns it off.

    The PNG goes to <run>/eval/ (or out_dir); its path is in the result under "confusion_png".
    """
    if split not in ("train", "val", "test"):
        raise UserError(f"--split must be train, val or test (got {split!r})")
    from ..track.results import EvalResult

    predictor = Predictor.from_checkpoint(path, device, model_code, trust_code, tta)
    if predictor.modality == "table":
        return EvalResult(evaluate_table(predictor, data, split))
    cfg = saved_options(predictor.meta.get("config"), predictor.path)
    spec = predictor.spec
    data = data or cfg.data
    source = open_source(data, data_dir or (cfg.data_dir if data == cfg.data else None), cfg.val_split, cfg.seed)
    if data == cfg.data and (cfg.folds or cfg.refit):  # a CV fold: its own held-out images
        from ..data.modality import image_folds

        source = image_folds(source, cfg)
    samples = relabel(source.split(split), source.classes, spec.class_names, data)
    samples, notes = prepare_split(samples, spec, cfg.cache)
    batches = make_batches(samples, spec, batch_size, False, predictor.device, workers=cfg.workers)
    logits, labels = predict_logits(predictor.forward, batches, Inputs(spec))  # with the run's TTA, if any
    result = classification_metrics(logits, labels, spec.class_names)
    result.update({"checkpoint": str(predictor.path), "data": data, "split": split, "notes": notes,
                   "task": "classification", "tta": predictor.tta})
    folder = Path(out_dir) if out_dir else (run_dir_of(predictor.path) or predictor.path.parent) / "eval"
    png = folder / f"confusion_{Path(str(data)).name or 'data'}_{split}.png"
    save_confusion_png(result["confusion_matrix"], spec.class_names, png, f"{data} ({split}) accuracy {result['accuracy']:.4f}")
    result["confusion_png"] = str(png)
    return EvalResult(result)  # a dict that shows itself in a notebook


def saved_options(config, path: Path) -> SimpleNamespace:
    """The training options eval reuses (how the data was split, read and cached), read as data: a checkpoint's
    saved config is from anywhere, so each value is checked and workers are capped at this machine's CPUs."""
    from ..device import usable_cpus
    from ..infer.predictor import damaged_metadata

    config = config if isinstance(config, dict) else {}
    with damaged_metadata(path):
        folds = None if config.get("folds") is None else int(config["folds"])
        workers = None if config.get("workers") is None else min(max(0, int(config["workers"])), usable_cpus())
        options = SimpleNamespace(
            data=config.get("data"), data_dir=config.get("data_dir"), val_split=float(config.get("val_split", 0.2)),
            seed=int(config.get("seed", 0)), folds=folds, fold=int(config.get("fold", 0)),
            refit=bool(config.get("refit", False)), workers=workers,
            cache=config.get("cache") if config.get("cache") in ("auto", "ram", "device", "off") else "auto")
        if not (0 < options.val_split < 1) or (folds is not None and not 0 <= options.fold < folds >= 2):
            raise ValueError("val_split, folds or fold out of range")
        if not all(v is None or isinstance(v, str) for v in (options.data, options.data_dir)):
            raise TypeError("data or data_dir is not a path")
    return options


def evaluate_table(predictor, data: str | None, split: str) -> dict[str, Any]:
    """Metrics of a table model on its own split (rebuilt from the saved config) or on every row of another table."""
    from ..data.modality import open_table
    from ..data.source import holdout_indices

    if len(predictor.models) > 1:
        raise UserError("a CV folder holds one model per fold: evaluate a fold's run folder (its cv.json lists them), "
                        "or the refit run")
    cfg, spec = predictor.meta.get("config", {}), predictor.spec
    own = data is None or data == cfg.get("data")
    data = cfg.get("data") if own else data
    source = open_table(data, spec.target, spec.task, cfg.get("data_args"))
    frame, notes = source.frame, list(source.notes)
    if own and not cfg.get("refit"):
        train, val = holdout_indices(len(frame), source.labels(), cfg.get("val_split", 0.2), cfg.get("seed", 0),
                                     cfg.get("folds"), cfg.get("fold", 0))
        frame = frame.iloc[(train if split == "train" else val).numpy()]
    else:
        split = "all rows"
    rows, targets = spec.transform(frame, str(data)), spec.encode_target(frame[spec.target], str(data))
    outputs = predictor.outputs(rows)
    result = predictor.task.report_metrics(outputs, targets)
    result.pop("predicted", None), result.pop("actual", None)
    result.update({"checkpoint": str(predictor.path), "data": data, "split": split, "notes": notes,
                   "task": spec.task})
    if spec.task == "classification":
        folder = (run_dir_of(predictor.path) or predictor.path.parent) / "eval"
        png = folder / f"confusion_{Path(str(data)).stem or 'data'}_{split.replace(' ', '-')}.png"
        save_confusion_png(result["confusion_matrix"], spec.class_names, png,
                           f"{Path(str(data)).name} ({split}) accuracy {result['accuracy']:.4f}")
        result["confusion_png"] = str(png)
    return result
