"""Stopping when asked: SIGINT (Ctrl-C) and SIGTERM (how Colab and preemptible VMs end a job) are recorded,
not acted on, and `train_and_evaluate` checks them at each dispatch boundary: it evaluates, saves and
raises `Stopped`, which the CLI turns into one line and exit status 130 or 143."""

import contextlib
import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stopped(Exception):
    """Training stopped at `step` (evaluated and saved) because of signal `signum`."""

    def __init__(self, step, signum):
        super().__init__(f"stopped at step {step} by {signal.Signals(signum).name}")
        self.step, self.signum = step, signum

    @property
    def exit_status(self):
        return 128 + self.signum  # what a shell reports for a process that signal ended: 130, 143


class Signals:
    """The first SIGINT or SIGTERM received. Later ones are ignored, so a second Ctrl-C cannot cut the final
    save short."""

    def __init__(self):
        self.received = 0

    def _record(self, signum, frame):
        self.received = self.received or signum

    def requested(self):
        """The signal that stops training (0: none). With several processes it is the largest any of them
        received, so every host stops at the same step; call it at the same points on all of them."""
        if jax.process_count() == 1:
            return self.received
        return int(np.max(multihost_utils.process_allgather(np.int32(self.received))))


@contextlib.contextmanager
def on_signals():
    """Signals recorded for the duration, then the previous handlers back. Python sets handlers only in the
    main thread: elsewhere nothing is caught and `requested()` stays 0."""
    stop = Signals()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop._record) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
