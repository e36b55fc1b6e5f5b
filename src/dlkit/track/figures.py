"""Matplotlib figures shared by TensorBoard, the run's PNG plots, the report and `dlkit compare`/`show-data`."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch


def plt():
    import matplotlib

    matplotlib.use("Agg")  # no screen needed, in tests or on servers
    import matplotlib.pyplot as pyplot

    return pyplot


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
    rows = max(1, -(-n // columns))
    fig, axes = plt().subplots(rows, columns, figsize=(1.6 * columns, 1.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].float() / (255 if images.dtype == torch.uint8 else 1)
        img = img.clamp(0, 1).permute(1, 2, 0).squeeze(-1).cpu().numpy()
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(str(titles[i])[:24], fontsize=7, color=(colors[i] if colors else "black"))
    fig.tight_layout()
    return fig


def confusion_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str):
    k = len(class_names)
    size = min(14, 3 + 0.45 * k)
    fig, ax = plt().subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    peak = max(max(r) for r in matrix) or 1
    if k <= 30:
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8, color="white" if v > peak / 2 else "black")
    fig.tight_layout()
    return fig


def curves_figure(histories: dict[str, list[dict[str, Any]]]):
    """Loss and accuracy per epoch, train dashed and validation solid, one colour per run (the d2l Animator)."""
    fig, (loss_ax, acc_ax) = plt().subplots(1, 2, figsize=(11, 4))
    for n, (name, history) in enumerate(histories.items()):
        color = f"C{n}"
        epochs = [r["epoch"] for r in history]
        prefix = f"{name} " if len(histories) > 1 else ""
        for ax, key in ((loss_ax, "loss"), (acc_ax, "acc")):
            ax.plot(epochs, [r[f"train_{key}"] for r in history], "--", color=color, label=f"{prefix}train")
            ax.plot(epochs, [r[f"val_{key}"] for r in history], "-", color=color, label=f"{prefix}val")
    for ax, label in ((loss_ax, "loss"), (acc_ax, "accuracy")):
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
    ax.set_xticklabels(class_names, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="images", title=title)
    fig.tight_layout()
    return fig
