"""Any torchvision classification model as tv:<name>, its head replaced for our classes, weights from a local file only."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from .base import Classifier, find_last_layer

TV_PREFIX = "tv:"


def torchvision_names() -> list[str]:
    from torchvision import models

    return sorted(models.list_models(module=models))


def torchvision_builder(name: str) -> tuple:
    """(torchvision's builder function, the model class it returns) for a classification model's name."""
    import inspect

    from torchvision import models

    names = torchvision_names()
    if name not in names:
        import difflib

        close = difflib.get_close_matches(name, names, n=3) if isinstance(name, str) else []
        hint = f"did you mean {', '.join(TV_PREFIX + c for c in close)}?" if close else "see `dlkit models --torchvision`"
        raise UserError(f"unknown torchvision model {name!r}; {hint}")
    builder = models.get_model_builder(name)
    returns = inspect.signature(builder).return_annotation
    return builder, returns if inspect.isclass(returns) else None


def create_torchvision(name: str, in_channels: int, num_classes: int, image_size: int, **options) -> Classifier:
    from torchvision import models

    torchvision_builder(name)  # an unknown name is refused before torchvision looks it up
    if name in ("googlenet", "inception_v3"):
        options.setdefault("aux_logits", False)
        options.setdefault("init_weights", True)
    net = models.get_model(name, weights=None, **options)  # never downloads: weights come from --weights
    model = Classifier(net, find_last_layer(net))
    if in_channels != 3:
        _adapt_first_conv(net, in_channels)
    return model


def load_backbone_weights(model: Classifier, path: str | Path) -> list[str]:
    """Load local pretrained weights into the wrapped net (the head is skipped when its shape differs).

    Returns the names of tensors that were not loaded.
    """
    from ..storage import read_foreign_weights

    state = read_foreign_weights(Path(path))
    state = {k.removeprefix("net."): v for k, v in state.items()}
    own = model.net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise UserError(f"--weights {path} holds no tensor that fits this model; is it for a different architecture?")
    model.net.load_state_dict(usable, strict=False)
    return sorted(set(own) - set(usable))


def _adapt_first_conv(net: nn.Module, in_channels: int) -> None:
    """Give the first conv `in_channels` inputs (summing RGB filters for grayscale keeps pretrained meaning)."""
    for name, module in net.named_modules():
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(in_channels, module.out_channels, module.kernel_size, module.stride, module.padding,
                            module.dilation, module.groups, module.bias is not None)
            with torch.no_grad():
                new.weight.copy_(module.weight.sum(1, keepdim=True).expand_as(new.weight) / in_channels)
            parent_name, _, child = name.rpartition(".")
            setattr(net.get_submodule(parent_name) if parent_name else net, child, new)
            return
