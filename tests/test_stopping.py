"""SIGINT and SIGTERM sent to a real train.py: it stops at the end of the current dispatch, evaluates, saves,
prints the command that continues it and exits 130 or 143; that command ends the run bit for bit as the run
never stopped."""

import json
import re
import shlex
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, write_words
from mmjax import cli, inference

TRAIN = str(ROOT / "train.py")
RUN = ["--type", "bigram", "--no-progress", "--log-every", "10", "--eval-every", "1000", "--sample-every", "0"]
STOPPED = re.compile(r"stopped at step (\d+): continue with (.*)")
try:  # orbax's public path module: the driver presses Ctrl-C in the rename that ends a save
    from orbax.checkpoint.path import atomicity
    IN_A_SAVE = callable(getattr(getattr(atomicity, "AtomicRenameTemporaryPath", None), "finalize", None))
except ImportError:
    IN_A_SAVE = False
NO_SAVE_HOOK = "this orbax has no orbax.checkpoint.path.atomicity.AtomicRenameTemporaryPath.finalize to press Ctrl-C in"

# train.py that presses Ctrl-C itself as the dispatch from step 30 starts (so it stops at 40), and again
# while orbax writes latest's checkpoint of step 40
DRIVER = """
import os, re, signal, sys
from orbax.checkpoint.path import atomicity
from mmjax import cli, steps

ctrl_c = lambda: os.kill(os.getpid(), signal.SIGINT)
train_steps = steps.train_steps
def pressing_train_steps(state, *args, **kwargs):
    if int(state.step) == 30:
        ctrl_c()
    return train_steps(state, *args, **kwargs)
steps.train_steps = pressing_train_steps
finalize = atomicity.AtomicRenameTemporaryPath.finalize
async def pressing_finalize(self):
    if re.search("latest/40$", str(self.get_final())):
        ctrl_c()
    return await finalize(self)
atomicity.AtomicRenameTemporaryPath.finalize = pressing_finalize
cli.train_command()
"""


def last_step(run):
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return json.loads(lines[-1])["step"] if lines and lines[-1].endswith("}") else 0


def latest(run):
    return sorted(int(p.name) for p in (run / "checkpoints" / "latest").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Runs stopped by SIGINT and SIGTERM (both with --max-steps -1: until stopped) and by the driver's two
    Ctrl-Cs; each then continued, by the command it printed, to the same step K as a run never stopped."""
    d = tmp_path_factory.mktemp("stopping")
    words = write_words(d / "words.txt")
    (d / "driver.py").write_text(DRIVER)
    start = lambda script, name, *argv: subprocess.Popen(
        [sys.executable, script, "-i", str(words), "-o", str(d / name), *RUN, *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    processes = {"SIGINT": start(TRAIN, "SIGINT", "--max-steps", "-1"),
                 "SIGTERM": start(TRAIN, "SIGTERM", "--max-steps", "-1")}
    if IN_A_SAVE:
        processes["twice"] = start(str(d / "driver.py"), "twice", "--max-steps", "1000")
    seen = {}
    for name in ("SIGINT", "SIGTERM"):
        deadline = time.monotonic() + 120
        while last_step(d / name) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert processes[name].poll() is None  # a -1 run goes on until stopped
        seen[name] = last_step(d / name)
        processes[name].send_signal(getattr(signal, name))
    stopped = {}
    for name, process in processes.items():
        stderr = process.communicate(timeout=120)[1]
        step, command = STOPPED.fullmatch(stderr.splitlines()[-1]).groups()
        stopped[name] = dict(status=process.returncode, stderr=stderr, step=int(step), command=command,
                             seen=seen.get(name))
    for name, s in stopped.items():  # what the stop left, before the runs are continued
        s["latest"] = latest(d / name)
        s["evaluated"] = [json.loads(line)["step"] for line in (d / name / "metrics.jsonl").read_text().splitlines()
                          if "test_loss" in line][-1]
    k = max(s["step"] for s in stopped.values()) + 20
    for name, s in stopped.items():  # the printed command, in this process (it imported jax already)
        argv = shlex.split(s["command"])[2:]  # after "python train.py"
        cli.train_command([*argv, "--max-steps", str(k)])
    cli.train_command(["-i", str(words), "-o", str(d / "whole"), *RUN, "--max-steps", str(k)])
    return d, stopped, k


@pytest.mark.parametrize("name, status", [("SIGINT", 130), ("SIGTERM", 143), pytest.param(
    "twice", 130, marks=pytest.mark.skipif(not IN_A_SAVE, reason=NO_SAVE_HOOK))])
def test_a_signal_stops_training_at_the_end_of_the_dispatch(runs, name, status):
    d, stopped, _ = runs
    s = stopped[name]
    assert s["status"] == status and s["stderr"].count("\n") == 1, s["stderr"]  # one line, no traceback
    assert s["step"] % 10 == 0 and s["step"] >= (s["seen"] or 40)
    if name == "twice":  # the second Ctrl-C, during the save, changed nothing
        assert s["step"] == 40
    assert s["latest"] == [s["step"]] and s["evaluated"] == s["step"]
    python, script, *argv = shlex.split(s["command"])  # the flags given, without -i, and --resume
    assert python == "python"
    assert script == (str(d / "driver.py") if name == "twice" else TRAIN)
    given = ["-o", str(d / name), *RUN, "--max-steps", "1000" if name == "twice" else "-1", "--resume"]
    assert vars(cli.train_parser().parse_args(argv)) == vars(cli.train_parser().parse_args(given))


def test_the_printed_command_ends_the_run_as_if_never_stopped(runs):
    d, stopped, k = runs
    whole = inference.load(d / "whole", which="latest").state
    assert int(whole.step) == k
    for name in stopped:
        state = inference.load(d / name, which="latest").state
        assert int(state.step) == k
        for a, b in zip(jax.tree.leaves((whole.params, whole.opt_state, whole.rng)),
                        jax.tree.leaves((state.params, state.opt_state, state.rng))):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
