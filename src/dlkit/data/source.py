"""DataSource: a dataset's splits as labelled files or as one in-memory uint8 tensor, plus what the scan noticed."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import UserError, require
from .spec import PreprocessSpec


@dataclass
class Samples:
    """One split. Exactly one of `images` (uint8 NxCxHxW, in memory) or `paths` (files) is set."""

    labels: torch.Tensor
    images: torch.Tensor | None = None
    paths: list[Path] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def inputs(self) -> torch.Tensor | None:
        """The in-memory tensor batches are cut from (None for files)."""
        return self.images

    def subset(self, index: torch.Tensor) -> "Samples":
        images = self.images[index] if self.images is not None else None
        paths = [self.paths[i] for i in index.tolist()] if self.paths is not None else None
        return Samples(self.labels[index], images, paths)


@dataclass
class Rows:
    """One split of a table: preprocessed rows (float NxF) and targets, plus their row numbers in the source."""

    labels: torch.Tensor
    inputs: torch.Tensor
    index: torch.Tensor            # positions in the source table, for naming rows in reports
    images = None                  # a table has no images or files: image-only views skip it
    paths = None

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: torch.Tensor) -> "Rows":
        return Rows(self.labels[index], self.inputs[index], self.index[index])


@dataclass
class DataSource:
    name: str                         # what the user asked for
    layout: str                       # the detected layout, printed
    classes: list[str]
    train: Samples
    val: Samples
    test: Samples | None = None       # a separate test split, when the data has one
    channels: int | None = None       # known for in-memory data
    mean: tuple[float, ...] | None = None   # known statistics of a built-in
    std: tuple[float, ...] | None = None
    notes: list[str] = field(default_factory=list)  # things the scan skipped or noticed

    def split(self, name: str) -> Samples:
        if name == "train":
            return self.train
        if name == "test":
            return self.test if self.test is not None else self.val
        return self.val

    def summary(self) -> str:
        counts = f"{len(self.train)} train / {len(self.val)} val"
        if self.test is not None and self.test is not self.val:
            counts += f" / {len(self.test)} test"
        return f"data: {self.name}, {len(self.classes)} classes, {counts}"


def stratified_split(labels: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, val): each class keeps the same fraction out, at least one where it has two or more."""
    gen = torch.Generator().manual_seed(seed)
    train_idx, val_idx = [], []
    for cls in labels.unique().tolist():
        idx = (labels == cls).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        n_val = int(round(len(idx) * val_fraction))
        n_val = min(max(n_val, 1 if len(idx) > 1 else 0), len(idx) - 1)
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    return torch.cat(train_idx).sort().values, torch.cat(val_idx).sort().values


def holdout_indices(n: int, labels: torch.Tensor | None, val_fraction: float, seed: int, folds: int | None = None,
                    fold: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, val) positions: fold `fold` of a seeded K-fold when folds are given, else a seeded val_fraction.

    Stratified by class when labels are given (classification), so every fold keeps the class balance.
    """
    if folds:
        require(folds >= 2, f"--folds must be at least 2 (got {folds})")
        require(n >= folds, f"{folds} folds need at least {folds} rows/images (got {n})")
        gen = torch.Generator().manual_seed(seed)
        assigned = torch.empty(n, dtype=torch.int64)
        if labels is None:
            assigned[torch.randperm(n, generator=gen)] = torch.arange(n) % folds
        else:  # deal each class's shuffled members round the folds, continuing where the last class stopped
            smallest = int(torch.bincount(labels).min()) if n else 0
            require(smallest >= folds, f"a class has only {smallest} sample(s), fewer than --folds {folds}; "
                                       "use fewer folds")
            start = 0
            for cls in labels.unique().tolist():
                members = (labels == cls).nonzero().flatten()
                members = members[torch.randperm(len(members), generator=gen)]
                assigned[members] = (torch.arange(len(members)) + start) % folds
                start += len(members)
        val = (assigned == (fold or 0)).nonzero().flatten()
        train = (assigned != (fold or 0)).nonzero().flatten()
        return train, val
    if labels is not None:
        return stratified_split(labels, val_fraction, seed)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(max(1, int(round(n * val_fraction))), n - 1)
    return order[n_val:].sort().values, order[:n_val].sort().values


def check_classes(classes: list[str], labels: torch.Tensor, where: str) -> None:
    require(len(labels) > 0, f"no images found in {where}; expected {where}/<class>/<image>.jpg (see `dlkit datasets`)")
    present = labels.unique().tolist()
    require(
        len(present) >= 2,
        f"only one class ({classes[present[0]]}) found in {where}; a classifier needs at least two classes",
    )


@dataclass
class PreparedData:
    source: DataSource                 # or a TableSource
    spec: PreprocessSpec               # or a TableSpec
    train: Samples
    val: Samples
    notes: list[str] = field(default_factory=list)
    headline: str = ""                 # the one line printed about the data: counts, layout, input

    @property
    def in_memory(self) -> bool:
        return self.train.inputs is not None


def relabel(samples: Samples, source_classes: list[str], model_classes, data: str) -> Samples:
    """Map the data's class indices to the model's by name (folders may list classes in another order)."""
    if list(source_classes) == list(model_classes):
        return samples
    index = {name: i for i, name in enumerate(model_classes)}
    unknown = [c for c in source_classes if c not in index]
    if unknown:
        raise UserError(f"{data} has class(es) {', '.join(unknown[:5])} the model was not trained on; "
                        f"it knows {', '.join(list(model_classes)[:10])}")
    mapping = torch.tensor([index[c] for c in source_classes])
    return Samples(mapping[samples.labels], samples.images, samples.paths)
