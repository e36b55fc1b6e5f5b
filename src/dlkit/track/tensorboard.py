"""TensorBoard callback: scalars, the first training batch, validation mistakes, the graph, weight and gradient
histograms, per-class PR curves, the confusion matrix, the config as text and hparams with the final metrics."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch

from ..tasks import mean_of_members
from . import figures

SCALAR_NAMES = {"acc": "accuracy"}

MAX_PR_CLASSES = 20   # one PR curve per class: beyond this the tab is unreadable
MISTAKES_SHOWN = 16


class TensorBoardLogger:
    def __init__(self, log_dir: Path, cfg, every_n_steps: int = 50):
        from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is slow to import

        self.writer = SummaryWriter(str(log_dir))
        self.cfg, self.every = cfg, every_n_steps

    def on_fit_start(self, trainer) -> None:
        self.every = max(1, min(self.every, trainer.steps_per_epoch // 5))  # short epochs still get a step curve
        self.writer.add_text("config", "```\n" + json.dumps(trainer.cfg.to_dict(), indent=1) + "\n```", trainer.step)
        self.images = self.cfg.tb_images and trainer.modality.has_images
        self.classes = trainer.task.name == "classification"
        if self.images:
            images, labels = trainer.preview_batch(32)
            names = [trainer.data.spec.class_names[i] for i in labels.tolist()]
            self.writer.add_figure("data/first_train_batch", figures.image_grid(images, names), trainer.step)
        if self.cfg.tb_graph:
            self._add_graph(trainer)

    def _add_graph(self, trainer) -> None:
        sample = torch.zeros(1, *trainer._probe_shape(), device=trainer.device)
        was_training = trainer.model.training
        try:
            trainer.model.eval()
            with warnings.catch_warnings():  # add_graph traces with torch.jit, which warns it is deprecated
                warnings.simplefilter("ignore")
                self.writer.add_graph(trainer.model, sample)
        except Exception as e:  # tracing fails for some models; the graph is a nicety, never a reason to stop
            trainer.console.print(f"note: no model graph in TensorBoard ({type(e).__name__})")
        finally:
            trainer.model.train(was_training)

    def on_batch_end(self, trainer, batch_size: int, loss) -> None:
        if trainer.step % self.every == 0:
            self.writer.add_scalar("train/loss_step", float(loss), trainer.step)

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        epoch = record["epoch"]
        for key, value in record.items():  # loss/train, accuracy/val, rmse/val, r2/val ...: whatever the task measured
            split, _, metric = key.partition("_")
            if split in ("train", "val") and isinstance(value, float):
                self.writer.add_scalar(f"{SCALAR_NAMES.get(metric, metric)}/{split}", value, epoch)
        self.writer.add_scalar("lr", record["lr"], epoch)
        self.writer.add_scalar("images_per_s", record["images_per_s"], epoch)
        # histograms and figures cost 0.05-0.2 s each: on runs of many short epochs, about 5 of each per run
        # (always the first and last epochs); long epochs get them every epoch
        every = max(1, -(-trainer.cfg.epochs // 4)) if record["epoch_s"] < 5 else 1
        if epoch % every and epoch not in (1, trainer.cfg.epochs):
            self.writer.flush()
            return
        if self.cfg.tb_histograms:
            self._histograms(trainer.model, epoch)
        if self.images and self.classes:
            self._mistakes(trainer, epoch)
        if self.cfg.tb_pr_curves and self.classes:
            self._pr_and_confusion(trainer, epoch)
        self.writer.flush()

    def on_validation_end(self, trainer, record: dict[str, Any]) -> None:
        """--val-every: validation within epochs, against the global step."""
        for key, value in record.items():
            if key.startswith("val_") and isinstance(value, float):
                metric = key.removeprefix("val_")
                self.writer.add_scalar(f"{SCALAR_NAMES.get(metric, metric)}/val_by_step", value, trainer.step)

    def _histograms(self, model: torch.nn.Module, epoch: int) -> None:
        for name, p in model.named_parameters():
            name = name.removeprefix("net.")
            self.writer.add_histogram(f"weights/{name}", p.detach().float().cpu(), epoch)
            if p.grad is not None:
                self.writer.add_histogram(f"gradients/{name}", p.grad.detach().float().cpu(), epoch)

    def _mistakes(self, trainer, epoch: int) -> None:
        probs = mean_of_members(trainer.val_logits).softmax(1)
        wrong = (probs.argmax(1) != trainer.val_labels).nonzero().flatten()
        if len(wrong) == 0:
            return
        worst = wrong[probs[wrong].max(1).values.argsort(descending=True)][:MISTAKES_SHOWN]  # confidently wrong first
        images = trainer.images_of(trainer.data.val.subset(worst))
        names = trainer.data.spec.class_names
        titles = [f"{names[t]} -> {names[p]}" for t, p in zip(trainer.val_labels[worst].tolist(), probs[worst].argmax(1).tolist())]
        self.writer.add_figure("val/mistakes (true -> predicted)", figures.image_grid(images, titles), epoch)

    def _pr_and_confusion(self, trainer, epoch: int) -> None:
        from ..evaluation.metrics import classification_metrics

        logits = mean_of_members(trainer.val_logits)
        probs, labels, names = logits.softmax(1), trainer.val_labels, trainer.data.spec.class_names
        for c, name in list(enumerate(names))[:MAX_PR_CLASSES]:
            self.writer.add_pr_curve(f"pr/{name}", labels == c, probs[:, c], epoch)
        matrix = classification_metrics(logits, labels, names)["confusion_matrix"]
        self.writer.add_figure("val/confusion_matrix", figures.confusion_figure(matrix, names, f"epoch {epoch}"), epoch)

    def on_fit_end(self, trainer, summary: dict[str, Any]) -> None:
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in trainer.cfg.to_dict().items()
                   if v is not None and k in HPARAMS}
        values = {**summary.get("best_metrics", {}), "best_val_acc": summary.get("best_val_acc"),
                  "train_loss": summary.get("train_loss")}
        metrics = {f"hparam/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
        self.writer.add_hparams(hparams, metrics, run_name=".")  # same folder, so runs line up in the HParams tab
        self.writer.close()

    def on_exception(self, trainer, error: BaseException) -> None:
        self.writer.close()


HPARAMS = ("data", "target", "task", "model", "optimizer", "lr", "momentum", "weight_decay", "schedule", "batch_size", "epochs",
           "augment", "label_smoothing", "loss", "image_size", "seed")
