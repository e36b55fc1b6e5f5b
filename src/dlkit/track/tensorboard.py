"""TensorBoard callback: scalars per epoch (losses, accuracies, learning rate) and the training loss every N steps."""
from __future__ import annotations

from pathlib import Path
from typing import Any


class TensorBoardLogger:
    def __init__(self, log_dir: Path, every_n_steps: int = 50):
        from torch.utils.tensorboard import SummaryWriter  # imported here: tensorboard is slow to import

        self.writer = SummaryWriter(str(log_dir))
        self.every = every_n_steps

    def on_batch_end(self, trainer, batch_size: int, loss) -> None:
        if trainer.step % self.every == 0:
            self.writer.add_scalar("train/loss_step", float(loss), trainer.step)

    def on_epoch_end(self, trainer, record: dict[str, Any]) -> None:
        epoch = record["epoch"]
        for split in ("train", "val"):
            self.writer.add_scalar(f"loss/{split}", record[f"{split}_loss"], epoch)
            self.writer.add_scalar(f"accuracy/{split}", record[f"{split}_acc"], epoch)
        self.writer.add_scalar("lr", record["lr"], epoch)
        self.writer.add_scalar("images_per_s", record["images_per_s"], epoch)
        self.writer.flush()

    def on_fit_end(self, trainer, summary: dict[str, Any]) -> None:
        self.writer.close()

    on_exception = on_fit_end
