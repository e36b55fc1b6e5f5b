"""The Trainer: builds data, model and optimizer from a TrainConfig, runs the epochs, and hands events to callbacks."""
from __future__ import annotations

import math
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..config import TrainConfig
from ..data import PreparedData, make_batches, open_source, prepare_data
from ..data.augment import BatchAugment
from ..errors import UserError
from ..models import create_model, default_size, load_backbone_weights
from ..track.console import Console, ConsoleProgress
from ..track.rundir import MetricsFile, new_run_dir, read_metrics, write_config
from . import checkpoint as ckpt
from .callbacks import Checkpointer, EarlyStopping
from .device import autocast_for, device_label, prefers_channels_last, resolve_device
from .loop import Inputs, StepParts, evaluate, train_one_epoch
from .optim import LOSSES, OPTIMIZERS, lr_multiplier


class Trainer:
    def __init__(self, cfg: TrainConfig, console: Console | None = None, resume: str | Path | None = None):
        self.cfg, self.console = cfg, console or Console()
        self.resume_dir = Path(resume) if resume else None
        self.epoch = self.step = self.best_epoch = 0
        self.best_acc = -1.0
        self.history: list[dict[str, Any]] = []
        self.should_stop = False

    # ---- setup -------------------------------------------------------------------------------------------------

    def setup(self) -> "Trainer":
        cfg = self.cfg
        self.device = resolve_device(cfg.device)
        self.device_label = device_label(self.device, cfg.amp)
        _seed_everything(cfg.seed)
        configure_backends(self.device, cfg.deterministic)
        self.data = self._prepare_data()
        spec = self.data.spec
        self.model_args = {"in_channels": spec.channels, "num_classes": spec.num_classes,
                           "image_size": spec.image_size, **cfg.model_args}
        self.model = create_model(cfg.model, **self.model_args)
        if cfg.weights:
            missing = load_backbone_weights(self.model, cfg.weights)
            self.console.print(f"weights: {cfg.weights} ({len(missing)} tensor(s) left as initialised, the head among them)")
        if cfg.freeze_backbone:
            self.model.freeze_backbone()
        self.model.to(self.device)
        channels_last = prefers_channels_last(self.model, self._probe_batch(cfg.batch_size), self.device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.train_batches = make_batches(self.data.train, spec, cfg.batch_size, True, self.device, cfg.seed,
                                          cfg.workers, cfg.augment, cfg.cache)
        self.val_batches = make_batches(self.data.val, spec, max(cfg.batch_size, 256), False, self.device, cfg.seed,
                                        cfg.workers, cache=cfg.cache)
        self.steps_per_epoch = len(self.train_batches)
        augment = BatchAugment(cfg.augment, spec.image_size, torch.Generator().manual_seed(cfg.seed + 1)) \
            if self.data.in_memory and cfg.augment != "none" else None
        self.aug_generator = augment.gen if augment else None
        self.parts = self._step_parts(Inputs(spec, augment, channels_last))
        self.run_dir = self.resume_dir or new_run_dir(cfg.out, cfg.runs_dir, cfg.data, cfg.model)
        if self.resume_dir:
            self._load_resume_state()
        write_config(self.run_dir, cfg.to_dict())
        if not self.resume_dir:
            save_samples(self.data.val, self.data.spec, self.run_dir / "samples")
        return self

    def _probe_batch(self, batch_size: int) -> torch.Tensor:
        s = self.data.spec
        return torch.randn(min(batch_size, 256), s.channels, s.image_size, s.image_size, device=self.device)

    def _prepare_data(self) -> PreparedData:
        cfg = self.cfg
        source = open_source(cfg.data, cfg.data_dir, cfg.val_split, cfg.seed)
        data = prepare_data(source, cfg.image_size, cfg.channels, default_size(cfg.model), cfg.cache, cfg.strict,
                            cfg.disk_cache)
        if len(data.train) == 0 or len(data.val) == 0:
            raise UserError(f"{cfg.data}: no readable images left in the {'training' if not len(data.train) else 'validation'} split")
        s = data.spec
        self.console.print(f"{source.summary()}; layout: {source.layout}; input {s.channels}x{s.image_size}x{s.image_size}"
                           f"{' (in memory)' if data.in_memory else ' (streamed from files)'}")
        for note in data.notes:
            self.console.print(f"note: {note}")
        return data

    def _step_parts(self, inputs: Inputs) -> StepParts:
        cfg = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer = OPTIMIZERS.get(cfg.optimizer)(params, cfg)
        total = cfg.epochs * self.steps_per_epoch
        warmup = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg.schedule, total, warmup))
        loss_fn = LOSSES.get(cfg.loss)(label_smoothing=cfg.label_smoothing)
        forward = torch.compile(self.model) if cfg.compile else self.model  # same parameters, compiled graph
        return StepParts(forward, optimizer, scheduler, loss_fn, inputs, autocast_for(self.device, cfg.amp), cfg.clip_grad)

    # ---- the run -----------------------------------------------------------------------------------------------

    def fit(self, extra_callbacks: list | None = None) -> dict[str, Any]:
        cfg = self.cfg
        callbacks = [ConsoleProgress(self.console), MetricsFile(self.run_dir), Checkpointer()]
        if cfg.patience:
            callbacks.append(EarlyStopping(cfg.patience))
        if cfg.tensorboard:
            from ..track.tensorboard import TensorBoardLogger

            callbacks.append(TensorBoardLogger(self.run_dir / "tb"))
        self.callbacks = callbacks + list(extra_callbacks or [])
        self.console.print(f"model: {cfg.model} ({_count(self.model):,} parameters) | {cfg.optimizer} lr {cfg.lr:g} "
                           f"| {cfg.epochs} epochs x {self.steps_per_epoch} steps | {self.device_label} | run: {self.run_dir}")
        started = time.perf_counter()
        self._emit("on_fit_start")
        try:
            while self.epoch < cfg.epochs and not self.should_stop:
                self.epoch += 1
                self._emit("on_epoch_start")
                record = self._run_epoch()
                self.history.append(record)
                self._emit("on_epoch_end", record)
        except BaseException as error:
            self._emit("on_exception", error)
            raise
        summary = self.summary(time.perf_counter() - started)
        self._emit("on_fit_end", summary)
        return summary

    def _run_epoch(self) -> dict[str, Any]:
        started = time.perf_counter()
        train = train_one_epoch(self.parts, self.train_batches, self._on_step)
        train_s = time.perf_counter() - started
        if not math.isfinite(train["loss"]):
            raise UserError(f"the training loss became {train['loss']} in epoch {self.epoch}; lower --lr (now {self.cfg.lr:g}) "
                            "or check the input data; the last good checkpoint is kept")
        val = evaluate(self.parts.model, self.val_batches, self.parts.inputs, self.parts.loss_fn, self.parts.autocast)
        best = val["acc"] > self.best_acc
        if best:
            self.best_acc, self.best_epoch = val["acc"], self.epoch
        return {"epoch": self.epoch, "step": self.step, "train_loss": train["loss"], "train_acc": train["acc"],
                "val_loss": val["loss"], "val_acc": val["acc"], "lr": self.parts.optimizer.param_groups[0]["lr"],
                "images_per_s": self.train_batches.num_samples / train_s, "epoch_s": time.perf_counter() - started,
                "best": best}

    def _on_step(self, batch_size: int, loss: torch.Tensor) -> None:
        self.step += 1
        self._emit("on_batch_end", batch_size, loss)

    def _emit(self, hook: str, *args) -> None:
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self, *args)

    def summary(self, wall_s: float) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        rates = [r["images_per_s"] for r in self.history]
        return {
            "run_dir": str(self.run_dir), "checkpoint": str(self.run_dir / "checkpoints" / "best.safetensors"),
            "tensorboard": str(self.run_dir / "tb") if self.cfg.tensorboard else None,
            "data": self.cfg.data, "model": self.cfg.model, "epochs": self.epoch,
            "best_val_acc": self.best_acc, "best_epoch": self.best_epoch,
            **{k: last.get(k) for k in ("train_loss", "train_acc", "val_loss", "val_acc")},
            "images_per_s": float(np.median(rates)) if rates else None, "device": self.device_label,
            "wall_s": round(wall_s, 2),
        }

    # ---- checkpoints -------------------------------------------------------------------------------------------

    def checkpoint_meta(self) -> dict[str, Any]:
        return {
            "model": self.cfg.model, "model_args": self.model_args, "spec": self.data.spec.to_dict(),
            "config": self.cfg.to_dict(), "epoch": self.epoch, "step": self.step,
            "metrics": {k: v for k, v in (self.history[-1] if self.history else {}).items() if k != "best"},
            "best_val_acc": self.best_acc, "best_epoch": self.best_epoch,
            "versions": {"dlkit": __version__, "torch": torch.__version__, "python": platform.python_version()},
        }

    def save_checkpoint(self, name: str, with_state: bool = False) -> Path:
        folder = self.run_dir / "checkpoints"
        meta = self.checkpoint_meta()
        if with_state:  # the state first: a model file never points at state that is not on disk yet
            tensors, skeleton = ckpt.flatten_state(self._training_state())
            ckpt.save_tensors(folder / f"{name}.state.safetensors", tensors, {"state": skeleton, "step": self.step})
        path = folder / f"{name}.safetensors"
        ckpt.save_tensors(path, self.model.state_dict(), meta)
        return path

    def _training_state(self) -> dict[str, Any]:
        np_state = np.random.get_state()
        return {
            "optimizer": self.parts.optimizer.state_dict(),
            "scheduler": self.parts.scheduler.state_dict(),  # lr_lambdas is [None]: our multipliers are plain closures
            "rng": {"torch": torch.get_rng_state(), "python": _jsonable(random.getstate()),
                    "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
                    "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
            "loader": self.train_batches.generator.get_state(),
            "augment": self.aug_generator.get_state() if self.aug_generator is not None else None,
            "history": self.history, "best_acc": self.best_acc, "best_epoch": self.best_epoch,
        }

    def _load_resume_state(self) -> None:
        folder = self.run_dir / "checkpoints"
        weights, meta = ckpt.load_tensors(folder / "last.safetensors")
        tensors, state_meta = ckpt.load_tensors(folder / "last.state.safetensors")
        if meta.get("model") != self.cfg.model or meta.get("spec", {}).get("class_names") != list(self.data.spec.class_names):
            raise UserError(f"cannot resume {self.run_dir}: its model or classes differ from this data/model; start a new run")
        state = ckpt.unflatten_state(state_meta["state"], tensors)
        self.model.load_state_dict(weights)
        self.parts.optimizer.load_state_dict(state["optimizer"])
        self.parts.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        random.setstate(_tupled(rng["python"]))
        np.random.set_state((rng["numpy"][0], rng["numpy"][1].numpy().astype(np.uint32), *rng["numpy"][2:]))
        if rng["cuda"]:
            torch.cuda.set_rng_state_all(rng["cuda"])
        self.train_batches.generator.set_state(state["loader"])
        if self.aug_generator is not None and state["augment"] is not None:
            self.aug_generator.set_state(state["augment"])
        self.history = state["history"] or read_metrics(self.run_dir)
        self.best_acc, self.best_epoch = state["best_acc"], state["best_epoch"]
        self.epoch, self.step = meta["epoch"], meta["step"]
        self.console.print(f"resuming {self.run_dir} after epoch {self.epoch} (step {self.step})")


def save_samples(samples, spec, folder: Path, count: int = 8) -> None:
    """A few held-out images as PNG files named <n>_<class>.png, ready for `dlkit predict` (in-memory data only)."""
    if samples.images is None:
        return
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    step = max(1, len(samples) // count)
    for n, i in enumerate(range(0, min(len(samples), step * count), step)):
        array = samples.images[i].permute(1, 2, 0).squeeze(-1).numpy()
        name = spec.class_names[int(samples.labels[i])].replace("/", "-")
        Image.fromarray(array).save(folder / f"{n}_{name}.png")


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """cuDNN autotuning unless results must repeat; deterministic kernels when asked."""
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = not deterministic


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _jsonable(obj):
    return [_jsonable(x) for x in obj] if isinstance(obj, (list, tuple)) else obj


def _tupled(obj):
    return tuple(_tupled(x) for x in obj) if isinstance(obj, list) else obj
