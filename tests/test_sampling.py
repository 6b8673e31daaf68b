import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from helpers import compiled_count
from mmjax.config import base_config
from mmjax.errors import UserError
from mmjax.input_pipeline import STOP, Dataset, Vocab
from mmjax.models import create_model
from mmjax.sampling import (SampleOptions, filter_logits, gumbel_noise, report, sample, sample_chunk,
                            sample_words, seed_word)

VOCAB = Vocab(tuple("abcdefgh"), 7)


def make(model_type, seed=0, **sizes):
    config = base_config()
    config.update(type=model_type, **sizes)
    model = create_model(config, VOCAB.size, VOCAB.block_size)
    return model, jax.jit(model.init)(jax.random.PRNGKey(seed), jnp.zeros((1, VOCAB.block_size), jnp.int32))


@pytest.fixture(scope="module")
def transformer():
    return make("transformer", n_layer=1, n_head=2, n_embd=16)


def greedy_by_full_forward(model, variables, prefix=()):
    """Argmax decoding by re-running the whole model each step: the reference the sampler must match."""
    idx_t, forward = jnp.zeros((1, VOCAB.block_size), jnp.int32), jax.jit(model.apply)
    for t in range(VOCAB.block_size - 1):
        token = prefix[t] if t < len(prefix) else jnp.argmax(forward(variables, idx_t)[0, t])
        idx_t = idx_t.at[0, t + 1].set(token)
    return np.asarray(idx_t[0, 1:])


def test_same_seed_same_samples_whatever_the_batching(transformer):
    model, variables = transformer
    tokens, lengths = sample(model, variables, seed=1, num_samples=24, batch_size=24)
    for batch_size in (1, 5, 7):
        chunked = sample(model, variables, seed=1, num_samples=24, batch_size=batch_size)
        np.testing.assert_array_equal(chunked[0], tokens)
        np.testing.assert_array_equal(chunked[1], lengths)
    np.testing.assert_array_equal(sample(model, variables, seed=1, num_samples=10)[0], tokens[:10])
    assert not np.array_equal(sample(model, variables, seed=2, num_samples=24)[0], tokens)


@pytest.mark.parametrize("seed", [0, 3407, 2**31 + 5, 2**32 + 7, -1])
def test_the_compiled_sampler_makes_the_key_that_prngkey_makes_of_the_seed(seed):
    """sample_chunk makes its key from seed_word(seed) inside the program: the key jax.random.PRNGKey(seed)
    makes on the host, for seeds past 32 bits and negative ones too (as the samples were before)."""
    np.testing.assert_array_equal(jax.jit(jax.random.PRNGKey)(seed_word(seed)), jax.random.PRNGKey(seed))


def test_refilled_rows_give_the_same_names_whatever_the_batch(transformer):
    """Batch 1000 refills each row with later samples; batch 1 runs them one after another."""
    model, variables = transformer
    words = sample_words(model, variables, VOCAB, seed=8, num_samples=1200, batch_size=1000)
    for batch_size in (1, 7):
        assert sample_words(model, variables, VOCAB, seed=8, num_samples=1200, batch_size=batch_size) == words
    assert len(set(words)) > 500


def refill_schedule_steps(steps_n, rows):
    """Steps a refilled batch runs: samples take steps_n[i] steps each; a row that finishes takes the
    next sample (rows in order) and the loop ends when the last sample does."""
    remaining_r, next_index, step = list(steps_n[:rows]), rows, 0
    while any(r > 0 for r in remaining_r):
        step += 1
        for r in range(rows):
            if remaining_r[r] > 0:
                remaining_r[r] -= 1
                if remaining_r[r] == 0 and next_index < len(steps_n):
                    remaining_r[r], next_index = steps_n[next_index], next_index + 1
    return step


@pytest.mark.parametrize("rows", [1, 7, 64])
def test_the_sampler_stops_once_every_row_has_ended(transformer, rows):
    model, variables = transformer
    tokens_nt, steps = sample_chunk(model, variables, seed_word(9), 0, 300, jnp.zeros((0,), jnp.int32),
                                    rows=rows, chunk=320, options=SampleOptions())
    tokens_nt = np.asarray(tokens_nt)
    assert (tokens_nt[300:] == STOP).all()
    # each sample takes a step per character and one for its STOP (none at the longest length)
    steps_n = np.minimum((tokens_nt[:300] != STOP).sum(1) + 1, VOCAB.block_size - 1).tolist()
    assert int(steps) == refill_schedule_steps(steps_n, rows)
    if rows == 1:
        assert int(steps) == sum(steps_n)  # every step computes a token of some name


