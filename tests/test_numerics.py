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
from helpers import fresh_state, small_config
from mmjax.workdir import WorkDir
from mmjax import cli, inference, losses, optimizers
from mmjax.input_pipeline import Dataset, read_words
from test_bad_input import tree_digest

TRAIN = cli.train_main
# the MLP of helpers.SMALL's sizes, the cheapest model to compile; dispatches of 10 steps (the resumes' too)
MLP = ["--type", "mlp", "--n-embd", 16, "--n-embd2", 16, "--no-progress", "--max-steps", 20, "--eval-every", 20,
       "--log-every", 10]
DIVERGES = "3e38"  # AdamW's first steps move every parameter by about the learning rate: float32 overflows
# The bigram's logits are its parameters: at 1e37 each target's NLL stays finite (about 1e37) and their sum
# over a batch overflows to infinity, before any parameter does
OVERFLOWS = "1e37"


def train_cli(*argv):
    cli.run(TRAIN, cli.train_parser(), [str(a) for a in argv])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, words_file_module):
    run = tmp_path_factory.mktemp("numerics") / "run"
    train_cli("-i", words_file_module, "-o", run, *MLP)
    return run


@pytest.fixture(scope="module")
def words_file_module(tmp_path_factory):
    from conftest import write_words
    return write_words(tmp_path_factory.mktemp("words") / "words.txt")


@pytest.fixture(scope="module")
def trained_bigram(tmp_path_factory, words_file_module):
    run = tmp_path_factory.mktemp("numerics") / "bigram"
    train_cli("-i", words_file_module, "-o", run, "--type", "bigram", "--no-progress", "--max-steps", 20,
              "--eval-every", 20, "--log-every", 10)
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
    """A small MLP's parameters and its gradients on 64 words."""
    dataset = Dataset.from_words(read_words(words_file_module), seed=0)
    state = fresh_state(small_config("mlp"), dataset.vocab)
    x_nt, y_nt = map(jnp.asarray, dataset.vocab.encode_words(dataset.train_words[:64]))
    grads = jax.jit(jax.grad(lambda p: losses.loss_fn(p, state, x_nt, y_nt)[0]))(state.params)
    return state.params, grads, float(optax.tree.norm(grads))


@functools.partial(jax.jit, static_argnums=0)
def update(tx, grads, opt_state, params):
    """tx.update, compiled once per optimiser (its hyper-parameters are in opt_state): (updates, new state)."""
    return tx.update(grads, opt_state, params)


def first_update(config, params, grads):
    """config's optimiser's first (updates, state after it)."""
    return update(optimizers.optimizer_of(config), grads, optimizers.make_optimizer(config).init(params), params)


@pytest.mark.parametrize("clip_over_norm", [0, 0.25, 2])
def test_clipping_scales_the_gradients_down_to_the_global_norm(gradients, clip_over_norm):
    params, grads, norm = gradients
    sgd = small_config(optimizer="sgd", learning_rate=1.0, weight_decay=0.0, grad_clip=clip_over_norm * norm)
    updates, _ = first_update(sgd, params, grads)  # SGD at learning rate 1: the update is minus the gradient
    scale = min(1.0, clip_over_norm) if clip_over_norm else 1.0
    assert float(optax.tree.norm(updates)) == pytest.approx(scale * norm, rel=1e-5)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads), strict=True):
        np.testing.assert_allclose(u, -scale * g, rtol=1e-5, atol=1e-12)


def test_clipping_comes_before_adamw_and_keeps_the_state_structure(gradients):
    params, grads, norm = gradients
    clipped, clipped_state = first_update(small_config("mlp", grad_clip=norm / 4), params, grads)
    adamw = optax.adamw(5e-4, b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.01)
    expected = jax.jit(lambda g, p: adamw.update(jax.tree.map(lambda x: x / 4, g), adamw.init(p), p)[0])(grads, params)
    for a, b in zip(jax.tree.leaves(clipped), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)
    # Adam's first step hardly depends on the gradient's scale, but it does on eps: not the unclipped update
    unclipped, unclipped_state = first_update(small_config("mlp"), params, grads)
    assert not all(np.allclose(a, b, rtol=1e-7, atol=0) for a, b in zip(
        jax.tree.leaves(clipped), jax.tree.leaves(unclipped)))
    # Adam's moments, which every later step divides by, are those of the clipped gradient: a quarter of
    # the unclipped ones' first moment and a sixteenth of their second
    for state, scale in ((clipped_state, 0.25), (unclipped_state, 1.0)):
        [mu], [nu] = optax.tree.get_all_with_path(state, "mu"), optax.tree.get_all_with_path(state, "nu")
        for m, v, g in zip(jax.tree.leaves(mu[1]), jax.tree.leaves(nu[1]), jax.tree.leaves(grads), strict=True):
            np.testing.assert_allclose(m, 0.1 * scale * g, rtol=1e-5, atol=1e-12)
            np.testing.assert_allclose(v, 0.01 * (scale * g) ** 2, rtol=1e-5, atol=1e-20)
    states = [jax.eval_shape(optimizers.make_optimizer(small_config(grad_clip=c)).init, params) for c in (0.0, 1.0)]
    assert jax.tree.structure(states[0]) == jax.tree.structure(states[1])  # so --resume can turn clipping on


def test_resume_can_turn_clipping_on(run, tmp_path):
    """--grad-clip on a resumed run: its state takes the bound, the compiled steps are the run's (nothing
    compiles again), and the steps clip (the run differs from the one resumed without it)."""
    config = cli.resolve_config(cli.train_parser().parse_args(["--grad-clip", "0.5"]), WorkDir(tmp_path / "new"))
    assert config.grad_clip == 0.5
    plain = shutil.copytree(run, tmp_path / "plain")
    compiled = []  # lowerings to MLIR and backend compilations, as test_one_loop.py counts them
    listener = lambda event, duration, **kwargs: compiled.append(event) if event in (
        "/jax/core/compile/jaxpr_to_mlir_module_duration", "/jax/core/compile/backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        train_cli("-o", run, "--resume", "--max-steps", 30, "--no-progress", "--grad-clip", 1e-3)
        train_cli("-o", plain, "--resume", "--max-steps", 30, "--no-progress")
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert compiled == []
    latest = {path.name: inference.load(path, which="latest").state for path in (run, plain)}
    assert int(latest["run"].step) == int(latest["plain"].step) == 30
    assert float(optimizers.hyperparams(latest["run"].opt_state)["grad_clip"]) == pytest.approx(1e-3)
    assert float(optimizers.hyperparams(latest["plain"].opt_state)["grad_clip"]) == 0.0
    apart = max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(latest["run"].params),
                                                    jax.tree.leaves(latest["plain"].params)))
    assert apart > 1e-4, apart
    assert [m["step"] for m in WorkDir(run).metrics() if "test_loss" in m] == [20, 30]
