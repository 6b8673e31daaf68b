"""The errors a user can act on, and how the command lines show them: one line, an exit status."""

import argparse
import atexit
import os
import sys
import threading


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


def run(main, parser, argv=None, whole_process=False):
    """Runs main(parsed flags); a UserError (exit status 2), a non-finite loss (3) or a lost process (1) is one
    line on stderr. `whole_process`: the command owns the process, which ends as soon as main is done
    (exit_now), unless something goes on after it (python -i, cProfile, a debugger)."""
    ends_here = whole_process and not (sys.flags.inspect or sys.getprofile() or sys.gettrace())
    status = 0
    try:
        main(parser.parse_args(argv))
    except (UserError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        status = e.exit_status
    except LostProcessError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(e.exit_status)
    except SystemExit as e:  # -h, a stopped run's status
        if not ends_here:
            raise
        if isinstance(e.code, str):
            print(e.code, file=sys.stderr)
        status = e.code if isinstance(e.code, int) else int(e.code is not None)
    if ends_here:
        exit_now(status)
    if status:
        sys.exit(status)


def exit_now(status):
    """Ends the process as Python's exit does, less the interpreter's teardown, which frees every object of a
    jax program one by one (0.15-0.25 s of each command) where the OS frees them at once: the threads finish
    and the exit handlers (jax's, logging's, tensorboardX's) run first, as at any exit."""
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()  # what every exit runs; CPython names no public call for it
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:  # a closed pipe: Python's own exit status for it
        status = 120
    os._exit(status)
