"""Run folders: created once, never overwritten; hold config.yaml, metrics.jsonl, checkpoints/ and tb/."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError
from ..storage import atomic_write_text


def new_run_dir(out: str | None, runs_dir: str, data: str, model: str) -> Path:
    """Create the run folder: `out` exactly (must not exist), or runs/<time>-<data>-<model>[-n]."""
    if out:
        path = Path(out)
        if path.exists():
            raise UserError(f"run folder {path} already exists; choose another --out, or --resume {path} to continue it")
        path.mkdir(parents=True)
        return path
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(data)}-{_slug(model)}"
    for n in range(1000):
        path = Path(runs_dir) / (stem if n == 0 else f"{stem}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise UserError(f"could not find a free run name under {runs_dir}; pass --out")


def _slug(text: str) -> str:
    name = Path(text.rstrip("/")).name or text
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-")[:40] or "data"


def write_config(run_dir: Path, config: dict[str, Any]) -> None:
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))


def read_config(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise UserError(f"{run_dir} is not a dlkit run folder (no config.yaml); pass the folder `dlkit train` printed")
    try:
        config = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML ({str(e).splitlines()[0]}); was it written by dlkit train?") from None
    if not isinstance(config, dict):
        raise UserError(f"{path} holds a {type(config).__name__}, not the options of a run; was it written by dlkit train?")
    return config


class MetricsFile:
    """metrics.jsonl: one JSON line per epoch, rewritten atomically so a crash never leaves half a line. Not fsynced:
    the history is in the checkpoint too, and a resumed run writes the whole file again."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "metrics.jsonl"

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        lines = [json.dumps(r) for r in trainer.history]
        atomic_write_text(self.path, "\n".join(lines) + "\n", durable=False)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def save_samples(samples, spec, folder: Path, count: int = 8) -> None:
    """A few held-out images as PNG files named <n>_<class>.png, ready for `dlkit predict` (in-memory data only)."""
    if samples.images is None:
        return
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    step = max(1, len(samples) // count)
    for n, i in enumerate(range(0, min(len(samples), step * count), step)):
        array = samples.images[i].permute(1, 2, 0).squeeze(-1).numpy()
        name = spec.class_names[int(samples.labels[i])].replace("/", "-")
        Image.fromarray(array).save(folder / f"{n}_{name}.png")
