"""Test-time augmentation: the model's class probabilities averaged over a few fixed views of each image.

A run records its mode (`--tta`, set by the `fast` recipe); evaluate, predict, serve, the report and the ONNX
export use it unless told `--tta none`. The views and weights are airbench's (its tta_level 2): the image and its
mirror, each also shifted one pixel up-left and down-right (reflect padding), the unshifted views weighted 1/2 and
the shifted ones 1/4 each. Probabilities are averaged (not logits), and the output is their log, so softmax of it is
that average and everything downstream of the logits (top-k, argmax, loss) works unchanged.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import TTA_MODES
from ..errors import UserError


def check_mode(mode: str | None) -> str:
    mode = mode or "none"
    if mode not in TTA_MODES:
        raise UserError(f"--tta must be one of {', '.join(TTA_MODES)} (got {mode!r})")
    return mode


def _shifted(x: torch.Tensor) -> list[torch.Tensor]:
    """The image moved by one pixel up-left and down-right, the border filled by reflection."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    return [padded[..., 0:h, 0:w], padded[..., 2:h + 2, 2:w + 2]]


def views(x: torch.Tensor, mode: str) -> list[tuple[torch.Tensor, float]]:
    """(view, weight) pairs whose weights sum to 1."""
    base = [(x, 1.0)] if mode in ("none", "shift") else [(x, 0.5), (x.flip(-1), 0.5)]
    if mode not in ("shift", "flip-shift"):
        return base
    return [(v, w * share) for image, w in base
            for v, share in [(image, 0.5), *((s, 0.25) for s in _shifted(image))]]


class TestTimeAugment(nn.Module):
    """model(x) -> log of the weighted mean of softmax(model(view)) over the mode's views (the plain logits for
    mode none). A module, so the ONNX export traces the views into the graph."""

    __test__ = False  # not a pytest test class, whatever its name

    def __init__(self, model: nn.Module, mode: str):
        super().__init__()
        self.model, self.mode = model, check_mode(mode)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "none":
            return self.model(x)
        parts = [self.model(view).float().log_softmax(1) + math.log(weight) for view, weight in views(x, self.mode)]
        return torch.logsumexp(torch.stack(parts), dim=0)


def with_tta(model: nn.Module, mode: str | None) -> nn.Module:
    mode = check_mode(mode)
    return model if mode == "none" else TestTimeAugment(model, mode)
