"""Matplotlib figures shared by TensorBoard, the run's PNG plots, the report and `dlkit compare`/`show-data`.

Figures are made with matplotlib's object API (`Figure`), never pyplot: no global backend is chosen (a notebook's
inline plots are left alone), no figure manager keeps them alive, and a figure can be drawn on any thread.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Sequence

import torch


def subplots(*grid: int, figsize: tuple[float, float], **kwargs):
    """A new figure and its axes, like pyplot.subplots."""
    from matplotlib.figure import Figure

    from .fonts import use_cjk_fallback

    use_cjk_fallback()  # Chinese class and column names drawn as characters, not boxes
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def import_in_background() -> threading.Thread:
    """Import matplotlib (~0.6 s) on a background thread while the run trains, so the end-of-run plots start at
    once; a later import simply waits for this one to finish."""
    def load() -> None:
        try:
            import matplotlib.backends.backend_agg  # noqa: F401 - what savefig draws PNGs with
            import matplotlib.figure  # noqa: F401

            from .fonts import use_cjk_fallback

            use_cjk_fallback()
        except Exception:  # noqa: BLE001 - the plots will import it again and say what is wrong
            pass
    thread = threading.Thread(target=load, name="dlkit-import-matplotlib", daemon=True)
    thread.start()
    return thread


def _names(names) -> list[str]:
    from .fonts import readable

    return readable(names)


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def number(value: float) -> str:
    """A metric or target value as the tables print it: 4 decimals below 1,000, whole numbers with thousands
    separators above (68,096, not 6.81e+04)."""
    import math

    if not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"


def readable_ticks(axis, bins: int = 5) -> None:
    """At most `bins` ticks on a matplotlib axis, labelled as the tables write numbers (trailing zeros dropped):
    six-digit prices no longer run together."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=bins))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"))


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def image_grid(images: torch.Tensor, titles: Sequence[str], columns: int = 8, colors: Sequence[str] | None = None,
               caption: str | None = None):
    """A grid of uint8 or [0,1] NxCxHxW images, each titled (e.g. class names, or 'true -> predicted'); `caption`,
    a line under the grid, says how to read the titles and colours.

    The images are tiled into one picture on one axes, with the titles as text above each tile: one image draw
    instead of one axes per image, several times quicker to draw and save."""
    from .fonts import readable

    n = len(images)
    shown = readable(titles, numbered=False)  # titles are not class indices
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    height, width = images.shape[-2:]
    pad, head = 2, max(2, round(0.22 * width))  # head: room above each tile for its title, in image pixels
    images = images.float() / (255 if images.dtype == torch.uint8 else 1)
    tiles = _tile(images.clamp(0, 1).cpu(), columns, rows, pad, head)
    fig, ax = subplots(figsize=(1.6 * columns, 1.8 * rows + (0.35 if caption else 0)))
    ax.imshow(tiles.permute(1, 2, 0).numpy(), vmin=0, vmax=1, interpolation="nearest")
    ax.axis("off")
    for i in range(n):
        row, column = divmod(i, columns)
        ax.annotate(str(shown[i])[:24], (pad + column * (width + pad) + width / 2, head + row * (head + height + pad)),
                    xytext=(0, 2), textcoords="offset points", fontsize=GRID_FONT, ha="center", va="bottom",
                    color=colors[i] if colors else "black")  # 2 points above the tile: descenders clear it
    if caption:
        fig.text(0.5, 0.01, caption, ha="center", va="bottom", fontsize=GRID_FONT)
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight() if caption else 0, 1, 1))
    return fig


GRID_FONT = 9  # points: 12.5 px at the 100 dpi figures are saved at (7 pt, under 10 px, was hard to read)


def _tile(images: torch.Tensor, columns: int, rows: int, pad: int, head: int) -> torch.Tensor:
    """NxCxHxW in [0,1] laid out row by row on a white 3xH'xW' canvas, with `head` pixels above each row for the
    titles (torchvision's make_grid, without importing torchvision for it)."""
    n, _, height, width = images.shape
    canvas = torch.ones(3, rows * (head + height + pad), pad + columns * (width + pad))
    for i in range(n):
        row, column = divmod(i, columns)
        top, left = head + row * (head + height + pad), pad + column * (width + pad)
        canvas[:, top:top + height, left:left + width] = images[i]  # one channel broadcasts to gray RGB
    return canvas


