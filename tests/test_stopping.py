"""SIGINT and SIGTERM sent to a real train.py: it stops at the end of the dispatch the signal came in, evaluates,
saves, prints the command that continues it and exits 130 or 143; that command ends the run bit for bit as the
run never stopped. A second Ctrl-C during the final save changes nothing; a signal in the last dispatch lets
the run finish (exit status 0)."""

import ast
import json
import os
import re
import shlex
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, write_words
from mmjax import cli, inference
from support import in_turn

TRAIN = str(ROOT / "train.py")
RUN = ["--type", "bigram", "--no-progress", "--log-every", "10", "--eval-every", "1000", "--sample-every", "0"]
STOPPED = re.compile(r"stopped at step (\d+): continue with (.*)")
try:  # orbax's public path module: the driver presses Ctrl-C in the rename that ends a save
    from orbax.checkpoint.path import atomicity
    IN_A_SAVE = callable(getattr(getattr(atomicity, "AtomicRenameTemporaryPath", None), "finalize", None))
except ImportError:
    IN_A_SAVE = False
NO_SAVE_HOOK = "this orbax has no orbax.checkpoint.path.atomicity.AtomicRenameTemporaryPath.finalize to press Ctrl-C in"

# train.py (run as itself, its sys.argv[0] train.py) that sends itself $SIGNAL as the dispatch from step $AT
# starts, and, with $AGAIN_IN_SAVE (a checkpoint, "latest/40"), SIGINT again while orbax finalizes that
# checkpoint's save. It prints each call of the handler (mmjax.stopping.Signals._record): the signal, and the
# checkpoint being finalized when it ran (None: none was).
DRIVER = """
import atexit, os, re, runpy, signal, sys
from mmjax import steps, stopping

signum, at, again = getattr(signal, os.environ["SIGNAL"]), int(os.environ["AT"]), os.environ.get("AGAIN_IN_SAVE")
handled, finalizing = [], []
record = stopping.Signals._record
def counting_record(self, received, frame):
    handled.append((signal.Signals(received).name, finalizing[-1] if finalizing else None))
    return record(self, received, frame)
stopping.Signals._record = counting_record
train_steps = steps.train_steps
def signalling_train_steps(state, *args, **kwargs):
    if int(state.step) == at:
        os.kill(os.getpid(), signum)
    return train_steps(state, *args, **kwargs)
steps.train_steps = signalling_train_steps
if again:
    from orbax.checkpoint.path import atomicity
    finalize = atomicity.AtomicRenameTemporaryPath.finalize
    async def pressing_finalize(self, *args, **kwargs):
        name = "/".join(str(self.get_final()).split("/")[-2:])
        finalizing.append(name)
        try:
            if name == again:
                os.kill(os.getpid(), signal.SIGINT)
            return await finalize(self, *args, **kwargs)
        finally:
            finalizing.pop()
    atomicity.AtomicRenameTemporaryPath.finalize = pressing_finalize
sys.argv[0] = {train!r}
atexit.register(lambda: print("handled", handled, flush=True))  # the command ends by os._exit, after these
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# name -> (the driver's environment, --max-steps, the exit status, the step it stops at, the handler's calls)
CASES = {
    # Ctrl-C as the dispatch from 30 starts: it stops at 40; pressed again while latest/40 is being saved, it
    # arrives and changes nothing
    "SIGINT": (dict(SIGNAL="SIGINT", AT=30, **({"AGAIN_IN_SAVE": "latest/40"} if IN_A_SAVE else {})), -1, 130, 40,
               [("SIGINT", None)] + ([("SIGINT", "latest/40")] if IN_A_SAVE else [])),
    "SIGTERM": (dict(SIGNAL="SIGTERM", AT=20), -1, 143, 30, [("SIGTERM", None)]),
    # in the last dispatch (51..60): the run finishes, no "stopped" line, exit status 0
    "last dispatch": (dict(SIGNAL="SIGTERM", AT=50), 60, 0, 60, [("SIGTERM", None)]),
}
K = 60  # the step every run is continued to, and the run never stopped ends at


def last_evaluation(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
            if "test_loss" in line][-1]


def latest(run):
    return sorted(int(p.name) for p in (run / "checkpoints" / "latest").iterdir() if p.name.isdigit())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same run never stopped, to K (in this process, first: the processes read the programs it compiled
    back from the tests' compilation cache); the runs of CASES (real processes, two at a time), each
    stopped one then continued, by the command it printed, to step K."""
    d = tmp_path_factory.mktemp("stopping")
    words = write_words(d / "words.txt")
    (d / "driver.py").write_text(DRIVER.format(train=TRAIN))
    cli.train_command(["-i", str(words), "-o", str(d / "whole"), *RUN, "--max-steps", str(K)])
    started = in_turn({name: lambda name=name, env=env, max_steps=max_steps: subprocess.Popen(
        [sys.executable, str(d / "driver.py"), "-i", str(words), "-o", str(d / name), *RUN, "--max-steps",
         str(max_steps)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, **{k: str(v) for k, v in env.items()}}) for name, (env, max_steps, *_) in CASES.items()})
    ended = {}
    for name, (process, out, err) in started.items():
        handled = ast.literal_eval(out.rsplit("handled ", 1)[1]) if "handled " in out else out
        ended[name] = dict(status=process.returncode, stderr=err, handled=handled, latest=latest(d / name),
                           evaluated=last_evaluation(d / name))
    for name, s in ended.items():  # the printed command, in this process (it imported jax already)
        stopped = STOPPED.fullmatch(s["stderr"].splitlines()[-1]) if s["stderr"] else None
        if stopped:
            s["step"], s["command"] = int(stopped.group(1)), stopped.group(2)
            cli.train_command([*shlex.split(s["command"])[2:], "--max-steps", str(K)])  # after "python train.py"
    return d, ended


