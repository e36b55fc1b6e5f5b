"""On-disk cache of decoded image folders: keyed by the file list, sizes, modification times, the spec's size and
channels and Pillow's size limit, so a second run over the same folder skips decoding (and any change invalidates it)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from .source import Samples

CACHE_VERSION = "2"  # 2: the notes' warnings are kept apart (a version-1 file would drop them)


def cache_dir() -> Path:
    return Path(os.environ.get("DLKIT_CACHE_DIR") or Path.home() / ".cache" / "dlkit") / "decoded"


def cache_key(samples: Samples, channels: int, size: int) -> str:
    from PIL import Image

    # Pillow's decompression-bomb limit decides which files are skipped: another --max-image-pixels must decode again
    h = hashlib.sha256(f"{CACHE_VERSION}|{channels}|{size}|{Image.MAX_IMAGE_PIXELS}".encode())
    folders: dict[str, str] = {}  # each folder resolved once: resolving every file took ~3 s for 60,000 of them
    parts = []  # hashed at once: the same digest as one update per file, in half the time (plain strings, no Paths)
    for path, label in zip(samples.paths, samples.labels.tolist()):
        text = os.fspath(path)
        head, _, name = text.rpartition(os.sep)
        folder = folders.get(head)
        if folder is None:
            folder = folders[head] = str(path.parent.resolve())
        st = os.stat(text)  # follows a symlinked file: its target's size and time
        parts.append(f"|{folder}/{name}|{st.st_size}|{st.st_mtime_ns}|{label}")
    h.update("".join(parts).encode())
    return h.hexdigest()[:32]


def load_cached(key: str) -> tuple[Samples, list[str], torch.Tensor] | None:
    """(decoded samples, notes, indices kept) or None when absent or unreadable (then we simply decode again)."""
    from ..errors import DataWarning, UserError
    from ..storage import load_tensors

    path = cache_dir() / f"{key}.safetensors"
    try:
        if not path.is_file():
            return None
        tensors, meta = load_tensors(path)
    except UserError:  # damaged: decode again, and let the fresh copy replace it
        path.unlink(missing_ok=True)
        return None
    except OSError:  # an unreadable cache folder is no worse than no cache
        return None
    warnings = set(meta.get("warnings", []))  # kept apart in the file: JSON has no str subclass
    notes = [DataWarning(n) if n in warnings else n for n in meta.get("notes", [])]
    return Samples(tensors["labels"], tensors["images"]), notes, tensors["kept"]


def store(key: str, decoded: Samples, notes: list[str], kept: torch.Tensor) -> str | None:
    """Write the decoded folder to the cache; on failure return a note instead of raising.

    The cache only saves time, so a read-only home (common in containers and on clusters) or a full disk must not
    stop training: the run goes on decoding, and the note says why the next run will decode again.
    """
    from ..errors import DataWarning, UserError
    from ..storage import save_tensors

    folder = cache_dir()
    try:
        # not fsynced (0.6 s for 60,000 small images): a file torn by a power cut fails its digest, and is decoded again
        save_tensors(folder / f"{key}.safetensors",
                     {"images": decoded.images, "labels": decoded.labels, "kept": kept}, {"notes": notes, "warnings": [n for n in notes if isinstance(n, DataWarning)]},
                     durable=False)
    except (OSError, UserError) as e:
        # save_tensors reports a failed write as a UserError (with resume advice meant for checkpoints); the
        # OSError behind it holds the plain reason
        cause = e.__context__ if isinstance(e, UserError) and isinstance(e.__context__, OSError) else e
        reason = getattr(cause, "strerror", None) or str(cause)
        return (f"decoded images not cached: cannot write {folder} ({reason}); going on without the cache "
                "(set DLKIT_CACHE_DIR to a writable folder, or pass --no-disk-cache)")
    return None
