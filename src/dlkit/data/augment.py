"""Training augmentation: batched tensor ops on the training device (fast path) and transforms.v2 (file path)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTS = ("none", "light", "standard", "alternating", "shift")
ALTERNATING = "alternating"  # the batches mirror each image on every other epoch (data/loaders.TensorBatches)
TRANSLATE = 2                # px of the airbench translation (reflect padding)


def crop_padding(size: int) -> int:
    return max(1, size // 8)  # 4 px at 32, as in the CIFAR recipes


class BatchAugment:
    """Per-sample random crop with padding, flip, colour jitter and small affine, on a float NxCxHxW batch in [0, 1].

    light = crop + flip; standard = light + brightness/contrast jitter + rotation/scale; shift = a random
    translation of up to 2 px with reflect padding (airbench's); alternating = shift, with the flip done by the
    batches themselves (each image mirrored on every other epoch, which needs to know which image is which).
    No per-sample Python.
    """

    def __init__(self, level: str, size: int, generator: torch.Generator | None = None):
        self.level, self.pad, self.gen = level, crop_padding(size), generator

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.level == "none":
            return x
        if self.level in ("shift", ALTERNATING):
            return self.translate(x, TRANSLATE)
        x = self.flip(self.crop(x))
        if self.level == "standard":
            x = self.affine(self.jitter(x))
        return x

    def _rand(self, n: int, device) -> torch.Tensor:
        return torch.rand(n, generator=self.gen).to(device)

    def crop(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        p = self.pad
        padded = F.pad(x, (p, p, p, p))
        dy = (self._rand(n, x.device) * (2 * p + 1)).long()
        dx = (self._rand(n, x.device) * (2 * p + 1)).long()
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # N,H,1
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # N,1,W
        batch = torch.arange(n, device=x.device)[:, None, None]
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()

    def translate(self, x: torch.Tensor, pad: int) -> torch.Tensor:
        """Each image shifted by (dy, dx) in [-pad, pad]^2, the border filled by reflection: always a crop of the
        reflect-padded image, so nothing from outside it (zeros, other images) comes in."""
        n, _, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        offsets = (torch.rand(n, 2, generator=self.gen) * (2 * pad + 1)).long().clamp_max(2 * pad).to(x.device)
        rows = (offsets[:, :1] + torch.arange(h, device=x.device))[:, :, None]  # N,H,1
        cols = (offsets[:, 1:] + torch.arange(w, device=x.device))[:, None, :]  # N,1,W
        batch = torch.arange(n, device=x.device)[:, None, None]
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous()

    def flip(self, x: torch.Tensor) -> torch.Tensor:
        mask = (self._rand(len(x), x.device) < 0.5)[:, None, None, None]
        return torch.where(mask, x.flip(3), x)

    def jitter(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        brightness = 0.8 + 0.4 * self._rand(n, x.device)[:, None, None, None]
        contrast = 0.8 + 0.4 * self._rand(n, x.device)[:, None, None, None]
        x = x * brightness
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return ((x - mean) * contrast + mean).clamp(0, 1)

    def affine(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        angle = (self._rand(n, x.device) * 2 - 1) * math.radians(10)
        scale = 1 / (0.9 + 0.2 * self._rand(n, x.device))
        cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
        zeros = torch.zeros_like(cos)
        theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def file_augment(level: str, size: int):
    """The same augmentation for the DataLoader path, as torchvision.transforms.v2 on uint8 tensors."""
    if level == "none":
        return None
    from torchvision.transforms import v2

    if level in ("shift", ALTERNATING):  # files come one by one: a random flip stands in for the alternating one
        shift = [v2.RandomCrop(size, padding=TRANSLATE, padding_mode="reflect")]
        return v2.Compose(shift + ([v2.RandomHorizontalFlip()] if level == ALTERNATING else []))
    steps = [v2.RandomCrop(size, padding=crop_padding(size)), v2.RandomHorizontalFlip()]
    if level == "standard":
        steps += [v2.ColorJitter(brightness=0.2, contrast=0.2), v2.RandomAffine(degrees=10, scale=(0.9, 1.1))]
    return v2.Compose(steps)
