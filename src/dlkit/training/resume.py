"""Everything needed to continue a run exactly: optimizer, scheduler, RNG states and the place in the epoch's order.

NumPy's and Python's RNG states are stored as tensors and JSON, so loading them needs no pickle.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from .distributed import same_on_every_rank


def capture_rng() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": _lists(random.getstate()),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate(_tuples(rng["python"]))
    np.random.set_state((rng["numpy"][0], rng["numpy"][1].numpy().astype(np.uint32), *rng["numpy"][2:]))
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def capture(trainer) -> dict[str, Any]:
    """The state to save. Under DDP every rank calls it (it gathers): the weights, optimizer and order are the same on
    every rank, but each rank's dropout and augmentation draws are its own, and its totals cover its own samples."""
    dist = trainer.dist
    own = {"rng": capture_rng(),
           "augment": trainer.aug_generator.get_state() if trainer.aug_generator is not None else None}
    ranks = dist.gather_objects(own)  # on rank 0, which writes: [rank 0's, rank 1's, ...]
    totals = dist.sum(trainer.totals.clone()) if trainer.totals is not None else None
    return {
        "optimizer": trainer.parts.optimizer.state_dict(),
        "scheduler": trainer.parts.scheduler.state_dict(),  # lr_lambdas is [None]: our multipliers are plain closures
        "rng": own["rng"],
        # the loader's generator before drawing the order of the epoch to (re)start: this one's if mid-epoch
        "epoch_order": trainer.epoch_order_state if trainer.step_in_epoch else trainer.train_batches.generator.get_state(),
        "augment": own["augment"],
        "totals": totals.cpu() if totals is not None else None,
        "history": trainer.history, "best_value": trainer.best_value, "best_epoch": trainer.best_epoch,
        "world_size": dist.world_size, "other_ranks": (ranks or [])[1:],
    }


def restore(trainer, state: dict[str, Any], step_in_epoch: int) -> None:
    dist = trainer.dist
    saved = state.get("world_size", 1)
    if saved != dist.world_size:  # the global batch, the steps per epoch and the schedule all depend on it
        raise same_on_every_rank(UserError(
            f"cannot resume {trainer.run_dir}: it was trained by {saved} process(es) and this run has "
            f"{dist.world_size}; resume with {saved} (dlkit train --resume {trainer.run_dir} --nproc-per-node {saved}, "
            f"or the same torchrun command), or start a new run from its weights with --resume-weights-only "
            f"{trainer.run_dir}"))
    trainer.parts.optimizer.load_state_dict(state["optimizer"])
    trainer.parts.scheduler.load_state_dict(state["scheduler"])
    _apply_config(trainer.parts.optimizer, trainer.parts.scheduler, trainer.cfg)
    own = state if dist.rank == 0 else state["other_ranks"][dist.rank - 1]
    restore_rng(own["rng"])
    if own["augment"] is not None and trainer.aug_generator is not None:
        trainer.aug_generator.set_state(own["augment"])
    trainer.history, trainer.best_epoch = state["history"], state["best_epoch"]
    trainer.best_value = state["best_value"] if "best_value" in state else state.get("best_acc")  # older runs: accuracy
    trainer.train_batches.generator.set_state(state["epoch_order"])
    if step_in_epoch:  # mid-epoch: draw the same order again, skip what was done, keep the running totals
        trainer.train_batches.skip_batches = step_in_epoch
        # the saved totals are the job's: rank 0 carries them on, the others start from zero (their sum is the same)
        trainer.resume_totals = state["totals"] if dist.is_main else torch.zeros_like(state["totals"])


def _apply_config(optimizer, scheduler, cfg) -> None:
    """The resumed run's --lr and --weight-decay win over the saved ones (a no-op when unchanged)."""
    scheduler.base_lrs = [cfg.lr] * len(optimizer.param_groups)
    multiplier = scheduler.lr_lambdas[0](scheduler.last_epoch)
    for group in optimizer.param_groups:
        group["initial_lr"], group["lr"], group["weight_decay"] = cfg.lr, cfg.lr * multiplier, cfg.weight_decay


def _lists(obj):
    return [_lists(x) for x in obj] if isinstance(obj, (list, tuple)) else obj


def _tuples(obj):
    return tuple(_tuples(x) for x in obj) if isinstance(obj, list) else obj
