"""Checkpoints, and everything needed to continue a run exactly: the weights with their metadata (what `dlkit
predict` needs to rebuild the model), and beside them the optimizer, scheduler, RNG states and the place in the
epoch's order.

NumPy's and Python's RNG states are stored as tensors and JSON, so loading them needs no pickle.
"""
from __future__ import annotations

import platform
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from .. import storage as ckpt
from ..config import absolute_path
from ..errors import UserError
from ..tasks import task_meta
from .distributed import same_on_every_rank


def checkpoint_meta(trainer) -> dict[str, Any]:
    completed = trainer.epoch - 1 if trainer.step_in_epoch else trainer.epoch
    cfg = trainer.cfg
    return {
        "model": cfg.model, "model_args": trainer.model_args, "spec": trainer.data.spec.to_dict(),
        "modality": trainer.modality.name, "task": task_meta(trainer.task), "monitor": trainer.monitor,
        **({"model_source": trainer.model_source} if trainer.model_source else {}),
        "config": cfg.to_dict(), "data": cfg.data, "epoch": completed, "step": trainer.step,
        "step_in_epoch": trainer.step_in_epoch,
        "metrics": {k: v for k, v in (trainer.history[-1] if trainer.history else {}).items() if k != "best"},
        "best_value": trainer.best_value, "best_epoch": trainer.best_epoch,
        "versions": {"dlkit": __version__, "torch": torch.__version__, "python": platform.python_version()},
    }


def save_checkpoint(trainer, name: str, with_state: bool = False) -> Path:
    """Rank 0 writes; under DDP every rank calls it with the same arguments, as capturing the state is collective.
    trainer.model is the plain module (DDP only wraps it), so the file is the single-process format."""
    folder = trainer.run_dir / "checkpoints"
    state = capture(trainer) if with_state else None
    path = folder / f"{name}.safetensors"
    if not trainer.dist.is_main:
        return path
    meta = checkpoint_meta(trainer)
    if state is not None:  # the state first: a model file never points at state that is not on disk yet
        tensors, skeleton = ckpt.flatten_state(state)
        ckpt.save_tensors(folder / f"{name}.state.safetensors", tensors, {"state": skeleton, "step": trainer.step})
    ckpt.save_tensors(path, trainer.model.state_dict(), meta)
    return path


def load_last(trainer) -> None:
    """Continue the run in trainer.run_dir from its `last` checkpoint, if it is this run's (same model, data,
    optimizer and classes)."""
    folder, cfg = trainer.run_dir / "checkpoints", trainer.cfg
    weights, meta = ckpt.load_tensors(folder / "last.safetensors")
    tensors, state_meta = ckpt.load_tensors(folder / "last.state.safetensors")
    if state_meta.get("step") != meta.get("step"):
        raise UserError(f"{folder}: last.safetensors and last.state.safetensors are from different steps; "
                        "start a new run with --resume-weights-only")
    from ..infer.predictor import damaged_metadata

    with damaged_metadata(folder / "last.safetensors"):  # metadata and state are data: a damaged one is one line
        same = {"model": meta.get("model") == cfg.model,
                "data": absolute_path(meta.get("data", cfg.data)) == cfg.data,
                "optimizer": meta["config"]["optimizer"] == cfg.optimizer,
                "classes": list(meta["spec"].get("class_names", [])) == list(trainer.data.spec.class_names)}
        differs = [what for what, ok in same.items() if not ok]
        if differs:
            raise UserError(f"cannot resume {trainer.run_dir}: its {' and '.join(differs)} differ from this run's; "
                            f"use --resume-weights-only {trainer.run_dir} to start a new run from its weights")
        recorded, now = (meta.get("model_source") or {}).get("sha256"), (trainer.model_source or {}).get("sha256")
        if recorded and now and recorded != now:
            trainer.console.warn(f"{trainer.model_source.get('file')} changed since this run's last checkpoint (SHA-256 "
                                 "differs); its weights still have to load strictly")
        trainer.model.load_state_dict(weights)
        trainer.epoch, trainer.step, trainer.step_in_epoch = meta["epoch"], meta["step"], meta.get("step_in_epoch", 0)
        restore(trainer, ckpt.unflatten_state(state_meta["state"], tensors), trainer.step_in_epoch)
    where = (f"step {trainer.step_in_epoch} of epoch {trainer.epoch + 1}" if trainer.step_in_epoch
             else f"epoch {trainer.epoch}")
    trainer.console.print(f"resuming {trainer.run_dir} after {where} (global step {trainer.step})")


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


# --weight-decay as a group's weight_decay: torch's (times the rate), a fraction per step (muon's SGD groups), none
DECAY_RULES = {"rate": lambda decay, lr: decay, "per_step": lambda decay, lr: decay / lr, "none": lambda decay, lr: 0.0}


def _apply_config(optimizer, scheduler, cfg) -> None:
    """The resumed run's --lr and --weight-decay win over the saved ones (a no-op when unchanged)."""
    scheduler.base_lrs = [cfg.lr * group.get("lr_scale", 1.0) for group in optimizer.param_groups]
    for group, base, shape in zip(optimizer.param_groups, scheduler.base_lrs, _lambdas(scheduler, optimizer)):
        group["initial_lr"], group["lr"] = base, base * shape(scheduler.last_epoch)
        if "weight_decay" in group:  # each group's rule (optim.make_optimizer): muon's filters have none
            group["weight_decay"] = DECAY_RULES[group.get("decay", "rate")](cfg.weight_decay, base)


def _lambdas(scheduler, optimizer) -> list:
    lambdas = scheduler.lr_lambdas
    return lambdas if len(lambdas) == len(optimizer.param_groups) else lambdas[:1] * len(optimizer.param_groups)


def _lists(obj):
    return [_lists(x) for x in obj] if isinstance(obj, (list, tuple)) else obj


def _tuples(obj):
    return tuple(_tuples(x) for x in obj) if isinstance(obj, list) else obj
