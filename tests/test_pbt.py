"""Population-based training (mmjax/pbt.py, train.py --pbt): an exploit copies exactly, the population
climbs to a better learning rate than it started with and beats the grid, the same command gives the same
run, a kill -9 and --resume give the run never stopped, bad flags are refused."""

import json
import math
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

import mmjax
from helpers import small_config, train
from mmjax import optimizers, pbt, population
from mmjax.workdir import WorkDir
from test_cli import scalars

# an MLP that learns these words (runs of consecutive letters) in a few hundred steps at 1e-2, hardly at 1e-4
TOY = dict(max_steps=200, eval_every=20, log_every=20, val_size=40, population=4, learning_rate=1e-4,
           diagnostics=False, sample_every=0)
PBT = dict(pbt=True, pbt_every=1, pbt_perturb="0.5,2", pbt_fields="learning_rate")
FLAGS = ["--type", "mlp", "--n-embd", 16, "--n-embd2", 16, "--max-steps", 200, "--eval-every", 20, "--log-every", 20,
         "--val-size", 40, "--population", 4, "--learning-rate", 1e-4, "--sample-every", 0, "--no-progress",
         "--pbt", "--pbt-every", 1, "--pbt-perturb", "0.5,2", "--pbt-fields", "learning_rate"]

# train.py killed (-9) as its dispatch from step N starts
KILLER = """
import os, signal, sys
from mmjax import cli, steps
at = int(sys.argv.pop(1))
train_steps = steps.population_train_steps
def killing(states, *args, **kwargs):
    if int(states.step[0]) == at:
        os.kill(os.getpid(), signal.SIGKILL)
    return train_steps(states, *args, **kwargs)
steps.population_train_steps = killing
cli.run(cli.train_main, cli.train_parser())
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The toy population with PBT (twice: in this process and as a command killed at step 120, then
    resumed), without (the grid), and the same MLP alone at 1e-2 and 1e-4."""
    d = tmp_path_factory.mktemp("pbt")
    words = d / "words.txt"
    rng = np.random.default_rng(0)
    runs_of_letters = ["abcdefghij"[i:i + n] for i, n in zip(rng.integers(0, 5, 400), rng.integers(2, 6, 400))]
    words.write_text("\n".join(runs_of_letters) + "\n")
    (d / "killer.py").write_text(KILLER)
    toy = lambda **changes: small_config("mlp", **{**TOY, **changes})
    mmjax.train_and_evaluate(toy(**PBT), d / "pbt", words, progress=False)
    # started once this process has compiled the run's programs: the command reads them from the session's cache
    killed = subprocess.Popen([sys.executable, str(d / "killer.py"), "120", "-i", str(words), "-o", str(d / "killed"),
                               *map(str, FLAGS)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    mmjax.train_and_evaluate(toy(**PBT), d / "again", words, progress=False)
    mmjax.train_and_evaluate(toy(), d / "grid", words, progress=False)
    for rate in (1e-2, 1e-4):
        mmjax.train_and_evaluate(toy(population=0, learning_rate=rate), d / f"alone_{rate:g}", words, progress=False)
    assert killed.wait(timeout=600) == -signal.SIGKILL, killed.stderr.read()
    return d


def evaluations(path, **match):
    return [m for m in WorkDir(path).metrics() if "val_loss" in m and all(m.get(k) == v for k, v in match.items())]


def test_an_exploit_copies_the_parent_and_perturbs_only_what_it_explores(words_file):
    config = small_config("mlp", population=4, ema_decay=0.9, val_size=30, **PBT)
    dataset = mmjax.input_pipeline.Dataset.from_words(words_file.read_text().split(), 0, 30)
    states = population.create_states(config, dataset.vocab, population.member_configs(config))
    x_nt, y_nt = dataset.vocab.encode_words(dataset.train_words)
    states, _ = mmjax.steps.population_train_steps(states, x_nt, y_nt, num_steps=3, batch_size=8)
    states = jax.device_get(states)
    exploits = pbt.plan(config, 40, np.array([2.0, 2.5, 1.5, 3.0]))
    assert [(member, parent) for member, parent, _ in exploits] == [(3, 2)]  # bottom 1 of 4 copies the top 1
    copied, rates_k, changes = pbt.exploit(states, np.zeros(4, np.float32), exploits)
    member, parent, factor = exploits[0]
    leaf = lambda tree, i: [np.asarray(a[i]) for a in jax.tree.leaves(tree)]
    for ours, theirs in zip(leaf((copied.params, copied.batch_stats), member), leaf((states.params, states.batch_stats), parent)):
        np.testing.assert_array_equal(ours, theirs)
    # the optimiser state: moments, count, the parameters' average, every hyper-parameter but the explored one
    moved = optimizers.hyperparams(copied.opt_state)
    for name, values in optimizers.hyperparams(states.opt_state).items():
        want = values[parent] * factor["learning_rate"] if name == "learning_rate" else values[parent]
        assert float(moved[name][member]) == pytest.approx(float(want), rel=1e-6), name
    without = lambda s: (s.opt_state[0]._replace(hyperparams={}), *s.opt_state[1:])
    for ours, theirs in zip(leaf(without(copied), member), leaf(without(states), parent)):
        np.testing.assert_array_equal(ours, theirs)
    assert isinstance(copied.opt_state[2], optimizers.AverageState)  # the average is part of what is copied
    np.testing.assert_array_equal(copied.rng[member], states.rng[member])  # its own batches
    for i in (0, 1, 2):  # the others untouched
        for ours, theirs in zip(leaf(copied, i), leaf(states, i)):
            np.testing.assert_array_equal(ours, theirs)
    assert changes == {3: ({"learning_rate": float(states.opt_state[0].hyperparams["learning_rate"][3])},
                           {"learning_rate": float(moved["learning_rate"][3])})}
    assert rates_k.tolist() == [0.0] * 4


def test_the_exploits_are_logged_as_they_changed_the_members(runs):
    metrics = WorkDir(runs / "pbt").metrics()
    exploits = [m["pbt"] for m in metrics if "pbt" in m]
    assert {e["step"] for e in exploits} == set(range(20, 200, 20))  # every evaluation but the last
    assert all(len([e for e in exploits if e["step"] == s]) == 1 for s in range(20, 200, 20))  # 1 of 4
    for e in exploits:  # the member's next evaluation line has the rate the exploit gave it
        after = [m for m in evaluations(runs / "pbt", member=e["member"]) if m["step"] > e["step"]]
        assert after[0]["learning_rate"] == pytest.approx(e["after"]["learning_rate"], rel=1e-6)
        [parent] = [m for m in evaluations(runs / "pbt", member=e["parent"]) if m["step"] == e["step"]]
        assert e["after"]["learning_rate"] / parent["learning_rate"] == pytest.approx(0.5) or \
            e["after"]["learning_rate"] / parent["learning_rate"] == pytest.approx(2)
        [before] = [m for m in evaluations(runs / "pbt", member=e["member"]) if m["step"] == e["step"]]
        assert e["before"]["learning_rate"] == pytest.approx(before["learning_rate"], rel=1e-6)
    assert {(m["step"], m["member"]) for m in evaluations(runs / "pbt")} == {
        (s, i) for s in range(20, 220, 20) for i in range(4)}
    # TensorBoard: each member's learning rate at each evaluation
    logged = sorted((tag, step, value) for tag, step, value in scalars(runs / "pbt") if "hparams/learning_rate" in tag)
    assert logged == sorted((f"member_{m['member']}/hparams/learning_rate", m["step"], float(np.float32(m["learning_rate"])))
                            for m in evaluations(runs / "pbt"))


def test_the_population_learns_a_better_rate_and_beats_the_grid(runs):
    """1e-2 beats 1e-4 on the toy task; PBT starts every member at 1e-4 and ends nearer 1e-2, and its best
    member beats the best of the grid's members (all at 1e-4 throughout)."""
    final = lambda path: min(m["val_loss"] for m in evaluations(path) if m["step"] == 200)
    assert final(runs / "alone_0.01") < final(runs / "alone_0.0001") - 0.05
    rates = [m["learning_rate"] for m in evaluations(runs / "pbt") if m["step"] == 200]
    assert np.mean([abs(math.log(r / 1e-2)) for r in rates]) < abs(math.log(1e-4 / 1e-2))
    assert final(runs / "pbt") < final(runs / "grid") - 0.02


def test_the_same_command_gives_the_same_run(runs):
    assert (runs / "pbt" / "metrics.jsonl").read_bytes() == (runs / "again" / "metrics.jsonl").read_bytes()


def test_killed_and_resumed_it_is_the_run_never_stopped(runs):
    killed = runs / "killed"
    train("-o", killed, "--resume", "--no-progress")
    assert (killed / "metrics.jsonl").read_bytes() == (runs / "pbt" / "metrics.jsonl").read_bytes()
    config, vocab = WorkDir(killed).load_config(), WorkDir(killed).load_dataset().vocab
    restore = lambda path: WorkDir(path).checkpoints.restore(population.abstract_checkpoint(config, vocab))
    for a, b in zip(jax.tree.leaves(restore(killed)), jax.tree.leaves(restore(runs / "pbt")), strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_end_table_shows_each_members_lineage(runs, capsys):
    config = WorkDir(runs / "pbt").load_config()
    text = population.summary(config, population.member_configs(config), WorkDir(runs / "pbt").metrics(), "val_loss")
    first = next(m["pbt"] for m in WorkDir(runs / "pbt").metrics() if "pbt" in m)
    assert f"member {first['member']}: step 20 <- {first['parent']} (learning_rate 0.0001 -> " in text


@pytest.mark.parametrize("argv, message", [
    (["--pbt", "--val-size", "20"], "--pbt trains a population: add --population K (at least 2) or --sweep"),
    (["--pbt", "--population", "4"], "--pbt ranks the members on the validation loss: add --val-size N"),
    (["--pbt", "--population", "4", "--val-size", "20", "--pbt-fields", "n_embd"], "--pbt-fields 'n_embd': explore"),
    (["--pbt", "--population", "4", "--val-size", "20", "--pbt-perturb", "0.8,x"], "--pbt-perturb '0.8,x': give"),
])
def test_bad_pbt_flags_are_one_line_errors(tmp_path, words_file, capsys, argv, message):
    with pytest.raises(SystemExit) as exit:
        mmjax.cli.train_command(["-i", str(words_file), "-o", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1 and err.startswith(f"error: {message}"), err
    assert not (tmp_path / "out").exists()