@pytest.mark.parametrize("name", CASES)
def test_a_signal_stops_training_at_the_end_of_the_dispatch_it_came_in(runs, name):
    d, ended = runs
    env, max_steps, status, step, handled = CASES[name]
    s = ended[name]
    assert s["status"] == status, s["stderr"]
    assert s["handled"] == handled  # every signal sent arrived, the second Ctrl-C during latest/40's save
    assert s["latest"] == [step] and s["evaluated"] == step  # evaluated and saved where it stopped
    if name == "last dispatch":  # the run finished: no line, nothing to continue
        assert s["stderr"] == "" and "step" not in s
        return
    assert s["stderr"].count("\n") == 1, s["stderr"]  # one line, no traceback
    assert s["step"] == step == env["AT"] + 10  # the end of the dispatch the signal came in
    python, script, *argv = shlex.split(s["command"])  # the flags given, without -i, and --resume
    assert python == "python" and script == TRAIN
    given = ["-o", str(d / name), *RUN, "--max-steps", str(max_steps), "--resume"]
    assert vars(cli.train_parser().parse_args(argv)) == vars(cli.train_parser().parse_args(given))
    if name == "SIGINT" and not IN_A_SAVE:  # after the assertions of one Ctrl-C
        pytest.skip(f"one Ctrl-C checked, not a second during the save: {NO_SAVE_HOOK}")


def test_the_printed_command_ends_the_run_as_if_never_stopped(runs):
    d, ended = runs
    whole = inference.load(d / "whole", which="latest").state
    assert int(whole.step) == K
    for name in ended:  # "last dispatch" was never stopped: it is the same run too
        state = inference.load(d / name, which="latest").state
        assert int(state.step) == K
        for a, b in zip(jax.tree.leaves((whole.params, whole.opt_state, whole.rng)),
                        jax.tree.leaves((state.params, state.opt_state, state.rng)), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
