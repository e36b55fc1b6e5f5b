"""User-facing errors: the CLI prints their one line and exits 2, without a traceback."""


class UserError(Exception):
    """A mistake the user can fix: bad path, bad value, unknown name.

    The message is one line naming what was wrong and what to do.
    """

    exit_code = 2


def require(condition: bool, message: str) -> None:
    """Raise UserError(message) unless condition holds. Used to validate input before work."""
    if not condition:
        raise UserError(message)
