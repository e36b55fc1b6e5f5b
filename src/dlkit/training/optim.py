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


@OPTIMIZERS.register("muon", grouped=True, help="Muon (torch.optim.Muon) for 2-D weights, Nesterov SGD (--momentum) "
                     "for biases and the head at the model's own rates (airbench)")
def muon(model, cfg):
    """airbench94_muon's optimizers: Muon at --lr for the matrices (the fast net's flattened filters, a Linear's
    weights), each renormalised to norm sqrt(rows) before its step as airbench does (with BatchNorm after it the
    scale is free, so a fixed one keeps Muon's step size meaningful); Nesterov SGD for the rest, at the rate the model
    names for the head and the biases relative to --lr (FastNet.lr_scales). airbench's SGD rates are for a summed
    loss; dlkit's loss is the batch mean, so they are multiplied by the batch size, and --weight-decay is, as there,
    the fraction those parameters shrink per step (not multiplied by the rate). Another network's other parameters
    (4-D filters included: torch's Muon takes matrices only) get plain SGD at --lr and --weight-decay."""
    own = getattr(model, "lr_scales", None)  # another network: SGD at plain --lr and --weight-decay for the rest
    scales = {"head": 1.0, "bias": 1.0, **(own or {})}
    per_sample = cfg.batch_size if own else 1
    head = {id(p) for p in model.head.parameters()} if hasattr(model, "head") else set()
    matrices, groups = [], {"head": [], "bias": []}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        if id(p) in head:
            groups["head"].append(p)
        elif p.ndim == 2:
            matrices.append(p)
        else:
            groups["bias"].append(p)
    parts = []
    if matrices:
        filters = torch.optim.Muon(matrices, lr=cfg.lr, momentum=0.6, nesterov=True, weight_decay=0.0, ns_steps=3)
        filters.param_groups[0].update(lr_scale=1.0, decay="none")  # airbench's Muon has no weight decay
        filters.register_step_pre_hook(_renormalise)
        parts.append(filters)
    sgd_groups = []
    for name, params in groups.items():
        if params:
            scale = scales[name] * per_sample
            decay = cfg.weight_decay / (cfg.lr * scale) if own else cfg.weight_decay
            sgd_groups.append({"params": params, "lr": cfg.lr * scale, "weight_decay": decay, "lr_scale": scale,
                               "decay": "per_step" if own else "rate"})
    if sgd_groups:
        parts.append(torch.optim.SGD(sgd_groups, lr=cfg.lr, momentum=cfg.momentum or 0.85, nesterov=True,
                                     **_foreach()))
    return parts[0] if len(parts) == 1 else Optimizers(parts)


@torch.no_grad()
def _renormalise(optimizer, args, kwargs) -> None:
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))


class Optimizers(torch.optim.Optimizer):
    """Several optimizers stepped as one (airbench: Muon and SGD), so the loop, the schedule and checkpoints see one:
    param_groups is every optimizer's groups (the same dicts, so the schedule sets their rates), and state_dict
    holds every optimizer's state, so a resumed run continues all of them."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):  # no super().__init__: the parts own the groups
        self.optimizers = optimizers
        self.defaults, self.state = {}, {}
        self._optimizer_step_pre_hooks, self._optimizer_step_post_hooks = {}, {}

    @property
    def param_groups(self) -> list[dict]:
        # read afresh each time: a part's load_state_dict replaces its group dicts, and a list kept from before would
        # leave the schedule setting rates on the old ones (a resumed run then stepped at the saved, stale rates)
        return [group for o in self.optimizers for group in o.param_groups]

    def step(self, closure=None):
        for optimizer in self.optimizers:
            optimizer.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state_dict: dict) -> None:
        saved = state_dict.get("optimizers", [])
        if len(saved) != len(self.optimizers):
            from ..errors import UserError

            raise UserError(f"the checkpoint holds {len(saved)} optimizer state(s) and this run builds "
                            f"{len(self.optimizers)}; start a new run from its weights with --resume-weights-only")
        for optimizer, state in zip(self.optimizers, saved):
            optimizer.load_state_dict(state)

    def __repr__(self) -> str:
        return " + ".join(type(o).__name__ for o in self.optimizers)


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """The config's optimizer over the model's trainable parameters; a grouped one (muon) splits them itself.
    Each group carries lr_scale, its rate relative to --lr, so a resumed run with another --lr keeps the ratios, and
    may carry decay, how --weight-decay applies to it (resume.py): "rate" (torch's, the default), "per_step" (the
    fraction shrunk per step, whatever the rate) or "none"."""
    entry = OPTIMIZERS.entry(cfg.optimizer)
    if entry.info.get("grouped"):
        return entry.obj(model, cfg)
    optimizer = entry.obj(_head_and_backbone(model, cfg), cfg)
    for group in optimizer.param_groups:
        group.setdefault("lr_scale", 1.0)
    return optimizer


def _head_and_backbone(model: torch.nn.Module, cfg) -> list:
    """The trainable parameters; with --backbone-lr-scale, as two groups: the head at --lr, the rest at lr x scale
    (fine-tuning moves pretrained layers less than the new head)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.backbone_lr_scale == 1.0 or not hasattr(model, "head"):
        return params
    head = {id(p) for p in model.head.parameters()}
    backbone = [p for p in params if id(p) not in head]
    groups = [{"params": [p for p in params if id(p) in head], "lr_scale": 1.0},
              {"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale, "lr_scale": cfg.backbone_lr_scale}]
    return [g for g in groups if g["params"]]


# ---- schedules: pure functions of progress in [0, 1] -> lr multiplier (warm-up is applied around them) -----------

@SCHEDULES.register("none", help="constant learning rate")
def constant(progress: float) -> float:
    return 1.0


@SCHEDULES.register("linear", help="linear decay to zero (airbench)")
def linear(progress: float) -> float:
    return max(0.0, 1.0 - progress)


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
