"""What a training process does beside its steps: catching SIGINT/SIGTERM so the step in flight finishes and `last`
is saved (the Trainer then raises TrainingInterrupted), and seeding every RNG a run draws from."""
from __future__ import annotations

import contextlib
import random
import signal
import threading

import numpy as np
import torch


@contextlib.contextmanager
def signals_caught(trainer):
    """SIGINT/SIGTERM: finish the step, save, stop (trainer._signal is set; the step loop reads it). A second SIGINT
    stops at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer._signal is not None:
            raise KeyboardInterrupt
        trainer._signal = signum
        trainer.console.print(f"\n{signal.Signals(signum).name}: finishing this step and saving (again to stop at once)")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