def confusion_figure(matrix: Sequence[Sequence[int]], class_names: Sequence[str], title: str):
    k = len(class_names)
    size = min(14, 3 + 0.45 * k)
    fig, ax = subplots(figsize=(size, size))
    peak = max(max(r) for r in matrix) or 1
    shades = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=peak)  # from 0: with no empty cell, counts still differ
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(_names(class_names), rotation=45, ha="right")
    ax.set_yticklabels(_names(class_names))
    if k <= 30:
        for i, row in enumerate(matrix):
            for j, v in enumerate(row):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                        color=text_color_on(shades.cmap(shades.norm(v))))
    fig.tight_layout()
    return fig


def luminance(rgba) -> float:
    """WCAG relative luminance of an sRGB colour (0 black .. 1 white)."""
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3]]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def text_color_on(rgba) -> str:
    """Black or white, whichever contrasts more with the cell's own colour (WCAG contrast ratio)."""
    shade = luminance(rgba)
    return "black" if (shade + 0.05) / 0.05 >= 1.05 / (shade + 0.05) else "white"


CURVE_METRICS = {"acc": "accuracy", "rmse": "RMSE (target units)"}


def curves_figure(histories: dict[str, list[dict[str, Any]]], step_losses: list | None = None):
    """Loss and the headline metric (accuracy, or RMSE for numbers) per epoch, train dashed and validation solid,
    one colour per run (the d2l Animator). Markers when there are few epochs, so one epoch still shows."""
    fig, (loss_ax, metric_ax) = subplots(1, 2, figsize=(11, 4))
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
    _legend_below(fig, loss_ax)
    return fig


def _legend_below(fig, ax) -> None:
    """One legend for the figure, under its plots: inside them, the legend of several runs covered their curves."""
    handles, labels = ax.get_legend_handles_labels()
    columns = min(4, len(labels)) or 1
    rows = -(-len(labels) // columns)
    fig.set_figheight(fig.get_figheight() + 0.2 * rows)
    room = (0.2 * rows + 0.1) / fig.get_figheight()
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, room, 1, 1))


def lr_figure(history: list[dict[str, Any]]):
    """The learning rate per epoch; a rate that never changed is one line of text, not a flat line on a panel."""
    rates = [r["lr"] for r in history]
    if rates and max(rates) == min(rates):
        fig = subplots(figsize=(5.5, 0.5))[0]
        fig.axes[0].axis("off")
        fig.text(0.5, 0.5, f"learning rate: {rates[0]:.3g} throughout (no schedule)", ha="center", va="center")
        return fig
    fig, ax = subplots(figsize=(5.5, 3.5))
    ax.plot([r["epoch"] for r in history], [r["lr"] for r in history], marker="o")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set(xlabel="epoch", ylabel="learning rate (end of epoch)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def counts_figure(class_names: Sequence[str], counts: Sequence[int], title: str):
    fig, ax = subplots(figsize=(max(5, 0.4 * len(class_names)), 3.5))
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
    fig, (ax, res_ax) = subplots(1, 2, figsize=(11, 4.5))
    ax.scatter(actual, predicted, s=8, alpha=0.5)
    low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="black", lw=1)
    ax.set(xlabel="actual", ylabel="predicted", title=title)
    res_ax.scatter(predicted, actual - predicted, s=8, alpha=0.5)
    res_ax.axhline(0, color="black", lw=1)
    res_ax.set(xlabel="predicted", ylabel="residual (actual - predicted)", title="residuals")
    for a in (ax, res_ax):
        a.grid(alpha=0.3)
        readable_ticks(a.xaxis)
        readable_ticks(a.yaxis)
    fig.tight_layout()
    return fig


def importance_figure(importance: Sequence[dict[str, Any]], metric: str):
    """Permutation importance as horizontal bars, most important on top."""
    rows = list(importance)[:30][::-1]
    fig, ax = subplots(figsize=(7, 1.2 + 0.28 * len(rows)))
    ax.barh(_names([r["column"] for r in rows]), [r["importance"] for r in rows],
            xerr=[r.get("std", 0.0) for r in rows], color="C0")
    ax.set(xlabel=f"{metric} lost when the column is shuffled (validation)", title="permutation importance")
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    return fig
