"""kill -9 during training and in the middle of checkpoint saves, then --resume: the run goes on from the
last complete checkpoint and ends bit for bit as the same run never stopped."""

import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, write_words
from mmjax import cli, train
from mmjax.workdir import WorkDir

SMALL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--no-progress"]
RUN = [*SMALL, "--max-steps", "60", "--eval-every", "20", "--log-every", "10"]

# train.py that SIGKILLs itself at a chosen point: "step N" as the dispatch from step N starts, or else
# when orbax is about to rename the temporary directory whose final path matches this regex (the data
# is written, the checkpoint not yet complete).
DRIVER = """
import functools, os, re, signal, sys
from orbax.checkpoint._src.path import atomicity
from mmjax import cli, train

where = sys.argv.pop(1)
die = lambda: os.kill(os.getpid(), signal.SIGKILL)
if where.startswith("step "):
    train_steps = train.train_steps
    def killing_train_steps(state, *args, **kwargs):
        if int(state.step) == int(where[5:]):
            die()
        return train_steps(state, *args, **kwargs)
    train.train_steps = killing_train_steps
else:
    finalize = atomicity.AtomicRenameTemporaryPath.finalize
    async def killing_finalize(self):
        if re.search(where, str(self.get_final())):
            die()
        return await finalize(self)
    atomicity.AtomicRenameTemporaryPath.finalize = killing_finalize
cli.run(cli.train_main, cli.train_parser())
"""

# where each run is killed, and what its checkpoints are then: steps kept, and temporary directories
KILLS = {
    "step 30": ({"best": [20], "latest": [20]}, []),  # between checkpoints
    r"best/40\.[^/]*/default$": ({"best": [20], "latest": [20]}, ["best/40"]),  # best's arrays written, no more
    r"latest/40$": ({"best": [40], "latest": [20]}, ["latest/40"]),  # best saved, latest written, not renamed
}


def checkpoints(run):
    """Steps of the complete checkpoints, and the temporary directories, under run/checkpoints."""
    complete = {which: sorted(int(p.name) for p in (run / "checkpoints" / which).glob("*") if p.name.isdigit())
                for which in ("best", "latest")}
    partial = sorted(f"{p.parent.name}/{p.name.split('.')[0]}" for p in (run / "checkpoints").glob("*/*.orbax-*"))
    return complete, partial


def restored(run, which):
    return inference.load(run, which).state


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run never stopped, and the same run killed at each point of KILLS (in parallel processes)."""
    d = tmp_path_factory.mktemp("interrupted")
    words = write_words(d / "words.txt")
    (d / "driver.py").write_text(DRIVER)
    killed = {where: subprocess.Popen([sys.executable, str(d / "driver.py"), where, "-i",
                                       str(words), "-o", str(d / f"killed{i}"), *RUN], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, text=True)
              for i, where in enumerate(KILLS)}
    cli.train_main(cli.train_parser().parse_args(["-i", str(words), "-o", str(d / "whole"), *RUN]))
    for where, process in killed.items():
        assert process.wait(timeout=300) == -signal.SIGKILL, process.stderr.read()
    return d / "whole", {where: d / f"killed{i}" for i, where in enumerate(KILLS)}


@pytest.mark.parametrize("where", KILLS)
def test_resumed_after_kill_9_equals_the_run_never_stopped(runs, where):
    whole, killed = runs
    run = killed[where]
    assert checkpoints(run) == KILLS[where]
    if where == "step 30":  # a kill in the middle of a metrics line leaves it cut short
        with open(run / "metrics.jsonl", "a") as f:
            f.write('{"step": 30, "lo')
    cli.train_main(cli.train_parser().parse_args(["-o", str(run), "--resume", "--no-progress"]))
    assert checkpoints(run) == checkpoints(whole) == ({"best": checkpoints(whole)[0]["best"], "latest": [60]}, [])
    for which in ("latest", "best"):
        for a, b in zip(jax.tree.leaves(restored(whole, which)), jax.tree.leaves(restored(run, which)), strict=True):
            np.testing.assert_array_equal(a, b)
    assert (run / "metrics.jsonl").read_bytes() == (whole / "metrics.jsonl").read_bytes()


def test_a_run_killed_before_its_first_checkpoint_starts_over(runs, tmp_path):
    whole, _ = runs
    run = tmp_path / "run"  # what such a run leaves: its config, its data and the losses logged so far
    run.mkdir()
    for name in ("config.json", "dataset.json"):
        shutil.copy(whole / name, run)
    (run / "metrics.jsonl").write_text((whole / "metrics.jsonl").read_text().splitlines(keepends=True)[0])
    cli.train_main(cli.train_parser().parse_args(["-o", str(run), "--resume", "--no-progress"]))
    for a, b in zip(jax.tree.leaves(restored(whole, "latest")), jax.tree.leaves(restored(run, "latest")), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (run / "metrics.jsonl").read_bytes() == (whole / "metrics.jsonl").read_bytes()