def old_sampler(model, variables, key, num_samples):
    """The sampler before rows were refilled: every row runs every position, re-running the whole
    model each step; tokens after a row's STOP are STOP."""
    max_len = VOCAB.block_size - 1

    @jax.jit
    def run(key):
        idx_nt = jnp.zeros((num_samples, VOCAB.block_size), jnp.int32)
        for t in range(max_len):
            logits_nv = model.apply(variables, idx_nt)[:, t]
            next_n = jax.random.categorical(jax.random.fold_in(key, t), logits_nv)
            idx_nt = idx_nt.at[:, t + 1].set(jnp.where((t > 0) & (idx_nt[:, t] == STOP), STOP, next_n))
        return idx_nt[:, 1:]

    return np.asarray(run(key))


def chi2_homogeneity(counts_a, counts_b):
    """Pearson's chi-square statistic that two samples of counts come from one distribution."""
    table = np.array([counts_a, counts_b], float)
    table = table[:, table.sum(0) > 0]
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    return ((table - expected) ** 2 / expected).sum(), table.shape[1] - 1


def test_refilled_sampler_draws_from_the_old_samplers_distribution(transformer):
    """First characters and lengths of 20,000 samples each; chi-square at a fixed seed."""
    model, variables = transformer
    new_nt = sample(model, variables, seed=10, num_samples=20_000)[0]
    old_nt = old_sampler(model, variables, jax.random.PRNGKey(11), 20_000)
    quantile_999 = {7: 24.32, 8: 26.12}  # of chi-square with 7 and 8 degrees of freedom
    for values in (lambda t: t[:, 0], lambda t: (t != STOP).sum(1)):
        counts = [np.bincount(values(t), minlength=VOCAB.block_size) for t in (new_nt, old_nt)]
        chi2, dof = chi2_homogeneity(*counts)
        assert chi2 < quantile_999[dof], (chi2, dof, counts)


def test_the_hashed_gumbel_noise_is_uniform_and_independent_across_samples_positions_and_tokens():
    """The noise's uniforms (exp(-exp(-g))) for 4,096 samples x 15 positions x 27 tokens: uniform on [0, 1)
    by a chi-square test of 64 cells, and uncorrelated with the next sample's, position's and token's
    (one standard deviation of a correlation is 0.0013 here), and across seeds."""
    index_n, pos_n = jnp.repeat(jnp.arange(4096), 15), jnp.tile(jnp.arange(15), 4096)
    uniform = lambda seed: np.exp(-np.exp(-np.asarray(gumbel_noise(
        jax.random.bits(jax.random.PRNGKey(seed), (2,), jnp.uint32), index_n, pos_n, 27), np.float64)))
    u_ntv = uniform(0).reshape(4096, 15, 27)
    counts = np.bincount((u_ntv * 64).astype(int).ravel(), minlength=64)
    expected = u_ntv.size / 64
    assert ((counts - expected) ** 2 / expected).sum() < 120  # 63 degrees of freedom: p ~ 3e-5
    neighbours = [(u_ntv[1:], u_ntv[:-1]), (u_ntv[:, 1:], u_ntv[:, :-1]), (u_ntv[..., 1:], u_ntv[..., :-1]),
                  (u_ntv, uniform(1).reshape(u_ntv.shape))]
    for a, b in neighbours:
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.006


def test_tokens_stop_and_lengths_count_the_word(transformer):
    model, variables = transformer
    tokens, lengths = sample(model, variables, seed=3, num_samples=200)
    assert tokens.shape == (200, VOCAB.block_size - 1)
    for row, n in zip(tokens, lengths):
        assert (row[:n] > 0).all() and (row[n:] == 0).all()
    assert len(set(lengths.tolist())) > 2


@pytest.mark.parametrize("options", [dict(top_k=1), dict(temperature=0.0), dict(temperature=1e-3),
                                     dict(top_p=1e-6)])
def test_greedy_limits_equal_argmax_decoding(transformer, options):
    model, variables = transformer
    tokens, _ = sample(model, variables, seed=4, num_samples=3, options=SampleOptions(**options))
    np.testing.assert_array_equal(tokens, np.tile(greedy_by_full_forward(model, variables), (3, 1)))


def test_prefix_is_respected(transformer):
    model, variables = transformer
    words = sample_words(model, variables, VOCAB, seed=5, num_samples=50, prefix="hag")
    assert all(w.startswith("hag") for w in words) and len(set(words)) > 5
    greedy = sample(model, variables, seed=0, num_samples=1, prefix=[8, 1, 7], options=SampleOptions(0.0))[0][0]
    np.testing.assert_array_equal(greedy, greedy_by_full_forward(model, variables, prefix=[8, 1, 7]))
    with pytest.raises(UserError, match="'z'"):
        sample_words(model, variables, VOCAB, seed=5, num_samples=1, prefix="haz")


