"""The errors a user can act on, and how the command lines show them: one line, an exit status."""

import argparse
import os
import sys


class UserError(ValueError):
    """Bad input or settings: the message says the problem and the fix; the CLIs print it on one line
    and exit 2."""

    exit_status = 2


class NonFiniteLossError(FloatingPointError):
    """Training diverged (a NaN or infinite loss): the CLIs print the message on one line and exit 3."""

    exit_status = 3


class LostProcessError(RuntimeError):
    """Another process of a run on several hosts died: the CLIs print the message on one line and exit 1
    at once, without jax's shutdown (which would wait for the dead process, then abort)."""

    exit_status = 1


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported as every other bad input: one line, exit status 2."""

    def error(self, message):
        raise UserError(f"{message}: see {self.prog} -h")


def run(main, parser, argv=None):
    """Runs main(parsed flags); a UserError (exit status 2), a non-finite loss (3) or a lost process (1) is one
    line on stderr."""
    try:
        main(parser.parse_args(argv))
    except (UserError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_status)
    except LostProcessError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(e.exit_status)
