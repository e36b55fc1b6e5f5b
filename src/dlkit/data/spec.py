"""PreprocessSpec: how raw images become model input. Saved with every checkpoint; eval and predict use only it."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class PreprocessSpec:
    image_size: int                 # square side in pixels after resize (shorter side) + center crop
    channels: int                   # 1 = grayscale, 3 = RGB
    mean: tuple[float, ...]         # per channel, on the 0..1 scale
    std: tuple[float, ...]          # per channel, on the 0..1 scale
    class_names: tuple[str, ...]    # index -> name

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PreprocessSpec":
        """From a checkpoint's metadata, which is data from anywhere: a value no training run writes is a
        ValueError (an image side of a million pixels would make every prediction allocate terabytes)."""
        spec = cls(
            image_size=int(d["image_size"]),
            channels=int(d["channels"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
            class_names=tuple(str(x) for x in d["class_names"]),
        )
        if not (1 <= spec.image_size <= MAX_IMAGE_SIZE and spec.channels in (1, 3)):
            raise ValueError(f"image_size {spec.image_size} or channels {spec.channels} out of range")
        if len(spec.mean) != spec.channels or len(spec.std) != spec.channels or not all(s > 0 for s in spec.std):
            raise ValueError("mean and std need one value per channel, std above 0")
        return spec


MAX_IMAGE_SIZE = 2048  # the largest input side a checkpoint may ask for (a model's trial forward runs at it)
