"""CIFAR-10 python batches, read with an unpickler that can build nothing but plain data and numpy arrays."""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCH = "test_batch"

# The only globals a CIFAR batch needs; anything else in a pickle is refused, so no code can run.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
    ("numpy._core.numeric", "_frombuffer"), ("numpy.core.numeric", "_frombuffer"),  # protocol-5 arrays
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def safe_unpickle(data: bytes, name: str):
    try:
        return _DataOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # any failure of a foreign file is the file's fault
        raise UserError(f"{name} is not a CIFAR-10 python batch ({type(e).__name__}: {e})") from None


def find_cifar_dir(folder: Path) -> Path | None:
    for base in (folder, folder / "cifar-10-batches-py"):
        if (base / "data_batch_1").is_file():
            return base
    return None


def _get(d: dict, key: str):
    return d.get(key.encode(), d.get(key))


def read_batch(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    d = safe_unpickle(path.read_bytes(), str(path))
    data, labels = (_get(d, "data"), _get(d, "labels")) if isinstance(d, dict) else (None, None)
    if not isinstance(data, np.ndarray) or labels is None or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise UserError(f"{path} is not a CIFAR-10 batch: expected 'data' (N x 3072 bytes) and N 'labels'")
    images = torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8).reshape(-1, 3, 32, 32))
    return images, torch.tensor(list(labels), dtype=torch.int64)


def read_cifar_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    names = TRAIN_BATCHES if split == "train" else [TEST_BATCH]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise UserError(f"{folder} lacks CIFAR-10 batch file(s) {', '.join(missing)}; put the extracted cifar-10-batches-py there")
    parts = [read_batch(folder / n) for n in names]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def read_class_names(folder: Path) -> list[str] | None:
    meta = folder / "batches.meta"
    if not meta.is_file():
        return None
    d = safe_unpickle(meta.read_bytes(), str(meta))
    names = _get(d, "label_names") if isinstance(d, dict) else None
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names else None
