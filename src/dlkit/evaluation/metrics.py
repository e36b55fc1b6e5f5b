"""Classification metrics as people read them: the printed report, the confusion matrix's PNG, the most confused
pairs. (The numbers themselves are the task's: tasks.classification_metrics.)"""
from __future__ import annotations

from typing import Any, Sequence

from ..tasks import classification_metrics, confusion_matrix  # noqa: F401  (evaluation's public names)



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
