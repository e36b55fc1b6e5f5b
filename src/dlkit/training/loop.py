"""The loop, top to bottom: train_one_epoch and evaluate. Metrics accumulate on the device; no .item() per step."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch

from ..data.transforms import Inputs


def finite(loss: torch.Tensor) -> bool:
    return bool(torch.isfinite(loss))


@dataclass
class StepParts:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loss_fn: Callable
    inputs: Inputs
    autocast: Callable[[], contextlib.AbstractContextManager]
    clip_grad: float | None = None
    skip_nonfinite: bool = False  # --nan-policy skip-batch: drop a batch whose loss is NaN/inf (one sync per step)
    score: Callable | None = None  # (outputs, targets) -> summed per-sample score on the device (the task's)
    all_finite: Callable[[torch.Tensor], bool] = finite  # under DDP: on every rank (they skip a batch together)
    graphed: Callable | None = None  # on CUDA: (x, labels, totals) -> loss, one captured graph a step (graphed.py)


def new_totals(device) -> torch.Tensor:
    """[loss sum, score sum (correct for classes), seen, skipped] of an epoch, kept on the device."""
    return torch.zeros(4, device=device)


def train_one_epoch(parts: StepParts, batches, totals: torch.Tensor,
                    on_step: Callable[[int, torch.Tensor], None]) -> dict[str, float]:
    """One pass over `batches`, adding into `totals` in place; on_step(batch_size, loss) after each step.

    Under DDP a batch carries a third item, the weight of this rank's mean loss (see data.loaders.Shard): with it the
    gradients DDP averages are the global batch's; a weight-0 batch is a stand-in that steps but counts no sample.
    """
    model, optimizer = parts.model, parts.optimizer
    model.train()
    for images, labels, *weight in batches:
        weight = weight[0] if weight else None
        x = parts.inputs(images, train=True)
        if parts.graphed is not None:  # choose() leaves DDP's weights and --nan-policy skip-batch to the eager step
            loss = parts.graphed(x, labels, totals)
            on_step(len(labels), loss)
            continue
        with parts.autocast():
            logits = model(x)
            loss = parts.loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        n = 0 if weight == 0 else len(labels)
        if parts.skip_nonfinite and not parts.all_finite(loss):
            totals[3] += 1
            on_step(n, loss.detach())
            continue
        (loss if weight is None else loss * weight).backward()
        if parts.clip_grad:
            torch.nn.utils.clip_grad_norm_(model.parameters(), parts.clip_grad)
        optimizer.step()
        parts.scheduler.step()
        if n:
            totals[0] += loss.detach().float() * n  # in-place on the device: no host sync per step
            totals[1] += parts.score(logits.detach(), labels) if parts.score else (logits.argmax(1) == labels).sum()
            totals[2] += n
        on_step(n, loss.detach())
    return epoch_metrics(totals)


def epoch_metrics(totals: torch.Tensor) -> dict[str, float]:
    loss_sum, score, count, skipped = totals.tolist()
    count = max(count, 1.0)
    return {"loss": loss_sum / count, "acc": score / count, "score": score, "count": count, "skipped": int(skipped)}
