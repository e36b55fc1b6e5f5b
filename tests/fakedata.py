"""Tiny generated datasets for tests."""
from pathlib import Path

import numpy as np
from PIL import Image


def make_class_folders(root: Path, classes=("cat", "dog"), per_class=10, size=12) -> Path:
    """root/<class>/img N.png, classes told apart by brightness, so a model can learn them in a step or two."""
    rng = np.random.default_rng(0)
    for i, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for j in range(per_class):
            pixels = rng.integers(0, 80, (size, size, 3), dtype=np.uint8) + np.uint8(160 * i)
            Image.fromarray(pixels).save(root / name / f"img {j}.png")
    return root
