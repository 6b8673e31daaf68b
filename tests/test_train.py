import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from helpers import SMALL, compiled_count, fresh_state, small_config
from mmjax import cli, inference, steps
from mmjax.input_pipeline import Dataset, read_words
from mmjax.losses import cross_entropy, loss_fn
from mmjax.workdir import WorkDir



def run_train(*argv):
    cli.train_main(cli.train_parser().parse_args([str(a) for a in argv]))


def test_cross_entropy_matches_hand_computation():
    logits_btv = jnp.array([[[0.0, 1.0, 2.0], [3.0, 0.0, 0.0], [5.0, 5.0, 5.0]]])
    y_bt = jnp.array([[2, 0, -1]])
    nll_sum, count = cross_entropy(logits_btv, y_bt)
    expected = -(2 - math.log(1 + math.e + math.e ** 2)) - (3 - math.log(math.e ** 3 + 2))
    assert int(count) == 2 and float(nll_sum) == pytest.approx(expected, rel=1e-6)


def test_loss_falls_on_a_small_file(words_file):
    dataset = Dataset.from_words(read_words(words_file), seed=0)
    config = small_config()
    state = fresh_state(config, dataset.vocab)
    x_nt, y_nt = map(jnp.asarray, dataset.vocab.encode_words(dataset.train_words))
    before = steps.evaluate(state, x_nt, y_nt, 500)
    state, losses = steps.train_steps(state, x_nt, y_nt, num_steps=300, batch_size=32)
    after = steps.evaluate(state, x_nt, y_nt, 500)
    # the losses' buffer: each of the 300 steps' (traced count), then nothing
    assert losses.shape == (steps.MAX_DISPATCH,) and int(state.step) == 300
    assert (losses[:300] > 1).all() and not losses[300:].any()
    # words of 2..7 uniform letters from 8: the best possible loss is about 1.9
    assert before > 2.2 and after < before - 0.2


def test_a_dispatch_longer_than_one_call_is_the_same_steps_in_short_ones(words_file):
    """run_steps: 1,005 steps (--log-every 1005) are MAX_DISPATCH then 5 in two calls of one program; the same
    state and every step's loss as 201 dispatches of 5, bit for bit."""
    dataset = Dataset.from_words(read_words(words_file), seed=0)
    config = small_config("bigram", learning_rate=0.05)  # the cheapest step: 1,005 of them in about a second
    x_nt, y_nt = map(jnp.asarray, dataset.vocab.encode_words(dataset.train_words))
    dispatch = lambda state, n: steps.train_steps(state, x_nt, y_nt, num_steps=n, batch_size=32)
    before = compiled_count(steps.train_steps)
    long, long_losses = steps.run_steps(dispatch, fresh_state(config, dataset.vocab), 1005)
    state, short_losses = fresh_state(config, dataset.vocab), []
    for _ in range(201):
        state, losses = steps.run_steps(dispatch, state, 5)
        short_losses.append(losses)
    assert compiled_count(steps.train_steps) == before + 1 and int(long.step) == 1005 == int(state.step)
    np.testing.assert_array_equal(long_losses, np.concatenate(short_losses))
    # it learnt: from the zero table's uniform loss over the 9 tokens (2.197) to about 2.11
    assert long_losses.shape == (1005,) and long_losses[0] == pytest.approx(math.log(9), abs=1e-6)
    assert long_losses[-100:].mean() < math.log(9) - 0.07
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(long), jax.device_get(state))


def test_checkpoint_round_trip(tmp_path, words_file):
    dataset = Dataset.from_words(read_words(words_file), seed=0)
    config = small_config()
    state = fresh_state(config, dataset.vocab)
    x_nt, y_nt = map(jnp.asarray, dataset.vocab.encode_words(dataset.train_words))
    state, _ = steps.train_steps(state, x_nt, y_nt, num_steps=5, batch_size=32)  # test_loss_falls's program
    workdir = WorkDir(tmp_path / "run")
    workdir.create(config, dataset)
    workdir.checkpoints.save(5, latest=state, best=state, score=1.0)
    fresh = fresh_state(config, dataset.vocab)
    restored = WorkDir(tmp_path / "run").checkpoints.restore(fresh)
    assert int(restored.step) == 5
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(a, b)
    assert WorkDir(tmp_path / "run").load_dataset() == dataset


