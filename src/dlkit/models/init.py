"""--init: re-initialise every Linear and Conv layer the way d2l's initialisation chapter does."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..registry import Registry

INITS: Registry = Registry("initialisation")
LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d)


@INITS.register("xavier", help="xavier_uniform_ weights, zero biases (d2l's init_xavier)")
def xavier(weight: torch.Tensor) -> None:
    nn.init.xavier_uniform_(weight)


@INITS.register("kaiming", help="kaiming_normal_ weights (fan-in, ReLU), zero biases")
def kaiming(weight: torch.Tensor) -> None:
    nn.init.kaiming_normal_(weight, nonlinearity="relu")


@INITS.register("normal", help="normal weights with std 0.01, zero biases (d2l's init_normal)")
def normal(weight: torch.Tensor) -> None:
    nn.init.normal_(weight, mean=0.0, std=0.01)


def initialize(model: nn.Module, scheme: str, input_shape: tuple[int, ...] | None = None) -> int:
    """Apply `scheme` to every Linear/Conv weight (biases to zero); returns how many layers it touched.

    Lazy layers (nn.LazyLinear, d2l's deferred initialisation) are materialised first by a trial forward, so they
    are initialised too and the optimizer later sees real parameters."""
    if scheme == "default":
        return 0
    fill: Callable = INITS.get(scheme)
    if input_shape is not None and _has_lazy(model):
        was_training = model.training
        with torch.no_grad():
            model.eval()(torch.zeros(2, *input_shape))
        model.train(was_training)
    count = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LAYERS) and not isinstance(module.weight, nn.parameter.UninitializedParameter):
                fill(module.weight)
                if module.bias is not None:
                    module.bias.zero_()
                count += 1
    return count


def _has_lazy(model: nn.Module) -> bool:
    return any(isinstance(p, nn.parameter.UninitializedParameter) for p in model.parameters())
