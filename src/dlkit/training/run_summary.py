"""What a finished run reports about itself (summary.json, the closing lines): its metrics, speed and where the
time went."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..device import process_seconds


def run_summary(trainer, fit_s: float) -> dict[str, Any]:
    """What summary.json holds: the run's best and last metrics, speed, timing and sizes. wall_s is the one wall
    time dlkit reports, process start to the run's end (timing.total_s, what the closing line prints); fit_s is the
    fit loop's own (first step to the last epoch's end, the figure wall_s held before)."""
    times = timing(trainer)
    last = trainer.history[-1] if trainer.history else {}
    rates = [r["images_per_s"] for r in trainer.history if "images_per_s" in r]
    metrics = {k: last.get(k) for k in last if k.startswith(("train_", "val_"))}
    best_record = next((r for r in trainer.history if r["epoch"] == trainer.best_epoch), {})
    epochs = [r for r in trainer.history if not r.get("within_epoch")]
    return {
        "run_dir": str(trainer.run_dir), "checkpoint": str(trainer.run_dir / "checkpoints" / "best.safetensors"),
        "tensorboard": str(trainer.run_dir / "tb") if trainer.cfg.tensorboard else None,
        "data": trainer.cfg.data, "model": trainer.cfg.model, "epochs": trainer.epoch,
        "task": trainer.task.name, "modality": trainer.modality.name, "monitor": trainer.monitor, "best_value": trainer.best_value,
        "best_val_acc": best_record.get("val_acc"), "best_epoch": trainer.best_epoch,
        "best_metrics": {k: v for k, v in best_record.items() if k.startswith("val_")}, **metrics,
        "images_per_s": float(np.median(rates)) if rates else None, "device": trainer.device_label,
        "memory_format": "channels_last" if trainer.parts.inputs.channels_last else "contiguous",
        "cuda_graphs": trainer.parts.graphed.status if trainer.parts.graphed is not None else "off",
        "wall_s": times["total_s"], "fit_s": round(fit_s, 2), "timing": times, "stopped": trainer.stopped,
        "validations": len(trainer.history) - len(epochs), "train_samples": len(trainer.data.train), "val_samples": len(trainer.data.val),
        "parameters": count_parameters(trainer.model), **data_notes(trainer.data.notes),
    }


def data_notes(notes: list[str]) -> dict[str, list[str]]:
    """What the data's preparation said: warnings (what was left out, and why) apart from the other notes."""
    from ..errors import DataWarning

    return {"data_warnings": [str(n) for n in notes if isinstance(n, DataWarning)],
            "data_notes": [str(n) for n in notes if not isinstance(n, DataWarning)]}


def timing(trainer) -> dict[str, float]:
    """Where the time went, from process start: setup and decoding, training steps, validation, the writing done
    between epochs on the training thread (epoch lines, metrics file, checkpoints, TensorBoard's snapshots), and
    the rest: the writing at the end (last checkpoint, report)."""
    total = process_seconds()
    train, val, tracking = trainer.seconds["train"], trainer.seconds["val"], trainer.seconds["tracking"]
    phases = getattr(trainer, "setup_clock", None)
    return {"total_s": round(total, 2), "setup_s": round(trainer.setup_s, 2),
            **({"setup": dict(phases.phases)} if phases else {}), "train_s": round(train, 2),
            "val_s": round(val, 2), "tracking_s": round(tracking, 3),
            "write_s": round(max(0.0, total - trainer.setup_s - train - val - tracking), 2)}


class SetupClock:
    """Where setup's seconds go, phase by phase from process start (start-up: the interpreter, imports and the
    caller's own work before the Trainer; then each phase Trainer.setup marks). The phases add up to setup_s."""

    def __init__(self):
        self.last = process_seconds()
        self.phases: dict[str, float] = {"start-up": round(self.last, 3)}

    def mark(self, phase: str) -> None:
        now = process_seconds()
        self.phases[phase] = round(self.phases.get(phase, 0.0) + now - self.last, 3)
        self.last = now


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
