"""User-facing errors: the CLI prints their one line and exits 2, without a traceback; and the other ways a
command ends that every layer may raise or catch (TrainingInterrupted)."""

import signal
from pathlib import Path


class UserError(Exception):
    """A mistake the user can fix: bad path, bad value, unknown name.

    The message is one line naming what was wrong and what to do.
    """

    exit_code = 2


class DataWarning(str):
    """A note that something was left out (unreadable images skipped, files ignored, rows dropped) or changed (the
    network's file since training): unlike other notes it is shown under -q too, on stderr, and recorded in
    summary.json and the report. A plain str everywhere else."""


def require(condition: bool, message: str) -> None:
    """Raise UserError(message) unless condition holds. Used to validate input before work."""
    if not condition:
        raise UserError(message)


class TrainingInterrupted(Exception):
    """SIGINT/SIGTERM arrived; the step finished and `last` was saved. exit_code is 128 + the signal number."""

    def __init__(self, signum: int, run_dir: Path, step: int):
        self.signum, self.run_dir, self.step = signum, run_dir, step
        self.exit_code = 128 + signum
        super().__init__(f"{signal.Signals(signum).name} at step {step}: saved {run_dir}/checkpoints/last.safetensors")