def test_one_compiled_sampler_serves_every_option_and_prefix(transformer):
    """The options and the prefix's length are traced: sampling with other values compiles nothing new, and
    the samples are those of each value (greedy: argmax decoding; a prefix: forced; top-k 1: greedy too)."""
    model, variables = transformer
    sample(model, variables, seed=6, num_samples=9)
    before = compiled_count(sample_chunk)
    greedy = np.tile(greedy_by_full_forward(model, variables), (9, 1))
    np.testing.assert_array_equal(sample(model, variables, 6, 9, options=SampleOptions(0.0))[0], greedy)
    np.testing.assert_array_equal(sample(model, variables, 6, 9, options=SampleOptions(top_k=1))[0], greedy)
    words = sample_words(model, variables, VOCAB, 6, 9, prefix="hag", options=SampleOptions(0.7, 3, 0.9))
    assert all(w.startswith("hag") for w in words)
    assert {w[:1] for w in sample_words(model, variables, VOCAB, 6, 9, prefix="e")} == {"e"}
    assert compiled_count(sample_chunk) == before


def test_sample_counts_up_to_a_power_of_two_share_one_compiled_sampler(transformer):
    """Rows and the chunk are rounded up to a power of two of at least MIN_ROWS (64), the rows past the samples
    idle: -n 1 to 64 are one program, -n 65 to 128 another, and each count's samples are the first of the larger
    count's."""
    model, variables = transformer
    tokens = sample(model, variables, seed=3, num_samples=128)[0]
    sixty_four = sample(model, variables, seed=3, num_samples=64)[0]
    before = compiled_count(sample_chunk)
    for num_samples in (1, 10, 33, 65, 100):
        np.testing.assert_array_equal(sample(model, variables, 3, num_samples)[0], tokens[:num_samples])
    assert compiled_count(sample_chunk) == before
    np.testing.assert_array_equal(sixty_four, tokens[:64])


def test_top_k_keeps_the_k_largest_and_top_p_the_smallest_set_reaching_p():
    probs = jnp.array([[0.05, 0.4, 0.1, 0.3, 0.15]])
    logits = jnp.log(probs)
    kept = lambda out: set(np.flatnonzero(np.isfinite(np.asarray(out[0]))).tolist())
    assert kept(filter_logits(logits, SampleOptions(top_k=2))) == {1, 3}
    assert kept(filter_logits(logits, SampleOptions(top_p=0.7))) == {1, 3}  # 0.4 + 0.3 reaches 0.7
    assert kept(filter_logits(logits, SampleOptions(top_p=0.71))) == {1, 3, 4}
    assert kept(filter_logits(logits, SampleOptions(top_p=0.4))) == {1}
    np.testing.assert_allclose(filter_logits(logits, SampleOptions(temperature=2.0)), logits / 2)


def test_bigram_first_characters_follow_its_probabilities():
    """Chi-square goodness of fit of 20,000 first characters at a fixed seed."""
    model, variables = make("bigram")
    logits_vv = jax.random.normal(jax.random.PRNGKey(6), (VOCAB.size, VOCAB.size))
    variables = {"params": {"logits": logits_vv}}
    first = sample(model, variables, seed=7, num_samples=20_000, prefix=())[0][:, 0]
    observed = np.bincount(first, minlength=VOCAB.size)
    expected = 20_000 * np.asarray(jax.nn.softmax(logits_vv[0]))
    chi2 = ((observed - expected) ** 2 / expected).sum()
    assert chi2 < 26.12  # the 0.999 quantile of chi-square with 8 degrees of freedom


def test_report_sorts_samples_into_train_test_and_new():
    dataset = Dataset(VOCAB, ["abc", "bad"], ["cab"])
    text = report(["abc", "cab", "hag", "abc"], dataset)
    assert "2 samples that are in train:\nabc\nabc" in text
    assert "1 samples that are in test:\ncab" in text
    assert "1 samples that are new:\nhag" in text
    assert text.endswith("novelty: 25.0% of 4 samples are new")


def test_profile_sample_script(tmp_path):
    """A smoke run of scripts/profile_sample.py on a fresh Transformer."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "profile_sample.py"), "--batch", "4", "--names",
                             "8", "--json", str(tmp_path / "p.json")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    profile = json.loads((tmp_path / "p.json").read_text())
    shares = {row["what"]: row["share"] for row in profile["rows"]}
    assert 0 < profile["steps"] <= 30 and abs(sum(shares.values()) - 1) < 1e-6  # 8 names of at most 15 steps on 4 rows
    assert shares["dense layers (matmul)"] > 0 and shares["attention core"] > 0
