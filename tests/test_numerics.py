"""Numerical faults: a NaN or infinite loss stops training with exit status 3 and saves nothing; clipping."""

import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import ROOT
from helpers import SMALL, fresh_state, small_config
from mmjax.workdir import WorkDir
from mmjax import cli, losses, optimizers
from mmjax.input_pipeline import Dataset, read_words
from test_bad_input import tree_digest

TRAIN = cli.train_main
DIVERGES = "3e38"  # AdamW's first steps move every parameter by about the learning rate: float32 overflows
# The bigram's logits are its parameters: at 1e37 each target's NLL stays finite (about 1e37) and their sum
# over a batch overflows to infinity, before any parameter does
OVERFLOWS = "1e37"


def train_cli(*argv):
    cli.run(TRAIN, cli.train_parser(), [str(a) for a in argv])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, words_file_module):
    run = tmp_path_factory.mktemp("numerics") / "run"
    train_cli("-i", words_file_module, "-o", run, *SMALL, "--max-steps", 20, "--eval-every", 20, "--log-every", 20)
    return run


@pytest.fixture(scope="module")
def words_file_module(tmp_path_factory):
    from conftest import write_words
    return write_words(tmp_path_factory.mktemp("words") / "words.txt")


@pytest.fixture(scope="module")
def trained_bigram(tmp_path_factory, words_file_module):
    run = tmp_path_factory.mktemp("numerics") / "bigram"
    train_cli("-i", words_file_module, "-o", run, "--type", "bigram", "--no-progress", "--max-steps", 20,
              "--eval-every", 20, "--log-every", 20)
    return run


@pytest.fixture
def run(trained, tmp_path):
    return shutil.copytree(trained, tmp_path / "run")


@pytest.fixture
def bigram_run(trained_bigram, tmp_path):
    return shutil.copytree(trained_bigram, tmp_path / "bigram")


def diverge(capsys, run, *argv, learning_rate=DIVERGES):
    """Resumes `run` with a learning rate that overflows: exit status 3 and stderr."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        train_cli("-o", run, "--resume", "-l", learning_rate, "--no-progress", *argv)
    assert exit.value.code == 3
    return capsys.readouterr().err


def test_a_non_finite_training_loss_stops_at_its_step_and_saves_nothing(run, capsys):
    checkpoints, metrics = tree_digest(run / "checkpoints"), (run / "metrics.jsonl").read_text()
    err = diverge(capsys, run, "--max-steps", 30, "--log-every", 10)
    # step 21 updates from finite parameters to overflowing ones; step 22's loss is the first NaN
    assert err == ("error: loss is nan at step 22, so training stopped (checkpoints before it are kept): "
                   "--resume with a lower --learning-rate or with --grad-clip 1\n")
    assert tree_digest(run / "checkpoints") == checkpoints and (run / "metrics.jsonl").read_text() == metrics


def test_a_non_finite_evaluation_is_never_saved(run, capsys):
    checkpoints = tree_digest(run / "checkpoints")
    err = diverge(capsys, run, "--max-steps", 21, "--log-every", 1, "--eval-every", 1)
    assert err.startswith("error: test_loss is nan at step 21, so training stopped") and err.count("\n") == 1
    assert tree_digest(run / "checkpoints") == checkpoints
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 21 and np.isfinite(last["loss"])  # step 21's loss, before its update, was finite


def test_an_infinite_training_loss_stops_at_its_step_and_saves_nothing(bigram_run, capsys):
    checkpoints, metrics = tree_digest(bigram_run / "checkpoints"), (bigram_run / "metrics.jsonl").read_text()
    err = diverge(capsys, bigram_run, "--max-steps", 30, "--log-every", 10, learning_rate=OVERFLOWS)
    # step 21's update makes the parameters about 1e37: step 22's summed NLL overflows, later steps' may be NaN
    assert err == ("error: loss is inf at step 22, so training stopped (checkpoints before it are kept): "
                   "--resume with a lower --learning-rate or with --grad-clip 1\n")
    assert tree_digest(bigram_run / "checkpoints") == checkpoints
    assert (bigram_run / "metrics.jsonl").read_text() == metrics


def test_an_infinite_evaluation_is_never_saved(bigram_run, capsys):
    checkpoints = tree_digest(bigram_run / "checkpoints")
    err = diverge(capsys, bigram_run, "--max-steps", 21, "--log-every", 1, "--eval-every", 1,
                  learning_rate=OVERFLOWS)
    assert err == ("error: test_loss is inf at step 21, so training stopped (checkpoints before it are kept): "
                   "--resume with a lower --learning-rate or with --grad-clip 1\n")
    assert tree_digest(bigram_run / "checkpoints") == checkpoints
    last = json.loads((bigram_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 21 and np.isfinite(last["loss"])


@pytest.fixture(scope="module")
def gradients(words_file_module):
    """A small Transformer's parameters and its gradients on 64 words."""
    dataset = Dataset.from_words(read_words(words_file_module), seed=0)
    state = fresh_state(small_config(), dataset.vocab)
    x_nt, y_nt = map(jnp.asarray, dataset.vocab.encode_words(dataset.train_words[:64]))
    grads = jax.jit(jax.grad(lambda p: losses.loss_fn(p, state, x_nt, y_nt)[0]))(state.params)
    return state.params, grads, float(optax.tree.norm(grads))


def first_update(config, params, grads):
    tx = optimizers.make_optimizer(config)
    return jax.jit(lambda g, p: tx.update(g, tx.init(p), p)[0])(grads, params)  # one program, not one per operation


@pytest.mark.parametrize("clip_over_norm", [0, 0.25, 2])
def test_clipping_scales_the_gradients_down_to_the_global_norm(gradients, clip_over_norm):
    params, grads, norm = gradients
    sgd = small_config(optimizer="sgd", learning_rate=1.0, weight_decay=0.0, grad_clip=clip_over_norm * norm)
    updates = first_update(sgd, params, grads)  # SGD at learning rate 1: the update is minus the gradient
    scale = min(1.0, clip_over_norm) if clip_over_norm else 1.0
    assert float(optax.tree.norm(updates)) == pytest.approx(scale * norm, rel=1e-5)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(u, -scale * g, rtol=1e-5, atol=1e-12)


def test_clipping_comes_before_adamw_and_keeps_the_state_structure(gradients, tmp_path):
    params, grads, norm = gradients
    clipped = first_update(small_config(grad_clip=norm / 4), params, grads)
    adamw = optax.adamw(5e-4, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.01)
    expected = jax.jit(lambda g, p: adamw.update(jax.tree.map(lambda x: x / 4, g), adamw.init(p), p)[0])(grads, params)
    for a, b in zip(jax.tree.leaves(clipped), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)
    # Adam's first step hardly depends on the gradient's scale, but it does on eps: not the unclipped update
    assert not all(np.allclose(a, b, rtol=1e-7, atol=0) for a, b in zip(
        jax.tree.leaves(clipped), jax.tree.leaves(first_update(small_config(), params, grads))))
    states = [jax.eval_shape(optimizers.make_optimizer(small_config(grad_clip=c)).init, params) for c in (0.0, 1.0)]
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])  # so --resume can turn clipping on
    config = cli.resolve_config(cli.train_parser().parse_args(["--grad-clip", "0.5"]), WorkDir(tmp_path / "new"))
    assert config.grad_clip == 0.5
