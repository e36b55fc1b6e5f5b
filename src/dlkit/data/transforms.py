"""uint8 images -> normalised float model input, the same function for training, evaluation and prediction."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .augment import BatchAugment
from .images import resize_center
from .spec import PreprocessSpec


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 NxCxHxW with 1 or 3 channels -> the requested count (grey is repeated; RGB uses PIL's luma weights)."""
    have = images.shape[1]
    if have == channels:
        return images
    if channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def fit_to_spec(images: torch.Tensor, spec: PreprocessSpec, chunk: int = 4096) -> torch.Tensor:
    """An in-memory uint8 tensor resized/cropped and channel-converted to what the spec says."""
    parts = [resize_center(convert_channels(images[i:i + chunk], spec.channels), spec.image_size)
             for i in range(0, len(images), chunk)]
    return torch.cat(parts) if parts else images


def normalize(images: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """uint8 or [0,1] float NxCxHxW -> (x - mean) / std as float32, on the images' device."""
    x = images.float().div_(255) if images.dtype == torch.uint8 else images.float()
    mean = torch.tensor(spec.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def channel_stats(images: torch.Tensor, max_images: int = 20000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std (unbiased) on the 0..1 scale, from (a sample of) a uint8 NxCxHxW tensor."""
    sample = images[:: max(1, len(images) // max_images)]
    if sample.dtype == torch.uint8:  # from each channel's histogram of its 256 values: 7x quicker than in float64
        counts = torch.stack([torch.bincount(sample[:, c].reshape(-1), minlength=256) for c in range(sample.shape[1])])
        counts, values = counts.double(), torch.arange(256, dtype=torch.float64) / 255
        n = counts.sum(1)
        mean = (counts * values).sum(1) / n
        std = ((counts * (values - mean[:, None]) ** 2).sum(1) / (n - 1)).sqrt().clamp_min(1e-3)
    else:  # other dtypes on the same 0..255 scale
        sample = sample.double() / 255
        mean, std = sample.mean(dim=(0, 2, 3)), sample.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


@dataclass
class Inputs:
    """uint8 batches -> model input: augmentation (training only, in-memory data) then the spec's normalisation."""

    spec: PreprocessSpec
    augment: BatchAugment | None = None
    channels_last: bool = False

    def __call__(self, images: torch.Tensor, train: bool) -> torch.Tensor:
        x = images.float().div_(255)
        if train and self.augment is not None:
            x = self.augment(x)
        x = normalize(x, self.spec)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
