"""`dlkit show-data`: a PNG grid of samples with class names, and the class counts, to see data before training."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from . import figures


def show_data(data: str, out: str | Path, n: int = 32, data_dir: str | None = None, image_size: int | None = None,
              seed: int = 0) -> tuple[Path, dict[str, dict[str, int]]]:
    """Save a grid of n training samples (classes in turn) and bar charts of class counts; return the counts."""
    grid, counts, classes = data_grid(data, n, data_dir, image_size, seed)
    out = Path(out)
    figures.save(grid, out)
    chart = figures.counts_figure(classes, [counts["train"][c] for c in classes], "training images per class")
    figures.save(chart, out.with_name(out.stem + "_counts.png"))
    return out, counts


def data_grid(data: str, n: int = 32, data_dir: str | None = None, image_size: int | None = None, seed: int = 0,
              channels: int | None = None, val_split: float = 0.2):
    """(grid figure of n training samples, classes in turn; class counts per split; class names)."""
    from ..data import open_source, prepare_split
    from ..data.loaders import guess_file_channels
    from ..data.spec import PreprocessSpec

    source = open_source(data, data_dir, val_split, seed=seed)
    counts = {split: _counts(source.split(split).labels, source.classes) for split in ("train", "val")}
    pick = round_robin(source.train.labels, n, torch.Generator().manual_seed(seed))
    subset = source.train.subset(pick)
    channels = channels or source.channels or guess_file_channels(subset.paths)
    size = image_size or (subset.images.shape[-1] if subset.images is not None else 96)
    spec = PreprocessSpec(size, channels, (0.0,) * channels, (1.0,) * channels, tuple(source.classes))
    shown, _ = prepare_split(subset, spec, cache="ram")
    titles = [source.classes[i] for i in shown.labels.tolist()]
    return figures.image_grid(shown.images, titles), counts, list(source.classes)


def round_robin(labels: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """n indices taking one sample of each class in turn (random within a class), so rare classes show too."""
    shuffled = torch.randperm(len(labels), generator=generator)
    by_class = shuffled[torch.sort(labels[shuffled], stable=True).indices]
    grouped = labels[by_class]
    rank = torch.arange(len(labels)) - torch.searchsorted(grouped, grouped)  # position within its class
    turn = rank * (int(labels.max()) + 1 if len(labels) else 1) + grouped
    return by_class[torch.argsort(turn, stable=True)[:n]]


def _counts(labels: torch.Tensor, classes: list[str]) -> dict[str, int]:
    tally = Counter(labels.tolist())
    return {name: tally.get(i, 0) for i, name in enumerate(classes)}


def format_counts(counts: dict[str, dict[str, int]]) -> str:
    names = list(counts["train"])
    width = max(8, *(len(n) for n in names))
    total = sum(counts["train"].values()) or 1
    lines = [f"{'class':<{width}}  {'train':>7}  {'val':>7}  share"]
    for name in names:
        share = counts["train"][name] / total
        lines.append(f"{name:<{width}}  {counts['train'][name]:>7}  {counts['val'][name]:>7}  {'#' * round(share * 40)} {share:.1%}")
    return "\n".join(lines)


def describe_table(data: str, target: str | None, out: str | Path, task: str = "auto", data_args: dict | None = None,
                   **overrides) -> tuple[str, Path]:
    """`dlkit show-data` on a table: every column with its missing count, distinct values and what training would
    do with it; the target's distribution as a PNG (class counts, or a histogram of the numbers)."""
    prepared, columns, fig = table_columns(data, target, task, data_args, **overrides)
    lines = [prepared.headline, *[f"note: {n}" for n in prepared.notes], "",
             f"{'column':<20} {'dtype':<8} {'missing':>7} {'distinct':>8}  what training does with it"]
    for name, dtype, missing, distinct, how in columns:
        lines.append(f"{name[:20]:<20} {dtype[:8]:<8} {missing:>7} {distinct:>8}  {how}")
    out = Path(out)
    figures.save(fig, out)
    return "\n".join(lines), out


def table_columns(data: str, target: str | None, task: str = "auto", data_args: dict | None = None, **overrides):
    """(the prepared table, [(column, dtype, missing, distinct, what training does with it)], the target's figure)."""
    from ..config import make_config
    from ..data.modality import Tables

    cfg = make_config({"data": data, "target": target, "task": task, "data_args": data_args or {}, **overrides})
    prepared = Tables.prepare(cfg)
    source, spec = prepared.source, prepared.spec
    frame = source.frame
    how = dict(_spec_lines(spec))
    columns = [(str(name), str(frame[name].dtype), int(frame[name].isna().sum()), int(frame[name].nunique()),
                how.get(str(name), "")) for name in frame.columns]
    fig, ax = figures.subplots(figsize=(6, 3.5))
    if spec.task == "classification":
        counts = frame[source.target].astype(str).value_counts()
        ax.bar(counts.index.tolist(), counts.tolist())
        ax.set(ylabel="rows", title=f"{source.target}: rows per class")
        ax.tick_params(axis="x", rotation=45)
    else:
        ax.hist(frame[source.target].astype(float), bins=40)
        ax.set(xlabel=source.target, ylabel="rows", title=f"{source.target}: distribution")
    fig.tight_layout()
    return prepared, columns, fig


def _spec_lines(spec) -> list[tuple[str, str]]:
    """(column, description) from the spec's own account of each column."""
    pairs = []
    for line in spec.describe():
        name, _, rest = line.strip().partition(" ")
        pairs.append((name, rest.strip()))
    return pairs
