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
        return cls(
            image_size=int(d["image_size"]),
            channels=int(d["channels"]),
            mean=tuple(float(x) for x in d["mean"]),
            std=tuple(float(x) for x in d["std"]),
            class_names=tuple(str(x) for x in d["class_names"]),
        )
