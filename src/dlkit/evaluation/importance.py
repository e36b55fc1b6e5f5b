"""Permutation feature importance: how much the validation metric suffers when one column's values are shuffled."""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..tasks import mean_of_members, regression_metrics


def permutation_importance(predict: Callable[[torch.Tensor], torch.Tensor], rows: torch.Tensor, targets: torch.Tensor,
                           task, groups: list[tuple[str, list[int]]], repeats: int = 3, seed: int = 0,
                           max_rows: int = 2000) -> list[dict[str, Any]]:
    """Per source column (all its input columns shuffled together): the mean and std of the metric lost.

    The metric is accuracy for classes and RMSE (target units) for numbers; a column the model ignores scores ~0.
    Large splits are sampled down to max_rows (seeded): enough to rank columns, at a bounded cost.
    """
    gen = torch.Generator().manual_seed(seed)
    if len(rows) > max_rows:
        pick = torch.randperm(len(rows), generator=gen)[:max_rows]
        rows, targets = rows[pick], targets[pick]
    repeats = repeats if len(groups) <= 30 else 1  # wide tables: one shuffle per column keeps the report quick
    base = _score(task, predict(rows), targets)
    result = []
    for name, columns in groups:
        losses = []
        for _ in range(repeats):
            shuffled = rows.clone()
            order = torch.randperm(len(rows), generator=gen)
            shuffled[:, columns] = rows[order][:, columns]
            losses.append(_score(task, predict(shuffled), targets) - base)
        t = torch.tensor(losses, dtype=torch.float64)
        result.append({"column": name, "importance": float(t.mean()), "std": float(t.std()) if repeats > 1 else 0.0})
    return sorted(result, key=lambda r: r["importance"], reverse=True)


def _score(task, outputs: torch.Tensor, targets: torch.Tensor) -> float:
    """Higher is worse: error rate for classes, RMSE for numbers."""
    if task.name == "classification":
        return float((mean_of_members(outputs).argmax(1) != targets).double().mean())
    return regression_metrics(task.values(outputs), task.scale.decode(targets))["rmse"]
