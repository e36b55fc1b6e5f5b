"""User-facing errors: the CLI prints their one line and exits 2, without a traceback."""


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
