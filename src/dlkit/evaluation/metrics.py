"""Classification metrics from logits: loss, accuracy, top-5, per-class precision/recall/F1, confusion matrix."""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F


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


def format_report(m: dict[str, Any], class_names: Sequence[str]) -> str:
    lines = [f"samples {m['samples']}  loss {m['loss']:.4f}  accuracy {m['accuracy']:.4f}"
             + (f"  top-5 {m['top5_accuracy']:.4f}" if "top5_accuracy" in m else "")]
    width = max(8, *(len(n) for n in class_names))
    lines.append(f"{'class':<{width}}  precision  recall      f1  support")
    for row in m["per_class"]:
        lines.append(f"{row['class']:<{width}}  {row['precision']:>9.4f}  {row['recall']:>6.4f}  {row['f1']:>6.4f}  {row['support']:>7}")
    lines.append("confusion matrix (rows: true, columns: predicted)")
    cells = max(len(str(v)) for r in m["confusion_matrix"] for v in r)
    for name, row in zip(class_names, m["confusion_matrix"]):
        lines.append(f"{name:<{width}}  " + " ".join(f"{v:>{cells}}" for v in row))
    return "\n".join(lines)


def save_confusion_png(matrix: list[list[int]], class_names: Sequence[str], path, title: str) -> None:
    from ..track.figures import confusion_figure, save

    save(confusion_figure(matrix, class_names, title), path)


def most_confused(matrix: list[list[int]], class_names: Sequence[str], top: int = 5) -> list[dict[str, Any]]:
    """The largest off-diagonal cells: which true class is most often taken for which."""
    cells = [(v, i, j) for i, row in enumerate(matrix) for j, v in enumerate(row) if i != j and v > 0]
    return [{"true": class_names[i], "predicted": class_names[j], "count": v} for v, i, j in sorted(cells, reverse=True)[:top]]
