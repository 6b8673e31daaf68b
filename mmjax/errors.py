class UserError(ValueError):
    """Bad input or flags: the CLIs print the message (problem and fix) on one line and exit 2."""

    exit_status = 2


class NonFiniteLossError(FloatingPointError):
    """Training diverged (a NaN or infinite loss): the CLIs print the message on one line and exit 3."""

    exit_status = 3
