"""The one model contract: a network plus the dotted path of its final layer, so any head can be reset or trained alone."""
from __future__ import annotations

import torch
from torch import nn


class Classifier(nn.Module):
    """Wraps `net`; `head` names its final classification layer (a Linear or a 1x1 Conv2d)."""

    def __init__(self, net: nn.Module, head: str):
        super().__init__()
        self.net = net
        self.head_name = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @property
    def head(self) -> nn.Module:
        return self.net.get_submodule(self.head_name)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the final layer with a freshly initialised one for `num_classes` outputs."""
        old = self.head
        if isinstance(old, nn.Linear):
            new = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
        elif isinstance(old, nn.Conv2d):
            new = nn.Conv2d(old.in_channels, num_classes, old.kernel_size, old.stride, old.padding)
        else:
            raise TypeError(f"cannot reset a head of type {type(old).__name__}")
        parent_name, _, child = self.head_name.rpartition(".")
        parent = self.net.get_submodule(parent_name) if parent_name else self.net
        setattr(parent, child, new.to(next(old.parameters()).device))

    def freeze_backbone(self) -> None:
        """Only the head keeps requires_grad."""
        head_params = {id(p) for p in self.head.parameters()}
        for p in self.parameters():
            p.requires_grad_(id(p) in head_params)


def find_last_layer(net: nn.Module) -> str:
    """Dotted name of the last Linear (or 1x1 Conv2d, as in SqueezeNet) registered in `net`."""
    last = None
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)):
            last = name
    if last is None:
        raise TypeError(f"{type(net).__name__} has no Linear or 1x1 Conv2d classification layer")
    return last
