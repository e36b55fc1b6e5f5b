"""The Trainer: builds data, model and optimizer from a TrainConfig, runs the epochs, and hands events to callbacks."""
from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..config import TrainConfig
from ..data import PreparedData, make_batches
from ..data.augment import BatchAugment
from ..data.modality import inputs_for, modality_for
from ..models.user import load_models_from
from ..errors import TrainingInterrupted, UserError
from ..models import default_size, smallest_size
from ..track.console import Console, ConsoleProgress
from ..track.rundir import MetricsFile, new_run_dir, save_samples, write_config
from .. import storage as ckpt
from . import distributed, graphed, resume
from .batchsize import OutOfMemory, find_batch_size
from .callbacks import Checkpointer, EarlyStopping
from ..device import (amp_dtype, autocast_for, configure_backends, device_label, prefers_channels_last, process_seconds,
                      resolve_device)
from .model_setup import build_model
from ..infer.logits import predict_logits
from .loop import StepParts, epoch_metrics, finite, new_totals, train_one_epoch
from .optim import lr_multiplier, make_optimizer
from .run_summary import SetupClock, count_parameters, run_summary, timing
from .signals import seed_everything, signals_caught


# hooks called between training steps, whose time counts as per-epoch tracking (on_batch_end runs inside the steps)
TRACKING_HOOKS = ("on_epoch_start", "on_epoch_end", "on_validation_end")


class _StopNow(Exception):
    """--stop-at was reached by a validation within the epoch: the epoch ends at this step."""


