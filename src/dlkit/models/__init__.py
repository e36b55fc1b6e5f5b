"""Models: the curriculum registry and torchvision's zoo behind one factory, create_model."""
from __future__ import annotations

import torch

from ..errors import UserError
from . import curriculum, fast  # noqa: F401  (register the curriculum's networks and the fast recipe's)
from .arguments import check_arguments, declared_arguments
from .base import Classifier
from .registry import MODELS
from .tabular import TABLE_MODELS
from .user import is_user_spec
from .zoo import TV_PREFIX, create_torchvision, load_backbone_weights, torchvision_builder

__all__ = ["Classifier", "MODELS", "TABLE_MODELS", "create_model", "default_size", "is_user_spec", "list_models",
           "load_backbone_weights", "smallest_size"]

TV_FIXED = ("weights", "progress")  # dlkit's to set: weights come from --weights, never a download
TABLE_ARGS = ("in_features", "continuous", "cardinalities", "num_outputs")


def list_models(modality: str = "image") -> list[str]:
    """Registered model names for `image` or `table` input."""
    return (TABLE_MODELS if modality == "table" else MODELS).names()


def default_size(name: str) -> int:
    if name in TABLE_MODELS and name not in MODELS:
        return 0
    if is_user_spec(name) or name.startswith("<"):
        return 32  # the learner's own network: the course's CIFAR-sized input, unless --image-size says otherwise
    return 224 if name.startswith(TV_PREFIX) else MODELS.entry(name).info.get("default_size", 32)


def smallest_size(name: str) -> int:
    """The smallest input side a model takes: its registry entry's min_size; torchvision's 32 (their stems
    stride 32); the learner's own network any."""
    if name.startswith(TV_PREFIX):
        return 32
    if is_user_spec(name) or name.startswith("<") or name not in MODELS:
        return 1
    return MODELS.entry(name).info.get("min_size", 1)


def create_model(name: str, in_channels: int = 3, num_classes: int = 10, image_size: int = 32, **options) -> Classifier:
    """Build a registered model (or tv:<name>) for the given input and class count, checked with a trial forward.

    Table models take in_features, continuous, cardinalities and num_outputs instead (see models/tabular.py).
    """
    if "in_features" in options:
        return _create_table_model(name, **options)
    declared = _declared(name)
    if declared is not None:
        check_arguments(name, {"in_channels": in_channels, "num_classes": num_classes, "image_size": image_size,
                               **options}, declared)
    try:
        if name.startswith(TV_PREFIX):
            model = create_torchvision(name[len(TV_PREFIX):], in_channels, num_classes, image_size, **options)
            model.reset_classifier(num_classes)
        else:
            model = MODELS.get(name)(in_channels, num_classes, image_size, **options)
    except (TypeError, ValueError) as e:  # torchvision checks some values itself (groups=2 on a BasicBlock)
        raise UserError(f"bad option for model {name}: {e}; see `dlkit models`") from None
    except RuntimeError as e:
        raise _size_error(name, in_channels, image_size, e) from None
    _check_input(model, name, in_channels, num_classes, image_size)
    return model


def _declared(name: str) -> dict | None:
    """What a model name's builder takes. None for a name the learner's code registered: their class declares
    it, and user.build checks the names against it."""
    if name.startswith(TV_PREFIX):
        builder, model_class = torchvision_builder(name[len(TV_PREFIX):])
        own = {k: v for k, v in declared_arguments(builder, model_class).items() if k not in TV_FIXED}
        return {**{k: v for k, v in declared_arguments(create_torchvision).items() if k != "name"}, **own}
    entry = MODELS.entry(name)
    return None if entry.info.get("user") else declared_arguments(entry.obj)


def _check_input(model: Classifier, name: str, in_channels: int, num_classes: int, image_size: int) -> None:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, in_channels, image_size, image_size))
    except RuntimeError as e:
        raise _size_error(name, in_channels, image_size, e) from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != (1, num_classes):
        raise UserError(f"model {name} gives output {tuple(out.shape)} for {num_classes} classes; it cannot be used here")


def _size_error(name: str, channels: int, size: int, error: Exception) -> UserError:
    min_size = 32 if name.startswith(TV_PREFIX) else MODELS.entry(name).info.get("min_size", 32)
    hint = f"pass --image-size {max(min_size, default_size(name))}" if size < max(min_size, 32) else "try another --image-size"
    return UserError(f"model {name} cannot take {channels}x{size}x{size} images ({str(error).splitlines()[0][:80]}); {hint}")


def _create_table_model(name: str, in_features: int, continuous: int = 0, cardinalities: list | None = None,
                        num_outputs: int = 1, **options) -> Classifier:
    if name not in TABLE_MODELS:
        hint = "; it takes images" if name in MODELS or name.startswith(TV_PREFIX) else ""
        raise UserError(f"{TABLE_MODELS.unknown_message(name)}{hint}; table models: {', '.join(TABLE_MODELS.names())}")
    check_arguments(name, {"in_features": in_features, "continuous": continuous, "num_outputs": num_outputs,
                           "cardinalities": cardinalities or [], **options}, declared_arguments(TABLE_MODELS.get(name)))
    cardinalities = list(cardinalities or [])
    try:
        model = TABLE_MODELS.get(name)(in_features, continuous, cardinalities, num_outputs, **options)
    except TypeError as e:
        raise UserError(f"bad option for model {name}: {e}; see `dlkit models`") from None
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(2, in_features + len(cardinalities)))
    model.train()
    if tuple(out.shape) != (2, num_outputs):
        raise UserError(f"model {name} gives output {tuple(out.shape[1:])} per row for {num_outputs} output(s)")
    return model
