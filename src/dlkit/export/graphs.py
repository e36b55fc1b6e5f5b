"""The modality seam of export: what graph is traced, what PyTorch gives for the same input, and which real
samples check it. One small object per modality, so export_onnx never asks what the data is.

Images: the graph takes uint8 pixels NxCxHxW (0..255, at the spec's size) and normalises inside, so the file
alone cannot be fed wrongly normalised input and a consumer only decodes and resizes (as OnnxModel does).
Tables: the graph takes the float rows `TableSpec.transform` makes; the ensemble's member mean is inside.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..tasks import mean_of_members, task_from_meta

CPU = torch.device("cpu")


@dataclass
class CheckSamples:
    """Inputs exactly as the graph takes them, their labels (None for random inputs), and what they are
    ("validation images of DATA", or "random images: ..." and why)."""

    inputs: torch.Tensor
    labels: torch.Tensor | None
    source: str


class ImageGraph(nn.Module):
    """uint8 pixels -> logits: the spec's normalisation (data/transforms.normalize) in front of the network."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float() / 255
        return self.model((x - self.mean) / self.std).float()


class TableGraph(nn.Module):
    """Preprocessed float rows -> outputs, with a weight-shared ensemble's members averaged inside the graph."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return mean_of_members(self.model(rows)).float()


class Images:
    input_name, output_name = "images", "logits"

    @staticmethod
    def graph(model: nn.Module, spec) -> nn.Module:
        return ImageGraph(model, spec.mean, spec.std).eval()

    @staticmethod
    @torch.inference_mode()
    def reference(model: nn.Module, spec, inputs: torch.Tensor) -> torch.Tensor:
        """What dlkit's Predictor computes before its softmax: the network on normalize(images)."""
        from ..data.transforms import normalize

        return model(normalize(inputs, spec)).float()

    @staticmethod
    def describe(spec, task) -> tuple[dict[str, Any], dict[str, Any]]:
        size, channels = spec.image_size, spec.channels
        return ({"name": Images.input_name, "dtype": "uint8", "shape": ["batch", channels, size, size],
                 "layout": "NCHW", "range": "0..255", "channels": "grey" if channels == 1 else "RGB",
                 "resize": f"shorter side to {size}, then center crop {size}x{size}",
                 "normalization": "inside the graph: (x / 255 - mean) / std with the spec's mean and std"},
                {"name": Images.output_name, "shape": ["batch", len(spec.class_names)],
                 "meaning": "logits; softmax gives class probabilities in the order of classes"})

    @staticmethod
    def samples(meta: dict[str, Any], spec, limit: int) -> CheckSamples:
        def random(n: int, gen: torch.Generator) -> torch.Tensor:
            shape = (n, spec.channels, spec.image_size, spec.image_size)
            return torch.randint(0, 256, shape, dtype=torch.uint8, generator=gen)

        return _check_samples(meta, spec, limit, _image_validation, random, "images")


class Tables:
    input_name = "rows"

    @staticmethod
    def graph(model: nn.Module, spec) -> nn.Module:
        return TableGraph(model).eval()

    @staticmethod
    @torch.inference_mode()
    def reference(model: nn.Module, spec, inputs: torch.Tensor) -> torch.Tensor:
        """What TablePredictor.outputs computes."""
        return mean_of_members(model(inputs)).float()

    @staticmethod
    def describe(spec, task) -> tuple[dict[str, Any], dict[str, Any]]:
        width = spec.numeric_width + len(spec.cardinalities)
        output = ({"name": "logits", "shape": ["batch", spec.outputs],
                   "meaning": "logits; softmax gives class probabilities in the order of classes"}
                  if spec.task == "classification" else
                  {"name": "scaled_prediction", "shape": ["batch", 1],
                   "meaning": "the scaled target: y = output * target_scale.std + target_scale.mean, then exp() "
                              "when target_scale.transform is log"})
        return ({"name": Tables.input_name, "dtype": "float32", "shape": ["batch", width],
                 "preprocessing": "TableSpec.transform of spec (dlkit.data.tables): scaled numbers first, then 0/1 "
                                  "flags and one-hot categories, then category codes for embeddings",
                 "continuous": spec.continuous_width, "cardinalities": spec.cardinalities}, output)

    @staticmethod
    def samples(meta: dict[str, Any], spec, limit: int) -> CheckSamples:
        def random(n: int, gen: torch.Generator) -> torch.Tensor:
            parts = [torch.randn(n, spec.numeric_width, generator=gen)]
            parts += [torch.randint(0, k, (n, 1), generator=gen).float() for k in spec.cardinalities]
            return torch.cat(parts, 1)

        return _check_samples(meta, spec, limit, _table_validation, random, "rows")


def _check_samples(meta: dict[str, Any], spec, limit: int, read, random, unit: str) -> CheckSamples:
    """The run's own validation samples (read(data, cfg, spec, limit)), or seeded random ones (random(n, generator))
    with the reason, when the data named in the checkpoint cannot be read here."""
    cfg = meta.get("config", {})
    data = cfg.get("data")
    try:
        if not data:
            raise UserError("the checkpoint names no data")
        inputs, labels = read(data, cfg, spec, limit)
        return CheckSamples(inputs, labels, f"validation {unit} of {data}")
    except (UserError, OSError) as e:
        inputs = random(min(limit, 64), torch.Generator().manual_seed(0))
        return CheckSamples(inputs, None, f"random {unit}: the run's data could not be read ({e})")


MODALITIES = {"image": Images, "table": Tables}


def spread(n: int, limit: int) -> torch.Tensor:
    """Up to `limit` positions spread evenly over n (a split is often ordered by class)."""
    return torch.arange(n) if n <= limit else torch.linspace(0, n - 1, limit).round().long().unique()


def _image_validation(data: str, cfg: dict[str, Any], spec, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's validation split, read as `dlkit eval` reads it, at the spec's size: uint8 images and labels."""
    from ..data import make_batches, open_source, prepare_split
    from ..data.source import relabel

    source = open_source(data, cfg.get("data_dir"), cfg.get("val_split", 0.2), cfg.get("seed", 0))
    samples = relabel(source.split("val"), source.classes, spec.class_names, data)
    if not len(samples):
        raise UserError("its validation split is empty")
    samples, _ = prepare_split(samples.subset(spread(len(samples), limit)), spec, "auto")
    parts = list(make_batches(samples, spec, 256, False, CPU, workers=0))
    if not parts:
        raise UserError("no validation image could be read")
    return torch.cat([p[0] for p in parts]).cpu(), torch.cat([p[1] for p in parts]).cpu()


def _table_validation(data: str, cfg: dict[str, Any], spec, limit: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The run's validation rows (all rows for a refit run), preprocessed by the spec: float rows and targets."""
    from ..data.modality import open_table
    from ..data.source import holdout_indices

    source = open_table(data, spec.target, spec.task, cfg.get("data_args"))
    frame = source.frame
    if not cfg.get("refit"):
        _, val = holdout_indices(len(frame), source.labels(), cfg.get("val_split", 0.2), cfg.get("seed", 0),
                                 cfg.get("folds"), cfg.get("fold", 0))
        frame = frame.iloc[val.numpy()]
    frame = frame.iloc[spread(len(frame), limit).numpy()]
    return spec.transform(frame, str(data)), spec.encode_target(frame[spec.target], str(data))


def task_of(predictor):
    if hasattr(predictor, "task"):
        return predictor.task
    return task_from_meta(predictor.meta.get("task"), predictor.classes)