class Trainer:
    def __init__(self, cfg: TrainConfig, console: Console | None = None, resume: str | Path | None = None,
                 model_object: Any = None, data_objects: tuple | None = None, prepared: PreparedData | None = None):
        self.cfg, self.console = cfg, console or Console()
        self.prepared = prepared  # data already read by an earlier trainer on the same config (the LR finder's)
        self.model_object = model_object  # the learner's own network, passed from Python
        self.data_objects = data_objects  # the learner's own (train, val) Datasets, passed from Python
        self.model_source: dict[str, Any] | None = None
        self.resume_dir = Path(resume) if resume else None
        self.epoch = self.step = self.best_epoch = self.step_in_epoch = 0
        self.best_value: float | None = None   # of the monitored validation metric
        self.history: list[dict[str, Any]] = []
        self.should_stop = False
        self.stopped: dict[str, Any] | None = None   # why training ended before --epochs, when it did
        self.seconds = {"train": 0.0, "val": 0.0, "tracking": 0.0}
        self.step_losses: list[tuple[float, float]] = []  # (fractional epoch, loss) every few steps, for plots
        self.totals = self.resume_totals = self.epoch_order_state = None
        self._signal: int | None = None

    # ---- setup -------------------------------------------------------------------------------------------------

    def setup(self) -> "Trainer":
        cfg = self.cfg
        clock = self.setup_clock = SetupClock()  # setup_s, phase by phase: summary.json's timing.setup
        self.modality = modality_for(cfg.data, self.data_objects)
        load_models_from(cfg.models_from)  # @dlkit.register_model names (and installed plugins') join the registry
        self.dist = distributed.connect(resolve_device(cfg.device), cfg.nproc_per_node, cfg.sync_bn)
        self.device = self.dist.device  # under DDP on CUDA: this rank's own GPU
        self.console = self.console if self.dist.is_main else Console(quiet=True, warnings=False)  # rank 0 alone prints
        self.device_label = device_label(self.device, cfg.amp) + self.dist.label
        if cfg.amp and amp_dtype(self.device, cfg.amp) is None:
            self.console.print(f"--amp: no native bf16 on {self.device.type} here (it would be slower), so fp32")
        seed_everything(cfg.seed)
        configure_backends(self.device, cfg.deterministic)
        if cfg.max_image_pixels:
            from PIL import Image

            Image.MAX_IMAGE_PIXELS = cfg.max_image_pixels
        clock.mark("devices")
        self.data = self._prepare_data()
        clock.mark("data")
        self.cfg = cfg = self._fit_recipe(cfg)
        self.task = self.modality.task(self.data.spec)
        if cfg.loss == "auto":
            self.cfg = cfg = replace(cfg, loss=self.task.default_loss)
        self.monitor = cfg.monitor or self.task.monitor
        self.maximize = any(word in self.monitor for word in ("acc", "r2", "f1"))
        built = build_model(cfg, self.modality, self.data.spec, self.device, self.console, self.model_object)
        self.model, self.model_args, self.model_source = built.model, built.args, built.source
        if cfg.freeze_epochs and (self.dist.world_size > 1 or not hasattr(self.model, "head")):
            raise UserError("--freeze-epochs needs one process and a model with a classifier head (registered or "
                            "tv: models); under DDP, or for this network, use --freeze-backbone for a whole run")
        self._init_from_data()
        clock.mark("model")
        if cfg.batch_size == "auto":
            found = find_batch_size(self.model, self._probe_shape(), self.device, len(self.data.train))
            found = self.dist.smallest(found)  # every rank steps with the same batch
            self.console.print(f"batch size: {found} (the largest power of two that fit, --batch-size auto)")
            self.cfg = cfg = replace(cfg, batch_size=found)
        channels_last = self.dist.agree(not cfg.deterministic and prefers_channels_last(  # timed: rank 0's choice,
            self.model, self._probe_batch(), self.device, autocast_for(self.device, cfg.amp)))  # DDP needs one layout
        clock.mark("probes")
        self.model = self.dist.prepare(self.model, cfg.sync_bn)
        self.dist.split_rng(cfg.seed)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        spec = self.data.spec
        self._make_batches()
        seed = self.dist.rank_seed(cfg.seed + 1)
        augment = BatchAugment(cfg.augment, spec.image_size, torch.Generator().manual_seed(seed)) \
            if self.modality.has_images and self.data.in_memory and cfg.augment != "none" else None
        self.aug_generator = augment.gen if augment else None
        self.parts = self._step_parts(inputs_for(self.modality, spec, augment, channels_last))
        self._open_run_dir()
        return self

    def _make_batches(self) -> None:
        """Training batches, shuffled, and validation batches in order; under DDP this rank's part of each (Shard)."""
        cfg = self.cfg
        self.train_batches = self.dist.shard(make_batches(self.data.train, self.data.spec, cfg.batch_size, True,
                                                          self.device, cfg.seed, cfg.workers, cfg.augment, cfg.cache,
                                                          cfg.worker_timeout))
        self.val_batches = self.dist.shard(self._whole_val_batches(), evaluation=True)
        self.steps_per_epoch = len(self.train_batches)
        if self.device.type == "cuda" and getattr(self.train_batches, "where", None):
            self.console.print(f"data: {self.train_batches.where}")

    def _open_run_dir(self) -> None:
        """A new run folder, or the resumed one and its state. Rank 0 creates it and alone writes into it; every
        rank gets its path."""
        cfg = self.cfg
        self.run_dir = self.resume_dir or self.dist.from_main(
            lambda: new_run_dir(cfg.out, cfg.runs_dir, cfg.data, cfg.model))
        if self.resume_dir:
            resume.load_last(self)
        spec = self.data.spec  # the side and channels used where the config left them to the data (None): 28, 3
        used = {k: getattr(spec, k) for k in ("image_size", "channels") if hasattr(spec, k)}
        self.saved_config = {**cfg.to_dict(), **used}  # config.yaml and the report: what was used
        if self.dist.is_main:
            write_config(self.run_dir, self.saved_config)
            if not self.resume_dir:
                save_samples(self.data.val, self.data.spec, self.run_dir / "samples")

    def _whole_val_batches(self):
        """Every validation sample in order, as one process sees them (rank 0's report uses it after training)."""
        cfg = self.cfg
        return make_batches(self.data.val, self.data.spec, max(cfg.batch_size, 256), False, self.device, cfg.seed,
                            cfg.workers, cache=cfg.cache, timeout=cfg.worker_timeout)

    def whole_val_batches(self):
        return self.val_batches if self.dist.world_size == 1 else self._whole_val_batches()

    def _prepare_data(self) -> PreparedData:
        model = self.cfg.model
        data = self.prepared or self.modality.prepare(self.cfg, default_size(model), smallest_size(model))
        self.console.print(data.headline)
        for note in data.notes:
            self.console.note(note)
        return data

    def _init_from_data(self) -> None:
        """A model that sets layers from the data (the fast net's patch whitening) sees up to 5,000 normalised
        training images: the training split only, so validation stays unseen. A resumed run then loads its saved
        weights over it."""
        init = getattr(self.model, "init_from_data", None)
        if init is None or not self.modality.has_images:
            return
        from ..data.transforms import normalize

        samples = self.data.train.subset(torch.arange(min(5000, len(self.data.train))))
        init(normalize(self.images_of(samples), self.data.spec).to(self.device))

    def _fit_recipe(self, cfg: TrainConfig) -> TrainConfig:
        """The recipe's choices fitted to the data read and the device (only those the user left to it)."""
        from ..recipes import RECIPES, Fitting

        spec = self.data.spec
        from ..data.loaders import photo_side

        fitting = Fitting(len(self.data.train), self.device.type, getattr(spec, "image_size", None),
                          tuple(getattr(spec, "class_names", ()) or ()),
                          photo_side(cfg.data) if self.modality.has_images else None)
        cfg, notes = RECIPES.get(cfg.recipe or self.modality.recipe_name).fitted(cfg, fitting)
        for note in notes:
            self.console.note(note)
        return cfg

    def _probe_shape(self) -> tuple[int, ...]:
        return self.modality.input_shape(self.data.spec)

    def _probe_batch(self) -> torch.Tensor:
        return torch.randn(min(self.cfg.batch_size, 256), *self._probe_shape(), device=self.device)

    def _step_parts(self, inputs) -> StepParts:
        cfg = self.cfg
        optimizer = make_optimizer(self.model, cfg)
        total = cfg.epochs * self.steps_per_epoch
        warmup = int(round(cfg.warmup_epochs * self.steps_per_epoch))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(cfg.schedule, total, warmup))
        loss_fn = self.task.loss(cfg.loss, cfg.label_smoothing)
        forward, self.eval_forward = self.dist.wrap(self.model, cfg.compile)  # under DDP: DDP, and the plain model
        parts = StepParts(forward, optimizer, scheduler, loss_fn, inputs, autocast_for(self.device, cfg.amp),
                          cfg.clip_grad, skip_nonfinite=cfg.nan_policy == "skip-batch", score=self.task.batch_score,
                          all_finite=lambda loss: self.dist.all_true(finite(loss)))
        choice = graphed.choose(cfg.cuda_graphs, self.device, world_size=self.dist.world_size, compiled=cfg.compile,
                                skip_nonfinite=parts.skip_nonfinite, freeze_epochs=cfg.freeze_epochs)
        if choice.note:
            self.console.note(choice.note)
        if choice.use:
            parts.graphed = graphed.GraphedSteps(parts, cfg.batch_size, amp_dtype(self.device, cfg.amp),
                                                 self.console.note)
        return parts

    # ---- the run -----------------------------------------------------------------------------------------------

    def _callbacks(self, extra: list) -> list:
        """Rank 0's: progress, metrics file, checkpoints, early stopping, TensorBoard, report, the caller's. The other
        ranks keep what decides (saving gathers every rank's RNG state; stopping) and the caller's own."""
        cfg = self.cfg
        stopping = [EarlyStopping(cfg.patience)] if cfg.patience else []
        if not self.dist.is_main:
            return [Checkpointer(), *stopping, *extra]
        shown_elsewhere = any(getattr(c, "shows_epochs", False) for c in extra)  # the notebook's live display
        callbacks = [ConsoleProgress(self.console, lines=not shown_elsewhere), MetricsFile(self.run_dir), Checkpointer(),
                     *stopping]
        if cfg.tensorboard:
            from ..track.tensorboard import TensorBoardLogger

            callbacks.append(TensorBoardLogger(self.run_dir / "tb", cfg))
        if cfg.report:
            from .artifacts import RunArtifacts

            callbacks.append(RunArtifacts())
        return callbacks + self.modality.callbacks(cfg) + extra

    def fit(self, extra_callbacks: list | None = None) -> dict[str, Any]:
        cfg = self.cfg
        self.callbacks = self._callbacks(list(extra_callbacks or []))
        self.console.print(f"task: {self.task.name}, loss {cfg.loss}, best checkpoint by {self.monitor}")
        self.console.print(f"model: {cfg.model} ({count_parameters(self.model):,} parameters) | {cfg.optimizer} lr {cfg.lr:g} "
                           f"| {cfg.epochs} epochs x {self.steps_per_epoch} steps of {cfg.batch_size} "
                           f"| {self.device_label} | run: {self.run_dir}")
        self.fit_started = started = time.perf_counter()
        self.setup_s = process_seconds()  # process start to the first step: imports, reading, decoding, probes
        self.setup_clock.mark("batches, optimizer, run folder")
        self._emit("on_fit_start")
        try:
            with signals_caught(self):
                while self.epoch < cfg.epochs and not self.should_stop:
                    self.epoch += 1
                    self._emit("on_epoch_start")
                    record = self._run_epoch()
                    self.history.append(record)
                    self._emit("on_epoch_end", record)
                    self.should_stop = self.dist.agree(self.should_stop)  # one rank's callback must not stop alone
        except BaseException as error:
            self._emit("on_exception", error)
            raise
        if cfg.tta != "none" and self.modality.has_images and self.history:
            self._validate_with_tta()
        summary = run_summary(self, time.perf_counter() - started)
        if getattr(self, "tta_metrics", None):
            summary["tta"] = self.tta_metrics
        self._write_summary(summary)
        self._emit("on_fit_end", summary)
        summary["timing"] = timing(self)  # again, now that the report and the last checkpoint are written
        summary["wall_s"] = summary["timing"]["total_s"]  # and the wall time with it: one figure, to the run's end
        self._write_summary(summary)
        return summary

    def _write_summary(self, summary: dict[str, Any]) -> None:
        if self.dist.is_main:
            ckpt.atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=1))

    # ---- views for callbacks -----------------------------------------------------------------------------------

    def preview_batch(self, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
        """The first n training images as the model sees them before normalisation: float [0,1], augmented."""
        samples = self.data.train.subset(torch.arange(min(n, len(self.data.train))))
        images = self.images_of(samples).float() / 255
        if self.cfg.augment != "none":  # its own generator: previewing must not change the training run
            images = BatchAugment(self.cfg.augment, self.data.spec.image_size,
                                  torch.Generator().manual_seed(self.cfg.seed + 2))(images)
        return images, samples.labels

    def images_of(self, samples) -> torch.Tensor:
        """uint8 images of some samples, decoded as the spec says when they are files."""
        if samples.images is not None:
            return samples.images.cpu()
        if hasattr(samples, "uint8_images"):  # the learner's own Dataset
            return samples.uint8_images(self.data.spec)
        from ..data.images import load_image

        s = self.data.spec
        return torch.stack([load_image(p, s.channels, s.image_size) for p in samples.paths])

    def _freeze_backbone(self, frozen: bool) -> None:
        """fastai's fine_tune: the new head trains alone for --freeze-epochs (the backbone's gradients stay None, so
        its optimizer state and weights stand still), then every parameter the optimizer holds trains."""
        head = {id(p) for p in self.model.head.parameters()}
        backbone = [p for group in self.parts.optimizer.param_groups for p in group["params"] if id(p) not in head]
        if backbone and backbone[0].requires_grad == frozen:  # a change: say so once
            self.console.note(f"epoch {self.epoch}: " + (
                f"backbone frozen, the head trains alone (--freeze-epochs {self.cfg.freeze_epochs})" if frozen else
                f"backbone unfrozen: everything trains, the backbone at lr x{self.cfg.backbone_lr_scale:g}"))
        for p in backbone:
            p.requires_grad_(not frozen)

    def _run_epoch(self) -> dict[str, Any]:
        started = time.perf_counter()
        if self.resume_totals is not None:  # finishing an epoch that was cut short
            self.totals, self.resume_totals = self.resume_totals.to(self.device), None
        else:
            self.epoch_order_state = self.train_batches.generator.get_state()
            self.totals, self.step_in_epoch = new_totals(self.device), 0
        self.images_this_epoch, self.val_s_this_epoch = 0, 0.0
        if hasattr(self.train_batches, "set_epoch"):  # the alternating flip's phase (a resumed run's too)
            self.train_batches.set_epoch(self.epoch)
        if self.cfg.freeze_epochs:  # a function of the epoch alone, so a resumed run is frozen where it was
            self._freeze_backbone(self.epoch <= self.cfg.freeze_epochs)
        try:
            train_one_epoch(self.parts, self.train_batches, self.totals, self._on_step)
        except OutOfMemory:
            raise UserError(f"out of memory at batch size {self.cfg.batch_size} on {self.device_label}; "
                            f"try --batch-size {max(1, self.cfg.batch_size // 2)} or --batch-size auto") from None
        except _StopNow:
            pass  # --stop-at within the epoch: the metrics of the epoch so far
        train = self._job_metrics()
        train["skipped"] //= self.dist.world_size  # the ranks skip a batch together, and each counted it
        train_s = time.perf_counter() - started - self.val_s_this_epoch
        self.seconds["train"] += train_s
        self._check_finite(train["loss"])
        self.step_in_epoch = 0
        record = {"epoch": self.epoch, "step": self.step,
                  **self.task.train_record(train["loss"], train["score"], train["count"]), **self._validate()}
        best = self._consider(record)
        record.update({"lr": self.parts.optimizer.param_groups[0]["lr"],
                       "images_per_s": self.dist.total(self.images_this_epoch) / max(train_s, 1e-9),
                       "epoch_s": time.perf_counter() - started, "best": best})
        self._note_young_batchnorm(record)
        if train["skipped"]:
            record["skipped_batches"] = train["skipped"]
            self.console.print(f"note: skipped {train['skipped']} batch(es) with a non-finite loss (--nan-policy skip-batch)")
        return record

    def _note_young_batchnorm(self, record: dict[str, Any]) -> None:
        """Say why validation can be far worse than training after few steps: BatchNorm predicts with running
        statistics, which start at mean 0 / variance 1 and move 10% per batch, so after a handful of batches they are
        still mostly their initial values while the real activations are not (tv:resnet18 from scratch, 2 steps on
        hymenoptera: validation loss 327, one class for every image). More steps fix it; nothing is broken."""
        seen = [int(m.num_batches_tracked) for m in self.model.modules()
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if getattr(self, "_noted_batchnorm", False) or not seen or min(seen) >= 100:
            return
        if record["val_loss"] > 3 * record["train_loss"] + 1:
            self._noted_batchnorm = True
            self.console.print(f"note: validation loss {record['val_loss']:.3g} vs training {record['train_loss']:.3g}: "
                               f"the BatchNorm layers have seen only {min(seen)} batch(es), and validation and "
                               "prediction use their running statistics, still near their starting values; expected "
                               "this early: train for more steps (more epochs, or a smaller --batch-size)")

    def _validate(self) -> dict[str, float]:
        """The validation split's metrics, over all of it; its outputs are kept for callbacks (mistakes, PR curves)."""
        started = time.perf_counter()
        logits, labels = predict_logits(self.eval_forward, self.val_batches, self.parts.inputs, self.parts.autocast)
        logits, labels = self.dist.gather_rows(logits), self.dist.gather_rows(labels)  # rank 0: the split, in order
        self.val_logits, self.val_labels = logits, labels
        metrics = self.dist.from_main(lambda: self.task.val_metrics(logits, labels, self.parts.loss_fn))
        elapsed = time.perf_counter() - started
        self.seconds["val"] += elapsed
        self.val_s_this_epoch += elapsed
        return metrics

    def _validate_with_tta(self) -> None:
        """The best checkpoint validated once more with the run's test-time augmentation, as eval, predict, serve
        and export will use it, beside its plain figure. Another epoch's best weights go into a copy: the model
        keeps the last weights, which the last checkpoint saves."""
        import copy

        from ..infer.tta import with_tta

        plain, model = self.eval_forward, self.model
        if self.best_epoch != self.epoch and (self.run_dir / "checkpoints" / "best.safetensors").exists():
            model = copy.deepcopy(self.model)
            model.load_state_dict(ckpt.load_tensors(self.run_dir / "checkpoints" / "best.safetensors")[0])
        self.eval_forward = with_tta(model if model is not self.model else plain, self.cfg.tta)
        try:
            metrics = self._validate()
        finally:
            self.eval_forward = plain
        best = next((r for r in self.history if r["epoch"] == self.best_epoch), self.history[-1])
        self.tta_metrics = {"mode": self.cfg.tta, "of": f"the best checkpoint (epoch {best['epoch']})", **metrics}
        key = "val_acc" if "val_acc" in metrics else self.monitor
        self.console.print(f"tta {self.cfg.tta}: {key} {metrics[key]:.4f} (without: {best.get(key, float('nan')):.4f}; "
                           f"best checkpoint, epoch {best['epoch']})")

    def _consider(self, record: dict[str, Any]) -> bool:
        """Whether `record` is the best so far by the monitored metric (then remembered), and --stop-at."""
        if self.monitor not in record:
            raise UserError(f"--monitor {self.monitor} is not a metric of this run; it has "
                            f"{', '.join(k for k in record if k.startswith(('val_', 'train_')))}")
        value = record[self.monitor]
        best = self.best_value is None or (value > self.best_value if self.maximize else value < self.best_value)
        if best:
            self.best_value, self.best_epoch = value, record["epoch"]
        target = self.cfg.stop_at
        if target is not None and self.stopped is None and (value >= target if self.maximize else value <= target):
            self.should_stop = True
            self.stopped = {"reason": f"{self.monitor} reached --stop-at {target:g}", "value": value,
                            "epoch": record["epoch"], "step": self.step,
                            "seconds_from_process_start": round(process_seconds(), 2)}
            self.console.print(f"stop: {self.monitor} {value:.4g} reached --stop-at {target:g} at step {self.step} "
                               f"(epoch {record['epoch']:g}), {process_seconds():.1f}s after the process started")
        return best

    def _validate_within_epoch(self) -> None:
        """--val-every: a validation at this step; it may save `best` and stop the run (--stop-at)."""
        record = {"epoch": round(self.epoch - 1 + self.step_in_epoch / self.steps_per_epoch, 4), "step": self.step,
                  **self._validate(), "lr": self.parts.optimizer.param_groups[0]["lr"], "within_epoch": True}
        self.parts.model.train()
        record["best"] = self._consider(record)
        self.history.append(record)
        if record["best"]:
            self.save_checkpoint("best")
        self.console.print(f"  step {self.step} (epoch {record['epoch']:g}): "
                           + "  ".join(f"{k.removeprefix('val_')} {v:.4g}" for k, v in record.items()
                                       if k.startswith("val_")) + (" *" if record["best"] else ""))
        self._emit("on_validation_end", record)
        self.should_stop = self.dist.agree(self.should_stop)
        if self.should_stop:
            raise _StopNow

    def _on_step(self, batch_size: int, loss: torch.Tensor) -> None:
        self.step += 1
        self.step_in_epoch += 1
        self.images_this_epoch += batch_size
        if self.step % max(1, self.steps_per_epoch // 25) == 0:  # a curve worth looking at, without a sync per step
            self.step_losses.append((self.epoch - 1 + self.step_in_epoch / self.steps_per_epoch, float(loss)))
        self._emit("on_batch_end", batch_size, loss)
        signum = self.dist.largest(self._signal or 0)  # all ranks stop after the same step, whichever was signalled
        if signum:
            self._save_mid_epoch()
            raise TrainingInterrupted(signum, self.run_dir, self.step)
        if self.cfg.save_every_steps and self.step % self.cfg.save_every_steps == 0:
            self._save_mid_epoch()
        if self.cfg.val_every and self.step % self.cfg.val_every == 0 and self.step_in_epoch < self.steps_per_epoch:
            self._validate_within_epoch()

    def _save_mid_epoch(self) -> None:
        self._check_finite(self._job_metrics()["loss"])  # never let NaN weights replace a good `last`
        self.save_checkpoint("last", with_state=True)

    def _job_metrics(self) -> dict[str, float]:
        """The epoch so far over every rank's samples, each counted once (so every rank sees the same figures)."""
        return epoch_metrics(self.dist.sum(self.totals.clone()))

    def _check_finite(self, loss: float) -> None:
        if not math.isfinite(loss):
            raise UserError(f"the training loss became {loss} in epoch {self.epoch}; lower --lr (now {self.cfg.lr:g}), "
                            "check the input data, or use --nan-policy skip-batch; the last good checkpoint is kept")

    def _emit(self, hook: str, *args) -> None:
        started = time.perf_counter()
        for callback in self.callbacks:
            method = getattr(callback, hook, None)
            if method is not None:
                method(self, *args)
        if hook in TRACKING_HOOKS:  # what the epochs' own writing costs the training thread (issue: <= 5%)
            self.seconds["tracking"] += time.perf_counter() - started

    # ---- checkpoints (what they hold and how a run continues from them: resume.py) -------------------------------

    def save_checkpoint(self, name: str, with_state: bool = False) -> Path:
        return resume.save_checkpoint(self, name, with_state)
