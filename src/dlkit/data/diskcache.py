"""On-disk cache of decoded image folders: keyed by the file list, sizes, modification times and the spec's
size and channels, so a second run over the same folder skips decoding (and any change invalidates it)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from .source import Samples

CACHE_VERSION = "1"


def cache_dir() -> Path:
    return Path(os.environ.get("DLKIT_CACHE_DIR") or Path.home() / ".cache" / "dlkit") / "decoded"


def cache_key(samples: Samples, channels: int, size: int) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}|{channels}|{size}".encode())
    for path, label in zip(samples.paths, samples.labels.tolist()):
        st = path.stat()
        h.update(f"|{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{label}".encode())
    return h.hexdigest()[:32]


def load_cached(key: str) -> tuple[Samples, list[str], torch.Tensor] | None:
    """(decoded samples, notes, indices kept) or None when absent or unreadable (then we simply decode again)."""
    from ..errors import UserError
    from ..storage import load_tensors

    path = cache_dir() / f"{key}.safetensors"
    if not path.is_file():
        return None
    try:
        tensors, meta = load_tensors(path)
    except UserError:
        path.unlink(missing_ok=True)
        return None
    return Samples(tensors["labels"], tensors["images"]), list(meta.get("notes", [])), tensors["kept"]


def store(key: str, decoded: Samples, notes: list[str], kept: torch.Tensor) -> None:
    from ..storage import save_tensors

    try:
        save_tensors(cache_dir() / f"{key}.safetensors",
                     {"images": decoded.images, "labels": decoded.labels, "kept": kept}, {"notes": notes})
    except OSError:
        pass  # a cache that cannot be written (read-only home, full disk) must not stop training
