"""MNIST-style IDX files (gzipped or not): the format of MNIST and Fashion-MNIST."""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError

# IDX type codes -> numpy dtypes (big-endian as stored)
_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse IDX bytes into an array, checking the header against the length."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _DTYPES:
        raise UserError(f"{name} is not an IDX file (bad magic number); expected MNIST-style files")
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise UserError(f"{name} has a truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = header + math.prod(shape) * dtype.itemsize  # Python ints: no overflow on crafted headers
    if len(data) != expected:
        raise UserError(f"{name} is truncated or padded: {len(data)} bytes, header says {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)


def find_idx_file(folder: Path, stem: str) -> Path | None:
    for candidate in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        for base in (folder, folder / "raw"):
            if (base / candidate).is_file():
                return base / candidate
    return None


def read_idx_file(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise UserError(f"{path} is a damaged gzip file ({e}); download it again") from None
    return parse_idx(raw, str(path))


def has_idx(folder: Path) -> bool:
    return find_idx_file(folder, IDX_FILES["train"][0]) is not None


def read_idx_split(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 Nx1xHxW, labels int64) for 'train' or 'test'."""
    image_stem, label_stem = IDX_FILES[split]
    image_path, label_path = find_idx_file(folder, image_stem), find_idx_file(folder, label_stem)
    if image_path is None or label_path is None:
        raise UserError(f"{folder} lacks {image_stem}(.gz) or {label_stem}(.gz); put the four MNIST-style files there")
    images, labels = read_idx_file(image_path), read_idx_file(label_path)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels) or images.dtype != np.uint8:
        raise UserError(f"{image_path} and {label_path} do not match: expected N images of HxW bytes and N labels")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))
