"""The lecture models: counted bigram, MLP with BatchNorm, WaveNet."""

import functools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import write_words
from helpers import fresh_state, names_batch
from mmjax import cli
from mmjax.config import get_config
from mmjax.input_pipeline import Vocab
from mmjax.models import create_model
from mmjax.losses import loss_fn
from mmjax.steps import evaluate

V, T = 27, 16  # names.txt's vocabulary and block size, as test_models.py's states at the configs' sizes
VOCAB = Vocab(tuple("abcdefghijklmnopqrstuvwxyz"), T - 1)
LECTURE_MODELS = ("bigram_counts", "mlp_bn", "wavenet")
BATCHNORM_MODELS = ("mlp_bn", "wavenet")
# One program per model and shape for every test of the file, not one per operation or per test.
LOSS = jax.jit(loss_fn, static_argnames="train")


def lecture_config(name):
    return get_config(name)


def batch(seed, batch_size=16):
    return names_batch(seed, batch_size=batch_size, block_size=T)


@functools.cache
def initial_state(name):
    """A fresh train state of the config's model, initialised from seed 0."""
    return fresh_state(lecture_config(name), VOCAB, seed=0)


@functools.cache
def forward(name):
    """The model's forward pass (running statistics), jitted."""
    return jax.jit(create_model(lecture_config(name), V, T).apply)


@functools.cache
def fitted_model(name):
    """(model, variables) away from their initial values: counts fitted, or a few BatchNorm updates
    so that the running statistics are neither 0 nor 1."""
    model, state = create_model(lecture_config(name), V, T), initial_state(name)
    if hasattr(model, "fit"):
        return model, {"params": jax.jit(model.fit)(*batch(0))}
    for seed in range(3):  # the training pass: the statistics of the batch's real positions
        state = state.replace(batch_stats=LOSS(state.params, state, *batch(seed), train=True)[1])
    return model, {"params": state.params, "batch_stats": state.batch_stats}


@pytest.mark.parametrize("name, context", [("bigram_counts", 1), ("mlp_bn", 3), ("wavenet", 8)])
def test_position_t_sees_exactly_the_last_context_tokens(name, context):
    _, variables = fitted_model(name)
    apply = forward(name)
    idx_bt = np.random.default_rng(2).integers(1, V - 1, (16, T), dtype=np.int32)  # batch()'s shape: one program
    logits_btv = apply(variables, idx_bt)
    t = T - 1
    oldest_seen, too_old = idx_bt.copy(), idx_bt.copy()
    oldest_seen[:, t - context + 1] += 1
    too_old[:, :t - context + 1] += 1
    assert not np.allclose(apply(variables, oldest_seen)[:, t], logits_btv[:, t], atol=1e-4)
    np.testing.assert_array_equal(apply(variables, too_old)[:, t], logits_btv[:, t])




@pytest.mark.parametrize("name", LECTURE_MODELS)
def test_initial_loss_is_near_uniform(name):
    state = initial_state(name)
    x_bt, y_bt = batch(3, batch_size=64)
    for train in (False, True):  # running statistics, batch statistics
        assert abs(float(LOSS(state.params, state, x_bt, y_bt, train=train)[0]) - math.log(V)) < 0.05


def test_parameter_counts_by_hand():
    def count(name):
        shapes = jax.eval_shape(create_model(lecture_config(name), V, 16).init, jax.random.PRNGKey(0),
                                jnp.zeros((1, 16), jnp.int32))
        return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes["params"]))

    assert count("bigram_counts") == V * V == 729
    # embeddings, Linear over 3 x 10 without bias, BatchNorm scale and bias, Linear to V with bias
    assert count("mlp_bn") == V * 10 + 3 * 10 * 200 + 2 * 200 + 200 * V + V == 12_097
    # embeddings; levels fusing 2 x 24, 2 x 128, 2 x 128 into 128, each with BatchNorm; Linear to V
    assert count("wavenet") == V * 24 + (2 * 24 + 2 * 128 + 2 * 128) * 128 + 3 * 2 * 128 + 128 * V + V == 76_579


