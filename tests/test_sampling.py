import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.config import base_config
from mmjax.input_pipeline import Dataset, Vocab
from mmjax.models import create_model
from mmjax.sampling import report, sample, sample_words

VOCAB = Vocab(tuple("abcdefgh"), 7)


@pytest.fixture(scope="module")
def model_params():
    config = base_config()
    config.update(n_layer=1, n_head=2, n_embd=16)
    model = create_model(config, VOCAB.size, VOCAB.block_size)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, VOCAB.block_size), jnp.int32))["params"]
    return model, params


def test_same_seed_same_samples_other_seed_other_samples(model_params):
    model, params = model_params
    first = sample_words(model, params, VOCAB, seed=1, num_samples=20)
    assert first == sample_words(model, params, VOCAB, seed=1, num_samples=20)
    assert first != sample_words(model, params, VOCAB, seed=2, num_samples=20)
    assert all(set(w) <= set(VOCAB.chars) and len(w) <= VOCAB.max_word_length for w in first)


def test_sample_i_does_not_depend_on_the_number_of_samples(model_params):
    model, params = model_params
    key = jax.random.PRNGKey(3)
    many = sample(model, params, key, num_samples=16)
    few = sample(model, params, key, num_samples=5)
    assert many.shape == (16, VOCAB.block_size - 1)
    np.testing.assert_array_equal(many[:5], few)


def test_top_k_1_is_greedy(model_params):
    model, params = model_params
    tokens = sample(model, params, jax.random.PRNGKey(4), num_samples=3, top_k=1)
    idx_t = jnp.zeros((1, VOCAB.block_size), jnp.int32)
    for t in range(VOCAB.block_size - 1):  # argmax, one position at a time
        next_token = jnp.argmax(model.apply({"params": params}, idx_t)[0, t])
        idx_t = idx_t.at[0, t + 1].set(next_token)
    np.testing.assert_array_equal(tokens, np.repeat(idx_t[:, 1:], 3, axis=0))


def test_top_k_only_emits_the_k_most_likely_first_tokens(model_params):
    model, params = model_params
    first_logits = model.apply({"params": params}, jnp.zeros((1, VOCAB.block_size), jnp.int32))[0, 0]
    allowed = set(np.argsort(-np.asarray(first_logits))[:2].tolist())
    tokens = sample(model, params, jax.random.PRNGKey(5), num_samples=200, top_k=2)
    assert set(np.asarray(tokens[:, 0]).tolist()) == allowed


def test_report_sorts_samples_into_train_test_and_new():
    dataset = Dataset(VOCAB, ["abc", "bad"], ["cab"])
    text = report(["abc", "cab", "hag", "abc"], dataset)
    assert "2 samples that are in train:\nabc\nabc" in text
    assert "1 samples that are in test:\ncab" in text
    assert "1 samples that are new:\nhag" in text
