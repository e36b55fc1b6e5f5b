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
    """Everything TensorBoard gets is written by one background thread, in order: the training thread only takes
    cheap snapshots (scalars, a copy of the weights, references to the validation outputs) and goes on stepping.
    Histograms, figures, PR curves, the graph and even tensorboard's import happen beside the training steps, so
    per-epoch tracking costs the training thread almost nothing. on_fit_end waits for the queue before the report
    draws (matplotlib's pyplot is not drawn from two threads at once)."""

    def __init__(self, log_dir: Path, cfg, every_n_steps: int = 50):
        from concurrent.futures import ThreadPoolExecutor

        from ..device import one_thread_here

        self.log_dir, self.cfg, self.every = log_dir, cfg, every_n_steps
        # one torch thread: the graph's trace and the figures' tensors must not start a second OpenMP team, which
        # slows every training step after it (see one_thread_here)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dlkit-tensorboard", initializer=one_thread_here)
        self.writer = None
        self.failed: str | None = None
        self.later(self._open)

    def _open(self) -> None:
        from torch.utils.tensorboard import SummaryWriter  # slow to import: done on the background thread

        self.writer = SummaryWriter(str(self.log_dir))

    def later(self, fn, *args) -> None:
        """Queue fn(*args) on the writer thread; a failure there is reported once, never stops training."""
        def guarded():
            if self.failed is None:
                try:
                    fn(*args)
                except Exception as e:  # noqa: BLE001 - tracking is a nicety, never a reason to stop
                    self.failed = f"{fn.__name__}: {type(e).__name__}: {e}"
        self.pool.submit(guarded)

    def drain(self) -> None:
        self.pool.shutdown(wait=True)

    def on_fit_start(self, trainer) -> None:
        self.every = max(1, min(self.every, trainer.steps_per_epoch // 5))  # short epochs still get a step curve
        config = "```\n" + json.dumps(trainer.cfg.to_dict(), indent=1) + "\n```"
        self.later(lambda: self.writer.add_text("config", config, trainer.step))
        self.images = self.cfg.tb_images and trainer.modality.has_images
        self.classes = trainer.task.name == "classification"
        if self.images:
            images, labels = trainer.preview_batch(32)
            names = [trainer.data.spec.class_names[i] for i in labels.tolist()]
            self.later(self._figure, "data/first_train_batch", figures.image_grid, (images, names), trainer.step)
        if self.cfg.tb_graph:
            self._add_graph(trainer)

    def _figure(self, tag: str, draw, args: tuple, step: int) -> None:
        self.writer.add_figure(tag, draw(*args), step)

    def _add_graph(self, trainer) -> None:
        """Traced on a copy in eval mode, on the writer thread: the training model is never switched or traced."""
        import copy

        try:
            model = copy.deepcopy(trainer.model).eval()
        except Exception as e:  # noqa: BLE001 - a model that cannot be copied still trains
            trainer.console.print(f"note: no model graph in TensorBoard ({type(e).__name__})")
            return
        sample = torch.zeros(1, *trainer._probe_shape(), device=trainer.device)
        console = trainer.console

        def graph():
            try:
                with warnings.catch_warnings():  # add_graph traces with torch.jit, which warns it is deprecated
                    warnings.simplefilter("ignore")
                    self.writer.add_graph(model, sample)
            except Exception as e:  # tracing fails for some models; the graph is a nicety
                console.print(f"note: no model graph in TensorBoard ({type(e).__name__})")
        self.later(graph)

    def on_batch_end(self, trainer, batch_size: int, loss) -> None:
        if trainer.step % self.every == 0:
            value, step = float(loss), trainer.step
            self.later(lambda: self.writer.add_scalar("train/loss_step", value, step))

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        epoch = record["epoch"]
        scalars = [(f"{SCALAR_NAMES.get(metric, metric)}/{split}", value) for split, metric, value in
                   ((*key.partition("_")[::2], value) for key, value in record.items())  # loss/train, rmse/val, ...
                   if split in ("train", "val") and isinstance(value, float)]
        scalars += [("lr", record["lr"]), ("images_per_s", record["images_per_s"])]
        self.later(self._scalars, scalars, epoch)
        # histograms and figures: on runs of many short epochs, about 5 of each per run (always the first and last
        # epochs); long epochs get them every epoch. They are drawn on the writer thread either way.
        every = max(1, -(-trainer.cfg.epochs // 4)) if record["epoch_s"] < 5 else 1
        if epoch % every and epoch not in (1, trainer.cfg.epochs):
            return
        if self.cfg.tb_histograms:  # a copy now: training goes on changing the weights in place
            tensors = [(name.removeprefix("net."), p.detach().float().cpu().clone(),
                        None if p.grad is None else p.grad.detach().float().cpu().clone())
                       for name, p in trainer.model.named_parameters()]
            self.later(self._histograms, tensors, epoch)
        if self.images and self.classes:
            self._mistakes(trainer, epoch)
        if self.cfg.tb_pr_curves and self.classes:
            logits, labels, names = mean_of_members(trainer.val_logits), trainer.val_labels, trainer.data.spec.class_names
            self.later(self._pr_and_confusion, logits, labels, names, epoch)

    def _scalars(self, scalars: list, step: int) -> None:
        for tag, value in scalars:
            self.writer.add_scalar(tag, value, step)
        self.writer.flush()

    def on_validation_end(self, trainer, record: dict[str, Any]) -> None:
        """--val-every: validation within epochs, against the global step."""
        scalars = [(f"{SCALAR_NAMES.get(k[4:], k[4:])}/val_by_step", v) for k, v in record.items()
                   if k.startswith("val_") and isinstance(v, float)]
        self.later(self._scalars, scalars, trainer.step)

    def _histograms(self, tensors: list, epoch: int) -> None:
        for name, weight, grad in tensors:
            self.writer.add_histogram(f"weights/{name}", weight, epoch)
            if grad is not None:
                self.writer.add_histogram(f"gradients/{name}", grad, epoch)

    def _mistakes(self, trainer, epoch: int) -> None:
        probs = mean_of_members(trainer.val_logits).softmax(1)
        wrong = (probs.argmax(1) != trainer.val_labels).nonzero().flatten()
        if len(wrong) == 0:
            return
        worst = wrong[probs[wrong].max(1).values.argsort(descending=True)][:MISTAKES_SHOWN]  # confidently wrong first
        names = trainer.data.spec.class_names
        titles = [f"{names[t]} -> {names[p]}" for t, p in zip(trainer.val_labels[worst].tolist(), probs[worst].argmax(1).tolist())]
        samples, images_of = trainer.data.val.subset(worst), trainer.images_of  # files are decoded on the writer thread
        self.later(lambda: self.writer.add_figure("val/mistakes (true -> predicted)",
                                                  figures.image_grid(images_of(samples), titles), epoch))

    def _pr_and_confusion(self, logits: torch.Tensor, labels: torch.Tensor, names, epoch: int) -> None:
        from ..tasks import classification_metrics

        probs = logits.softmax(1)
        for c, name in list(enumerate(names))[:MAX_PR_CLASSES]:
            self.writer.add_pr_curve(f"pr/{name}", labels == c, probs[:, c], epoch)
        matrix = classification_metrics(logits, labels, names)["confusion_matrix"]
        self.writer.add_figure("val/confusion_matrix", figures.confusion_figure(matrix, names, f"epoch {epoch}"), epoch)
        self.writer.flush()

    def on_fit_end(self, trainer, summary: dict[str, Any]) -> None:
        hparams = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in trainer.cfg.to_dict().items()
                   if v is not None and k in HPARAMS}
        values = {**summary.get("best_metrics", {}), "best_val_acc": summary.get("best_val_acc"),
                  "train_loss": summary.get("train_loss")}
        metrics = {f"hparam/{k}": v for k, v in values.items() if isinstance(v, (int, float))}
        # same folder, so runs line up in the HParams tab
        self.later(lambda: self.writer.add_hparams(hparams, metrics, run_name="."))
        self._close(trainer)

    def on_exception(self, trainer, error: BaseException) -> None:
        self._close(trainer)

    def _close(self, trainer) -> None:
        self.later(lambda: self.writer.close())
        self.drain()
        if self.failed:
            trainer.console.print(f"note: TensorBoard logging stopped early ({self.failed})")


HPARAMS = ("data", "target", "task", "model", "optimizer", "lr", "momentum", "weight_decay", "schedule", "batch_size", "epochs",
           "augment", "label_smoothing", "loss", "image_size", "seed")