@pytest.mark.parametrize("name", BATCHNORM_MODELS)
def test_an_example_alone_gives_the_logits_it_has_in_a_batch(name):
    _, variables = fitted_model(name)
    x_bt = batch(6)[0]
    logits_btv = forward(name)(variables, x_bt)
    for b in (0, 7):
        np.testing.assert_allclose(forward(name)(variables, x_bt[b:b + 1])[0], logits_btv[b], atol=1e-5)


def batch_stats_after_a_step(state, x_bt, y_bt):
    return LOSS(state.params, state, x_bt, y_bt, train=True)[1]


@pytest.mark.parametrize("name", BATCHNORM_MODELS)
def test_a_training_step_updates_batch_stats_from_real_positions_only(name):
    state = initial_state(name)
    x_bt, y_bt = batch(7)
    stats = batch_stats_after_a_step(state, x_bt, y_bt)
    assert not jax.tree.all(jax.tree.map(np.allclose, stats, state.batch_stats))
    # five more padding positions after every word: the same statistics
    more_padding = batch_stats_after_a_step(state, np.pad(x_bt, ((0, 0), (0, 5))),
                                            np.pad(y_bt, ((0, 0), (0, 5)), constant_values=-1))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), more_padding, stats)
    # momentum 0.9 towards the mean and (biased) variance of each layer's outputs at the positions
    # of the word's characters and its start (the last T outputs: earlier ones read only left padding)
    capture = jax.jit(functools.partial(state.apply_fn, train=True, mutable=["batch_stats", "intermediates"],
                                        capture_intermediates=lambda module, _: module.name == "linear"))
    _, captured = capture({"params": state.params, "batch_stats": state.batch_stats}, x_bt)
    real_bt = np.asarray(y_bt != -1)
    for layer, outputs in captured["intermediates"].items():
        h_nc = np.asarray(outputs["linear"]["__call__"][0])[:, -T:][real_bt]
        np.testing.assert_allclose(stats[layer]["bn"]["mean"], 0.1 * h_nc.mean(0), atol=1e-5)
        np.testing.assert_allclose(stats[layer]["bn"]["var"], 0.9 + 0.1 * h_nc.var(0), rtol=1e-5)


def test_bigram_counts_test_loss_is_the_smoothed_estimate():
    words = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "eva", "liam", "noah"]
    train_words, test_words, alpha = words[:7], words[7:], 0.5
    vocab = Vocab.from_words(words)
    config = lecture_config("bigram_counts")
    config.alpha = alpha
    state = fresh_state(config, vocab)
    model = create_model(config, vocab.size, vocab.block_size)
    state = state.replace(params=model.fit(*map(jnp.asarray, vocab.encode_words(train_words))))

    stoi = {c: i + 1 for i, c in enumerate(vocab.chars)}  # '.' stands for token 0, as in the lecture
    bigrams = lambda ws: [(stoi.get(a, 0), stoi.get(b, 0)) for w in ws for a, b in zip("." + w, w + ".")]
    counts = np.zeros((vocab.size, vocab.size))
    np.add.at(counts, tuple(np.array(bigrams(train_words)).T), 1)
    probs = (counts + alpha) / (counts + alpha).sum(1, keepdims=True)
    expected = -np.mean([np.log(probs[a, b]) for a, b in bigrams(test_words)])
    loss = evaluate(state, *vocab.encode_words(test_words), batch_size=2)
    assert loss == pytest.approx(expected, rel=1e-5)


def command(main, argv, capsys):
    """(exit status, stdout, stderr) of the command's own entry (cli.train_command, cli.sample_command) run in
    this process on `argv`, as train.py and sample.py run it (nothing here needs a process of its own)."""
    capsys.readouterr()
    try:
        main([str(a) for a in argv])
        status = 0
    except SystemExit as e:
        status = e.code
    return (status, *capsys.readouterr())


def test_bigram_counts_trains_and_samples_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "out"
    status, _, err = command(cli.train_command, ["-i", write_words(tmp_path / "words.txt"), "-o", out, "--type",
                                                 "bigram_counts", "--no-progress"], capsys)
    assert status == 0, err
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 1] and metrics[1]["test_loss"] < math.log(9)
    status, sampled, err = command(cli.sample_command, ["-o", out, "-n", "20"], capsys)
    assert status == 0, err
    assert "samples that are new:" in sampled
