"""Shared pieces of the benchmarks: where the data is, the recipes, a clock from process start, and result printing.

Each benchmark runs every variant in its own subprocess (fresh memory, so peak RSS is per variant; the same start-up
on every side) and prints the reference measured in the same run, and the ratio.
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RECIPES = {  # same model, batch size, optimizer and lr on both sides
    "lenet": {"optimizer": "sgd", "lr": 0.9, "batch_size": 256},          # the d2l recipe
    "lenet-modern": {"optimizer": "sgd", "lr": 0.1, "batch_size": 256},
    "quick": {"optimizer": "sgd", "lr": 0.05, "batch_size": 256},
}
DEFAULT_RECIPE = {"optimizer": "sgd", "lr": 0.05, "batch_size": 256}  # the other curriculum networks


def recipe_for(model: str) -> dict:
    return RECIPES.get(model, DEFAULT_RECIPE)


def fashion_dir() -> Path:
    path = Path(os.environ.get("DLKIT_FASHION_DIR", SHARED / "fashion-mnist"))
    if not path.is_dir():
        sys.exit(f"skipped: {path} not found (set DLKIT_FASHION_DIR to the folder of the four Fashion-MNIST .gz files)")
    return path


def torchvision_root(fashion: Path) -> Path:
    """torchvision wants <root>/FashionMNIST/raw/<file> un-gzipped: unpack once into the temp dir."""
    import gzip

    root = Path(tempfile.gettempdir()) / "dlkit-bench-tv"
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for f in fashion.glob("*.gz"):
        if not (raw / f.stem).exists():
            (raw / f.stem).write_bytes(gzip.decompress(f.read_bytes()))
    return root


def jpeg_folder(fashion: Path) -> Path:
    """Fashion-MNIST written once as train/ and val/ class folders of JPEGs (cached in the temp dir)."""
    root = Path(tempfile.gettempdir()) / "dlkit-bench-fashion-jpeg"
    if (root / "done").exists():
        return root
    from PIL import Image

    from dlkit.data.idx import read_idx_split

    for split, folder in (("train", "train"), ("test", "val")):
        images, labels = read_idx_split(fashion, split)
        for i, (img, label) in enumerate(zip(images[:, 0].numpy(), labels.tolist())):
            d = root / folder / str(label)
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{i}.jpg", quality=95)
    (root / "done").touch()
    return root


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict) -> None:
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print("RESULT " + json.dumps(result), flush=True)


def run_variant(script: str, *args: str, env: dict | None = None) -> dict:
    """Run `script --one ...` in a fresh interpreter (with `env` added to its environment) and return its RESULT."""
    cmd = [sys.executable, str(Path(__file__).parent / script), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")


def median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


class ProcessClock:
    """Seconds since this process started (interpreter start-up and imports included), the same clock on every side:
    at(t) converts a time.perf_counter() reading taken earlier, so hot loops only read perf_counter."""

    def __init__(self):
        from dlkit.device import process_seconds  # /proc on Linux; imports only torch

        self.offset = process_seconds() - time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() + self.offset

    def at(self, perf_counter_reading: float) -> float:
        return perf_counter_reading + self.offset


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
