"""A model run over batches without gradients: what validation, evaluation and the report's figures read."""
from __future__ import annotations

import contextlib

import torch

from ..data.transforms import Inputs


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, batches, inputs: Inputs,
                   autocast=contextlib.nullcontext) -> tuple[torch.Tensor, torch.Tensor]:
    """(outputs, targets) for every batch, on the CPU, in order: logits for classes, scaled values for numbers."""
    model.eval()
    all_logits, all_labels = [], []
    for images, labels in batches:
        with autocast():
            logits = model(inputs(images, train=False))
        all_logits.append(logits.float().cpu())
        all_labels.append(labels.cpu())
    return torch.cat(all_logits), torch.cat(all_labels)
