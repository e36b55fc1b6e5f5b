"""Optimizers and learning-rate schedules, each a registry of small functions (losses: dlkit/losses.py)."""
from __future__ import annotations

import math

import torch

from ..losses import LOSSES  # noqa: F401  (training's public name for the loss registry)
from ..registry import Registry

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("schedule")


# ---- optimizers: (params, cfg) -> torch.optim.Optimizer -----------------------------------------------------------

def _foreach() -> dict:
    """Multi-tensor (foreach) updates: one kernel per group of tensors instead of one per parameter."""
    return {"foreach": True}


@OPTIMIZERS.register("sgd", help="stochastic gradient descent (--momentum, --nesterov)")
def sgd(params, cfg):
    momentum = cfg.momentum if cfg.nesterov or cfg.momentum else 0.0
    return torch.optim.SGD(params, lr=cfg.lr, momentum=momentum, nesterov=cfg.nesterov and momentum > 0,
                           weight_decay=cfg.weight_decay, **_foreach())


@OPTIMIZERS.register("adagrad", help="Adagrad")
def adagrad(params, cfg):
    return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **_foreach())


@OPTIMIZERS.register("rmsprop", help="RMSprop (--momentum)")
def rmsprop(params, cfg):
    return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, **_foreach())


@OPTIMIZERS.register("adam", help="Adam (L2 penalty through --weight-decay)")
def adam(params, cfg):
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **_foreach())


@OPTIMIZERS.register("adamw", help="AdamW (decoupled --weight-decay)")
def adamw(params, cfg):
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **_foreach())


# ---- schedules: pure functions of progress in [0, 1] -> lr multiplier (warm-up is applied around them) -----------

@SCHEDULES.register("none", help="constant learning rate")
def constant(progress: float) -> float:
    return 1.0


@SCHEDULES.register("step", help="x0.1 after each third of training")
def step_decay(progress: float) -> float:
    return 0.1 ** min(2, int(progress * 3))


@SCHEDULES.register("cosine", help="cosine decay to zero")
def cosine(progress: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@SCHEDULES.register("onecycle", help="one cycle: warm up over 30% of steps, then cosine down")
def onecycle(progress: float) -> float:
    return 0.04 + 0.96 * progress / 0.3 if progress < 0.3 else cosine((progress - 0.3) / 0.7)


def lr_multiplier(schedule: str, total_steps: int, warmup_steps: int):
    """step -> multiplier of the peak lr: linear warm-up, then the schedule over the remaining steps."""
    shape = SCHEDULES.get(schedule)

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return shape((step - warmup_steps) / max(1, total_steps - warmup_steps))

    return multiplier