def test_resumed_run_equals_uninterrupted_run(tmp_path, words_file):
    common = ["-i", words_file, *SMALL, "--eval-every", "100", "--log-every", "50"]
    run_train(*common, "-o", tmp_path / "whole", "--max-steps", 300)
    run_train(*common, "-o", tmp_path / "split", "--max-steps", 200)
    run_train("-o", tmp_path / "split", "--resume", "--max-steps", 300, "--no-progress")
    config = WorkDir(tmp_path / "whole").load_config()
    dataset = WorkDir(tmp_path / "whole").load_dataset()
    template = fresh_state(config, dataset.vocab)
    whole = WorkDir(tmp_path / "whole").checkpoints.restore(template)
    split = WorkDir(tmp_path / "split").checkpoints.restore(template)
    assert int(whole.step) == int(split.step) == 300
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(split), strict=True):
        np.testing.assert_array_equal(a, b)
    metrics = [(tmp_path / d / "metrics.jsonl").read_text() for d in ("whole", "split")]
    assert metrics[0] == metrics[1]
    logged = [json.loads(line)["step"] for line in metrics[0].splitlines()]
    assert logged == [50, 100, 100, 150, 200, 200, 250, 300, 300]


def test_a_run_compiles_its_train_and_eval_steps_once(tmp_path, words_file):
    before = compiled_count(steps.train_steps), compiled_count(steps.eval_step)
    # n_embd 24: a shape no other test compiles; 6 dispatches of 50 steps and a last of 20 (one program: the
    # count is traced), and 4 evaluations of two sets
    run_train("-i", words_file, "-o", tmp_path / "run", *SMALL, "--n-embd", 24, "--max-steps", 320,
              "--log-every", 50, "--eval-every", 100)
    assert (compiled_count(steps.train_steps), compiled_count(steps.eval_step)) == (before[0] + 1, before[1] + 1)


def test_mixed_precision_keeps_float32_parameters_and_a_close_loss(words_file):
    dataset = Dataset.from_words(read_words(words_file), seed=0)
    x_nt, y_nt = map(jnp.asarray, dataset.vocab.encode_words(dataset.train_words[:64]))
    config = small_config()
    state = fresh_state(config, dataset.vocab)
    loss = jax.jit(loss_fn, static_argnames="compute_dtype")  # one program, not one per operation
    losses = {dtype: float(loss(state.params, state, x_nt, y_nt, compute_dtype=dtype)[0])
              for dtype in ("float32", "bfloat16")}
    assert losses["bfloat16"] != losses["float32"] and abs(losses["bfloat16"] - losses["float32"]) < 0.02
    state, _ = steps.train_steps(state, x_nt, y_nt, num_steps=3, batch_size=8, compute_dtype="bfloat16")
    assert {str(leaf.dtype) for leaf in jax.tree.leaves((state.params, state.opt_state))} == {"float32", "int32"}


def test_compute_dtype_through_the_command(words_file, tmp_path):
    """train.py --compute-dtype bfloat16: the run records it, its steps compute in bfloat16 (its losses are not
    the float32 run's, but near them) and it keeps float32 parameters."""
    mlp = ["-i", words_file, "--type", "mlp", "--n-embd", 16, "--n-embd2", 16, "--max-steps", 10, "--eval-every", 10,
           "--log-every", 10, "--sample-every", 0, "--no-progress"]
    for dtype in ("float32", "bfloat16"):
        cli.train_command([str(a) for a in [*mlp, "-o", tmp_path / dtype, "--compute-dtype", dtype]])
    runs = {dtype: WorkDir(tmp_path / dtype) for dtype in ("float32", "bfloat16")}
    assert runs["bfloat16"].load_config().compute_dtype == "bfloat16"
    losses = {dtype: [m["loss"] for m in run.metrics() if "loss" in m] for dtype, run in runs.items()}
    assert len(losses["float32"]) == len(losses["bfloat16"]) == 1
    assert losses["bfloat16"] != losses["float32"] and abs(losses["bfloat16"][0] - losses["float32"][0]) < 0.05
    params = inference.load(tmp_path / "bfloat16", which="latest").state.params
    assert {str(leaf.dtype) for leaf in jax.tree.leaves(params)} == {"float32"}
