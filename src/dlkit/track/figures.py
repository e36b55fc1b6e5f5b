"""Matplotlib figures shared by TensorBoard, the run's PNG plots, the report and `dlkit compare`/`show-data`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch


def plt():
    import matplotlib

    matplotlib.use("Agg")  # no screen needed, in tests or on servers
    import matplotlib.pyplot as pyplot

    from .fonts import use_cjk_fallback

    use_cjk_fallback()  # Chinese class and column names drawn as characters, not boxes
    return pyplot


def _names(names) -> list[str]:
    from .fonts import readable

    return readable(names)


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt().close(fig)
    return path


def image_grid(images: torch.Tensor, titles: Sequence[str], columns: int = 8, colors: Sequence[str] | None = None):
    """A grid of uint8 or [0,1] NxCxHxW images, each titled (e.g. class names, or 'true -> predicted')."""
    n = len(images)
    from .fonts import readable

    shown = readable(titles, numbered=False)  # titles are not class indices
    rows = max(1, -(-n // columns))
    fig, axes = plt().subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].float() / (255 if images.dtype == torch.uint8 else 1)
        img = img.clamp(0, 1).permute(1, 2, 0).squeeze(-1).cpu().numpy()
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(str(shown[i])[:24], fontsize=7, color=(colors[i] if colors else "black"))
    fig.tight_layout()
    return fig


def confusion_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str):
    k = len(class_names)
    size = min(14, 3 + 0.45 * k)
    fig, ax = plt().subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(_names(class_names), rotation=45, ha="right")
    ax.set_yticklabels(_names(class_names))
    peak = max(max(r) for r in matrix) or 1
    if k <= 30:
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > peak / 2 else "black")
    fig.tight_layout()
    return fig


CURVE_METRICS = {"acc": "accuracy", "rmse": "RMSE (target units)"}


def curves_figure(histories: dict[str, list[dict[str, Any]]], step_losses: list | None = None):
    """Loss and the headline metric (accuracy, or RMSE for numbers) per epoch, train dashed and validation solid,
    one colour per run (the d2l Animator). Markers when there are few epochs, so one epoch still shows."""
    fig, (loss_ax, metric_ax) = plt().subplots(1, 2, figsize=(11, 4))
    first = next((h[0] for h in histories.values() if h), {})
    metric = next((m for m in CURVE_METRICS if f"val_{m}" in first), "acc")
    for n, (name, history) in enumerate(histories.items()):
        color = f"C{n}"
        epochs = [r["epoch"] for r in history]
        prefix = f"{name} " if len(histories) > 1 else ""
        marker = "o" if len(history) <= 20 else None
        ends = [r for r in history if not r.get("within_epoch")]  # --val-every adds points within epochs
        for ax, key in ((loss_ax, "loss"), (metric_ax, metric)):
            if f"train_{key}" in first:
                ax.plot([r["epoch"] for r in ends], [r.get(f"train_{key}") for r in ends], "--", color=color,
                        marker=marker, label=f"{prefix}train (epoch mean)")
            ax.plot(epochs, [r.get(f"val_{key}") for r in history], "-", color=color, marker=marker,
                    label=f"{prefix}val")
    if step_losses:  # the training loss every few steps: a 1-epoch run still has a curve
        loss_ax.plot(*zip(*step_losses), color="C0", alpha=0.35, lw=1, label="train (steps)")
    for ax, label in ((loss_ax, "loss"), (metric_ax, CURVE_METRICS[metric])):
        ax.xaxis.set_major_locator(_integer_ticks())
        ax.set(xlabel="epoch", ylabel=label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def lr_figure(history: list[dict[str, Any]]):
    fig, ax = plt().subplots(figsize=(5.5, 3.5))
    ax.plot([r["epoch"] for r in history], [r["lr"] for r in history], marker="o")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set(xlabel="epoch", ylabel="learning rate (end of epoch)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def counts_figure(class_names: Sequence[str], counts: Sequence[int], title: str):
    fig, ax = plt().subplots(figsize=(max(5, 0.4 * len(class_names)), 3.5))
    ax.bar(range(len(counts)), counts)
    ax.set_xticks(range(len(counts)))
    ax.set_xticklabels(_names(class_names), rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="images", title=title)
    fig.tight_layout()
    return fig


def regression_figure(predicted: Sequence[float], actual: Sequence[float], title: str):
    """Predicted against actual (the diagonal is perfect), and residuals against predicted."""
    import numpy as np

    predicted, actual = np.asarray(predicted, dtype=float), np.asarray(actual, dtype=float)
    fig, (ax, res_ax) = plt().subplots(1, 2, figsize=(11, 4.5))
    ax.scatter(actual, predicted, s=8, alpha=0.5)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="black", lw=1)
    ax.set(xlabel="actual", ylabel="predicted", title=title)
    res_ax.scatter(predicted, actual - predicted, s=8, alpha=0.5)
    res_ax.axhline(0, color="black", lw=1)
    res_ax.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="residuals")
    for a in (ax, res_ax):
        a.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def importance_figure(importance: Sequence[dict[str, Any]], metric: str):
    """Permutation importance as horizontal bars, most important on top."""
    rows = list(importance)[:30][::-1]
    fig, ax = plt().subplots(figsize=(7, 1.2 + 0.28 * len(rows)))
    ax.barh(_names([r["column"] for r in rows]), [r["importance"] for r in rows],
            xerr=[r.get("std", 0.0) for r in rows], color="C0")
    ax.set(xlabel=f"{metric} lost when the column is shuffled (validation)", title="permutation importance")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig
