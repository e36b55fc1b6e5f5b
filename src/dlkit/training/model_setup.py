"""The network a run trains: from the registry or the learner's own code, initialised, given its starting weights and
frozen as the config says, on the run's device. Everything it decides is returned, for the checkpoint to record."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..errors import UserError
from ..models import create_model, is_user_spec, load_backbone_weights


@dataclass
class BuiltModel:
    model: torch.nn.Module
    args: dict[str, Any]                  # what create_model was given: the data's shape and the config's model_args
    source: dict[str, Any] | None = None  # the learner's own network: its code, so a checkpoint loads without it


def build_model(cfg: TrainConfig, modality, spec, device: torch.device, console, model_object=None) -> BuiltModel:
    data_args = modality.model_args(spec)
    args = {**data_args, **cfg.model_args}
    source = None
    if model_object is not None or is_user_spec(cfg.model):
        model, source = _user_model(model_object if model_object is not None else cfg.model, modality, data_args, cfg,
                                    console)
    else:
        model = create_model(cfg.model, **args)
    if cfg.init != "default":
        from ..models.init import initialize

        touched = initialize(model, cfg.init, modality.input_shape(spec))
        console.print(f"init: {cfg.init} on {touched} Linear/Conv layer(s)")
    for weights, label in ((cfg.init_from, "--resume-weights-only"), (cfg.weights, "--weights")):
        if weights:
            file, shown = _weights_file(weights, cfg.model)
            missing = load_backbone_weights(model, file)
            console.print(f"weights: {shown} ({len(missing)} tensor(s) left as initialised) [{label}]")
    if cfg.freeze_backbone:
        model.freeze_backbone()
    return BuiltModel(model.to(device), args, source)


def _user_model(network, modality, data_args: dict, cfg: TrainConfig, console) -> tuple[torch.nn.Module, dict]:
    from ..models.user import create_user_model

    if not modality.has_images:
        raise UserError("your own networks train on images for now; for tables use linear, mlp or tabular")
    model, source, notes = create_user_model(network, **data_args, options=cfg.model_args)
    for note in notes:
        console.note(note)
    return model, source


def _weights_file(source: str, model: str) -> tuple[Path, str]:
    """The file to read and how to name it: a run or checkpoint, a local file, or torchvision's named weights."""
    from ..models.pretrained import fetch, is_named, pretrained_for

    if is_named(source):
        pretrained = pretrained_for(model)
        return fetch(pretrained), f"{pretrained.weights} (torchvision, {pretrained.file})"
    from ..infer.predictor import resolve_checkpoint

    path = Path(source)
    return (resolve_checkpoint(path) if path.is_dir() else path), source
