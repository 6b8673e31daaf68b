class UserError(ValueError):
    """Bad input or flags: the CLIs print the message (problem and fix) on one line and exit 2."""
