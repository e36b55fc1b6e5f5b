"""The task seam: classification or regression. A task owns the loss, the metrics, which validation metric picks
`best`, and how a prediction reads. The loop, checkpoints, TensorBoard and the report ask the task, never `if`.

Model outputs may carry an ensemble dimension, (batch, members, outputs), as weight-shared ensembles do while
training: each member is then trained on the loss of its own prediction, and metrics use the members' mean.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import UserError
from .registry import Registry

TASKS: Registry = Registry("task")


def mean_of_members(outputs: torch.Tensor) -> torch.Tensor:
    """(batch, members, k) -> (batch, k); plain (batch, k) outputs pass through."""
    return outputs.float().mean(1) if outputs.dim() == 3 else outputs


def per_member(loss: Callable) -> Callable:
    """A loss of (batch, k) outputs that also takes (batch, members, k): the mean of the members' losses."""
    def wrapped(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if outputs.dim() == 3:
            members = outputs.shape[1]
            return loss(outputs.flatten(0, 1), targets.repeat_interleave(members, 0))
        return loss(outputs, targets)
    return wrapped


# ---- target scaling (regression) -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class TargetScale:
    """How a numeric target becomes what the model predicts, and back: optional log, then (y - mean) / std."""

    transform: str = "none"   # none | log | standardize
    mean: float = 0.0
    std: float = 1.0

    def encode(self, y: torch.Tensor) -> torch.Tensor:
        y = y.double()
        if self.transform == "log":
            y = torch.log(y)
        return ((y - self.mean) / self.std).float()

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        y = z.double() * self.std + self.mean
        if self.transform == "log":
            y = torch.exp(y.clamp(max=700.0))
        return y

    def to_dict(self) -> dict[str, Any]:
        return {"transform": self.transform, "mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TargetScale":
        return cls(str(d.get("transform", "none")), float(d.get("mean", 0.0)), float(d.get("std", 1.0)))


# ---- the two tasks -------------------------------------------------------------------------------------------------

class Classification:
    """Class indices as targets; outputs are logits. Best checkpoint: highest validation accuracy."""

    name = "classification"
    monitor, mode = "val_acc", "max"
    default_loss = "cross-entropy"
    target_dtype = torch.int64

    def __init__(self, class_names: Sequence[str]):
        self.class_names = tuple(class_names)

    @property
    def outputs(self) -> int:
        return len(self.class_names)

    def loss(self, name: str, label_smoothing: float = 0.0) -> Callable:
        from .losses import LOSSES

        return per_member(LOSSES.get(name)(label_smoothing=label_smoothing))

    def batch_score(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed per-sample score of a training batch, kept on the device: correct predictions."""
        return (mean_of_members(outputs).argmax(1) == targets).sum()

    def train_record(self, loss: float, score_sum: float, count: float) -> dict[str, float]:
        return {"train_loss": loss, "train_acc": score_sum / count}

    def val_metrics(self, outputs: torch.Tensor, targets: torch.Tensor, loss_fn: Callable) -> dict[str, float]:
        """Over the whole split: loss and accuracy."""
        return {"val_loss": float(loss_fn(outputs, targets)),
                "val_acc": float((mean_of_members(outputs).argmax(1) == targets).float().mean())}

    def headline(self, record: dict[str, Any]) -> str:
        return f"train loss {record['train_loss']:.4f} acc {record['train_acc']:.4f}  " \
               f"val loss {record['val_loss']:.4f} acc {record['val_acc']:.4f}"

    def report_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        return classification_metrics(mean_of_members(outputs), targets, self.class_names)

    def predictions(self, outputs: torch.Tensor) -> dict[str, Any]:
        """Per row: the class and its probability, and every class's probability."""
        probs = mean_of_members(outputs).float().softmax(1)
        best = probs.max(1)
        return {"prediction": [self.class_names[i] for i in best.indices.tolist()],
                "probability": best.values.tolist(), "probabilities": probs}


class Regression:
    """A number per row. The model predicts the scaled target; metrics are in the target's own units, over the
    whole split (an RMSE averaged over batches would be wrong). Best checkpoint: lowest validation RMSE."""

    name = "regression"
    monitor, mode = "val_rmse", "min"
    default_loss = "mse"
    target_dtype = torch.float32
    class_names: tuple[str, ...] = ()
    outputs = 1

    def __init__(self, scale: TargetScale | None = None):
        self.scale = scale or TargetScale()

    def loss(self, name: str, label_smoothing: float = 0.0) -> Callable:
        fn = REGRESSION_LOSSES.get(name)
        return per_member(lambda out, y: fn(out.float().squeeze(-1), y.float()))

    def batch_score(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Summed squared error in model units (the scaled target)."""
        return (mean_of_members(outputs).squeeze(-1) - targets).square().sum()

    def train_record(self, loss: float, score_sum: float, count: float) -> dict[str, float]:
        return {"train_loss": loss}

    def values(self, outputs: torch.Tensor) -> torch.Tensor:
        """Predictions in the target's own units (float64)."""
        return self.scale.decode(mean_of_members(outputs).squeeze(-1))

    def val_metrics(self, outputs: torch.Tensor, targets: torch.Tensor, loss_fn: Callable) -> dict[str, float]:
        metrics = regression_metrics(self.values(outputs), self.scale.decode(targets), self.scale.transform == "log")
        return {"val_loss": float(loss_fn(outputs, targets)), **{f"val_{k}": v for k, v in metrics.items()}}

    def headline(self, record: dict[str, Any]) -> str:
        extra = f" rmsle {record['val_rmsle']:.4f}" if "val_rmsle" in record else ""
        return f"train loss {record['train_loss']:.4f}  val loss {record['val_loss']:.4f} " \
               f"rmse {record['val_rmse']:.4g} mae {record['val_mae']:.4g} r2 {record['val_r2']:.4f}{extra}"

    def report_metrics(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, Any]:
        predicted, actual = self.values(outputs), self.scale.decode(targets)
        return {"samples": len(actual), **regression_metrics(predicted, actual, self.scale.transform == "log"),
                "predicted": predicted.tolist(), "actual": actual.tolist()}

    def predictions(self, outputs: torch.Tensor) -> dict[str, Any]:
        return {"prediction": self.values(outputs).tolist()}


TASKS.register("classification", help="predict a class: cross-entropy, accuracy")(Classification)
TASKS.register("regression", help="predict a number: MSE, RMSE/MAE/R2")(Regression)


def regression_metrics(predicted: torch.Tensor, actual: torch.Tensor, log_target: bool = False) -> dict[str, float]:
    """RMSE, MAE, R2 (and the RMSE of the logarithm, the Kaggle/d2l house-price metric) over all rows at once."""
    predicted, actual = predicted.double(), actual.double()
    error = predicted - actual
    total = (actual - actual.mean()).square().sum()
    result = {"rmse": math.sqrt(float(error.square().mean())), "mae": float(error.abs().mean()),
              "r2": 1.0 - float(error.square().sum() / total) if float(total) > 0 else float("nan")}
    if log_target:
        result["rmsle"] = math.sqrt(float((predicted.clamp(min=1e-12).log() - actual.log()).square().mean()))
    return result


# ---- regression losses: (predictions, targets), both (batch,) ------------------------------------------------------

REGRESSION_LOSSES: Registry = Registry("regression loss")
REGRESSION_LOSSES.register("mse", help="mean squared error")(F.mse_loss)
REGRESSION_LOSSES.register("l1", help="mean absolute error")(F.l1_loss)
REGRESSION_LOSSES.register("huber", help="Huber loss (squared near zero, absolute beyond 1)")(F.huber_loss)


def task_from_meta(task: dict[str, Any] | None, class_names: Sequence[str]):
    """The task a checkpoint was trained for; checkpoints from before tasks existed are classifiers."""
    if not task or task.get("name", "classification") == "classification":
        return Classification(class_names)
    if task["name"] == "regression":
        return Regression(TargetScale.from_dict(task.get("scale", {})))
    raise UserError(f"unknown task {task['name']!r} in checkpoint; upgrade dlkit")


def task_meta(task) -> dict[str, Any]:
    meta = {"name": task.name}
    if isinstance(task, Regression):
        meta["scale"] = task.scale.to_dict()
    return meta


# ---- classification metrics from logits: loss, accuracy, top-5, per-class precision/recall/F1, confusion matrix

def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """k x k counts, rows true and columns predicted: one bincount (microseconds; no metrics library to import)."""
    return torch.bincount(labels * k + preds, minlength=k * k).reshape(k, k)


def classification_metrics(logits: torch.Tensor, labels: torch.Tensor, class_names: Sequence[str]) -> dict[str, Any]:
    k = len(class_names)
    preds = logits.argmax(1)
    matrix = confusion_matrix(preds, labels, k)
    hits, predicted, support = matrix.diagonal(), matrix.sum(0), matrix.sum(1)
    precision = torch.where(predicted > 0, hits / predicted.clamp(min=1), 0.0)  # 0 where undefined, as sklearn's
    recall = torch.where(support > 0, hits / support.clamp(min=1), 0.0)         # zero_division=0
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0)
    result = {
        "samples": len(labels),
        "loss": float(F.cross_entropy(logits, labels)),
        "accuracy": float((preds == labels).float().mean()),
        "per_class": [{"class": name, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for name, p, r, f, s in zip(class_names, precision, recall, f1, support)],
        "confusion_matrix": matrix.tolist(),
    }
    if k >= 5:
        top5 = logits.topk(5, dim=1).indices
        result["top5_accuracy"] = float((top5 == labels[:, None]).any(1).float().mean())
    return result
