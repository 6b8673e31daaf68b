"""What the tests of real processes and of torch share beyond helpers.py: commands run a few at a time, and
torch on one thread."""

import contextlib

AT_ONCE = 2  # processes of a fixture running at the same time


def in_turn(starts, at_once=AT_ONCE, timeout=600):
    """{name: () -> Popen} started in order, at most `at_once` running at a time (a machine of few cores runs
    more only in turns, their threads spinning as they wait, seconds of CPU each); each waited for in that
    order. Returns {name: (the Popen, its stdout, its stderr)}, its exit status in .returncode."""
    running, ended = [], {}

    def finish():
        name, process = running.pop(0)
        ended[name] = (process, *process.communicate(timeout=timeout))

    for name, start in starts.items():
        if len(running) == at_once:
            finish()
        running.append((name, start()))
    while running:
        finish()
    return ended


@contextlib.contextmanager
def one_torch_thread():
    """torch on one thread: its float32 sums in one order whatever ran before, and no threads spinning for
    tensors this small. The process's setting back afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
