"""Lecture 4's manual backward pass (mmjax/backprop.py) against jax.grad."""

import functools
import json
import math
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import write_words
from helpers import fresh_state, names_batch, train
from mmjax import backprop, cli
from mmjax.config import base_config, get_config, validate
from mmjax.errors import UserError
from mmjax.input_pipeline import Vocab
from mmjax.models.mlp_bn import MLPBatchNorm
from mmjax.losses import loss_fn

V, T = 27, 12  # (at 32 names of block size 12 every gradient is well above float32's tolerance: not vacuous)


@functools.cache  # every test of the file takes the same batch and parameters: its programs compile once
def lecture_batch(seed=0):
    """A random batch of 32 names and the lecture's parameters, off their initial values."""
    x_bt, y_bt = names_batch(seed, batch_size=32, block_size=T)
    p = backprop.lecture_params(backprop.random_params(MLPBatchNorm(V, T), x_bt, seed))
    return p, backprop.rows(x_bt, y_bt, context=3)


def assert_manual_equals_autodiff(p, x_n3, y_n, mask_n, correction, atol):
    atomic, fused, auto = backprop.gradients(p, x_n3, y_n, mask_n, correction)
    # every intermediate tensor and every parameter
    assert set(atomic) == set(auto) == set(backprop.TABLE) and set(backprop.PARAMS) < set(fused) < set(atomic)
    for d in (atomic, fused):
        for name, manual in d.items():
            assert manual.dtype == p["C"].dtype, name
            np.testing.assert_allclose(manual, auto[name], rtol=0, atol=atol, err_msg=name)
            assert np.abs(auto[name]).max() > 10 * atol or name == "logit_maxes", name  # not vacuous


@pytest.mark.parametrize("correction", [0, 1])
def test_manual_gradients_equal_jax_grad_float32(correction):
    p, rows = lecture_batch()
    assert_manual_equals_autodiff(p, *rows, correction, atol=1e-6)


def test_manual_gradients_equal_jax_grad_float64():
    p, (x_n3, y_n, mask_n) = lecture_batch()  # float32 values, taken to float64 exactly
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), p)
        for correction in (0, 1):
            assert_manual_equals_autodiff(p64, x_n3, y_n, np.asarray(mask_n, np.float64), correction, atol=1e-12)
    assert jnp.zeros(1).dtype == jnp.float32  # x64 did not leak


def test_the_bessel_correction_changes_the_gradients():
    p, rows = lecture_batch()
    biased, bessel = (backprop.gradients(p, *rows, correction)[2]["W1"] for correction in (0, 1))
    assert np.abs(biased - bessel).max() > 1e-5  # about 1/n of the gradient; float32 noise is 1e-9


def test_manual_value_and_grad_is_the_models_own():
    """Correction 0 is the flax model's forward: same loss, gradients and running statistics as
    jax.value_and_grad of train.loss_fn, padding positions and all."""
    state = fresh_state(get_config("mlp_bn"), Vocab(tuple("abcdefghijklmnopqrstuvwxyz"), T - 1))
    x_bt, y_bt = names_batch(1, batch_size=32, block_size=T)
    state = state.replace(params=backprop.random_params(MLPBatchNorm(V, T), x_bt, 1))
    (loss, stats), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True), static_argnums=4)(
        state.params, state, x_bt, y_bt, True)
    (manual_loss, manual_stats), manual_grads = jax.jit(backprop.value_and_grad)(state.params, state, x_bt, y_bt)
    assert abs(float(loss - manual_loss)) < 1e-6 and float(loss) > 1
    assert jax.tree.structure(manual_grads) == jax.tree.structure(grads)
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    jax.tree.map(close, manual_grads, grads)
    jax.tree.map(close, manual_stats, stats)


def names_like_words(path, n=300, seed=0):
    """n random words over a..z of 2 to T - 1 letters, every letter and the length T - 1 among them: names.txt's
    vocabulary, and lecture_batch's block size, so that the table's batch of 32 has its shapes (and programs)."""
    rng = random.Random(seed)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, T - 1))) for _ in range(n)]
    assert len(set("".join(words))) == V - 1 and max(map(len, words)) == T - 1
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


def test_the_table_prints_every_tensor(tmp_path, capsys):
    cli.run(backprop.main, backprop.parser(), ["-i", str(names_like_words(tmp_path / "words.txt")), "-b", "32"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("32 names,") and len(lines) == 1 + 25 + 2
    assert [line.split()[0] for line in lines[1:]] == [*backprop.TABLE, "logits", "hprebn"]
    assert all("approximate: True " in line and float(line.split("maxdiff: ")[1]) < 1e-6 for line in lines[1:])


def test_manual_grad_is_for_mlp_bn_only():
    config = base_config()
    config.manual_grad = True
    with pytest.raises(UserError, match="mlp_bn"):
        validate(config)


def train_losses(tmp_path, name, *flags):
    train("-o", tmp_path / name, "--type", "mlp_bn", "--no-progress", *flags)
    return [m for m in map(json.loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines()) if "test_loss" in m]


def assert_manual_training_matches(tmp_path, learned_below, *flags):
    """What docs/lectures.md says: the same test loss to four decimals at every evaluation."""
    auto, manual = train_losses(tmp_path, "auto", *flags), train_losses(tmp_path, "manual", *flags, "--manual-grad")
    assert [m["step"] for m in manual] == [m["step"] for m in auto]
    assert auto[-1]["train_loss"] < learned_below
    for a, m in zip(auto, manual):
        assert abs(a["test_loss"] - m["test_loss"]) < 5e-5, (a, m)


def test_manual_grad_training_reaches_the_autodiff_loss(tmp_path):
    # words of 8 letters: uniform guessing is ln 9; ten evaluations over 1,000 steps
    assert_manual_training_matches(tmp_path, math.log(9) - 0.3, "-i", str(write_words(tmp_path / "words.txt")),
                                   "--max-steps", "1000", "--eval-every", "100", "--log-every", "100",
                                   "--sample-every", "0")  # no samples read: no sampler compiled


@pytest.mark.slow
def test_manual_grad_training_reaches_the_autodiff_loss_on_names(tmp_path, names_file):
    assert_manual_training_matches(tmp_path, 2.15, "-i", str(names_file), "--max-steps", "20000",
                                   "--eval-every", "5000", "--log-every", "1000")
