"""kill -9 during training and in the middle of checkpoint saves, then --resume: the run goes on from the
last complete checkpoint and ends bit for bit as the same run never stopped. Real processes, killed by
tests/faults.c at a write or a rename; the Transformer, mlp_bn (BatchNorm statistics, the lectures' step
schedule, dropping within the run) and the GRU."""

import signal

import jax
import numpy as np
import pytest

from conftest import write_words
from helpers import SMALL, command, train
from mmjax import inference
from support import in_turn

RUN = [*SMALL, "--max-steps", 60, "--eval-every", 20, "--log-every", 10]
# mlp_bn as the lecture trains it (SGD, BatchNorm), its learning rate stepping down at 30 of 60 steps
MLP_BN = """from mmjax.configs import mlp_bn


def get_config():
    config = mlp_bn.get_config()
    config.n_embd2 = 16
    config.lr_decay_steps = 30
    return config
"""
MODELS = {"transformer": [], "mlp_bn": ["--config", "{d}/mlp_bn.py"], "gru": ["--type", "gru", "--n-embd2", 16]}
# step 30's line of metrics.jsonl is the 4th write to it (after 10, 20 and the evaluation at 20)
AT_STEP_30 = dict(KILL_WRITING="metrics.jsonl", KILL_AFTER=3)

# (model, where the kill is) -> (the faults, the checkpoints it leaves: steps kept, temporary directories)
KILLS = {
    ("transformer", "before the first checkpoint"): (dict(KILL_WRITING="metrics.jsonl"), ({"best": [], "latest": []}, [])),
    ("transformer", "between checkpoints"): (AT_STEP_30, ({"best": [20], "latest": [20]}, [])),
    ("transformer", "best's arrays written, no more"): (
        dict(KILL_RENAMING="*/best/40.*/default"), ({"best": [20], "latest": [20]}, ["best/40"])),
    ("transformer", "best saved, latest written, not renamed"): (
        dict(KILL_RENAMING="checkpoints/latest/40"), ({"best": [40], "latest": [20]}, ["latest/40"])),
    ("mlp_bn", "between checkpoints"): (AT_STEP_30, ({"best": [20], "latest": [20]}, [])),
    ("gru", "between checkpoints"): (AT_STEP_30, ({"best": [20], "latest": [20]}, [])),
}


def checkpoints(run):
    """Steps of the complete checkpoints, and the temporary directories, under run/checkpoints."""
    complete = {which: sorted(int(p.name) for p in (run / "checkpoints" / which).glob("*") if p.name.isdigit())
                for which in ("best", "latest")}
    # orbax's temporary directory of step N is N.<suffix> (its suffix is orbax's own business)
    partial = sorted(f"{p.parent.name}/{p.name.split('.')[0]}" for p in (run / "checkpoints").glob("*/*.*")
                     if p.name.split(".")[0].isdigit())
    return complete, partial


@pytest.fixture(scope="module")
def runs(tmp_path_factory, faults):
    """For each model, a run never stopped (in this process); then the runs of KILLS, killed (processes, two at a
    time, which read the programs this process compiled back from the tests' compilation cache)."""
    d = tmp_path_factory.mktemp("interrupted")
    words = write_words(d / "words.txt")
    (d / "mlp_bn.py").write_text(MLP_BN)
    flags = {model: [a.format(d=d) if isinstance(a, str) else a for a in argv] for model, argv in MODELS.items()}
    for model in MODELS:
        train("-i", words, "-o", d / model, *RUN, *flags[model])
    killed = in_turn({case: lambda i=i, case=case: command(
        "train.py", "-i", words, "-o", d / f"killed{i}", *RUN, *flags[case[0]], env=faults(**KILLS[case][0]))
        for i, case in enumerate(KILLS)})
    for case, (process, _, err) in killed.items():
        assert process.returncode == -signal.SIGKILL, err
    return {model: d / model for model in MODELS}, {case: d / f"killed{i}" for i, case in enumerate(KILLS)}


@pytest.mark.parametrize("case", KILLS, ids=" / ".join)
def test_resumed_after_kill_9_equals_the_run_never_stopped(runs, case):
    wholes, killed = runs
    run, whole = killed[case], wholes[case[0]]
    assert checkpoints(run) == KILLS[case][1]
    if case[1] == "between checkpoints":  # the kill cut step 30's line short
        assert not (run / "metrics.jsonl").read_text().endswith("\n")
    train("-o", run, "--resume", "--no-progress")
    assert checkpoints(run) == checkpoints(whole) == ({"best": checkpoints(whole)[0]["best"], "latest": [60]}, [])
    for which in ("latest", "best"):
        ours, theirs = (inference.load(r, which=which).state for r in (run, whole))
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_array_equal(a, b)
    assert (run / "metrics.jsonl").read_bytes() == (whole / "metrics.jsonl").read_bytes()
    if case[0] == "mlp_bn":  # --config FILE: the run's config is the file's
        config = inference.load(run).config
        assert (config.type, config.optimizer, config.lr_decay_steps, config.n_embd2) == ("mlp_bn", "sgd", 30, 16)
