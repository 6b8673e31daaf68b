"""What every registered model must do: shapes, causality, a near-uniform start, and incremental
decoding equal to the full forward pass. Model-specific checks live in test_zoo_*.py and
test_transformer.py."""

import math
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import ROOT
from mmjax.config import get_config
from mmjax.input_pipeline import Vocab
from mmjax.models import MODELS, create_model
from mmjax.losses import loss_fn
from helpers import fresh_state

V, T = 11, 9
TYPES = sorted(MODELS)


def small_config(model_type):
    config = get_config(model_type)
    config.update(n_layer=2, n_head=2, n_embd=16, n_embd2=24)
    return config


@pytest.fixture(scope="module", params=TYPES)
def randomised(request):
    """A small model of each type with random values in every variable (some start at zeros, which
    would hide mistakes), BatchNorm variances and counts positive. Its forward pass jitted (one program, not
    one per operation)."""
    model = create_model(small_config(request.param), V, T)

    def randomise(path, x):
        key = jax.random.PRNGKey(zlib.crc32(jax.tree_util.keystr(path).encode()))
        noise = jax.random.normal(key, x.shape) * 0.5
        return jnp.abs(noise) + 0.5 if path[-1].key in ("var", "counts") else noise

    init = jax.jit(lambda: jax.tree_util.tree_map_with_path(
        randomise, model.init(jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32))))
    variables = init()
    return model, variables, jax.jit(model.apply)


def tokens(seed, batch=3):
    return jax.random.randint(jax.random.PRNGKey(seed), (batch, T), 1, V).at[:, 0].set(0)


def test_logits_have_one_row_per_position(randomised):
    _, variables, forward = randomised
    assert forward(variables, tokens(1)).shape == (3, T, V)
    assert forward(variables, tokens(1)[:, :5]).shape == (3, 5, V)  # shorter than block_size too


def test_future_tokens_never_change_past_logits(randomised):
    _, variables, forward = randomised
    idx_bt = tokens(2)
    logits_btv = forward(variables, idx_bt)
    for t in (0, 4, T - 2):
        changed_bt = idx_bt.at[:, t + 1:].set(idx_bt[:, t + 1:] % (V - 1) + 1)
        changed_btv = forward(variables, changed_bt)
        np.testing.assert_allclose(changed_btv[:, :t + 1], logits_btv[:, :t + 1], atol=1e-6)
        assert not np.allclose(changed_btv[:, t + 1:], logits_btv[:, t + 1:], atol=1e-3)


def test_decode_steps_equal_the_full_forward(randomised):
    """Row b decodes sequence a up to step T - b, then restarts at position 0 on sequence c (its carry
    still holding a), as the sampler refills rows: every step's logits are the full pass's."""
    model, variables, forward = randomised
    a_bt, c_bt = tokens(3), tokens(5)
    restart_b = T - jnp.arange(3)
    s_bs = jnp.broadcast_to(jnp.arange(2 * T), (3, 2 * T))
    pos_bs = jnp.where(s_bs < restart_b[:, None], s_bs, s_bs - restart_b[:, None])
    rows_b1 = jnp.arange(3)[:, None]
    idx_bs = jnp.where(s_bs < restart_b[:, None], a_bt[rows_b1, pos_bs], c_bt[rows_b1, pos_bs % T])
    full_a_btv, full_c_btv = forward(variables, a_bt), forward(variables, c_bt)
    expected_bsv = jnp.where((s_bs < restart_b[:, None])[..., None], full_a_btv[rows_b1, pos_bs],
                             full_c_btv[rows_b1, pos_bs % T])

    @jax.jit
    def decode(idx_bs, pos_bs):  # a scan, as the sampler's loop: the carry must keep its shapes and dtypes
        def step(carry, token_pos):
            logits_bv, carry = model.apply(variables, carry, *token_pos, method="decode_step")
            return carry, logits_bv
        carry = model.apply(variables, idx_bs.shape[0], method="decode_init")
        return jax.lax.scan(step, carry, (idx_bs.T, pos_bs.T))[1].transpose(1, 0, 2)

    valid_bs = pos_bs < T
    np.testing.assert_allclose(decode(idx_bs, pos_bs)[valid_bs], expected_bsv[valid_bs], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("model_type", TYPES)
def test_initial_loss_is_near_uniform(model_type):
    """At the configs' own sizes and initialisation."""
    vocab = Vocab(tuple("abcdefghijklmnopqrstuvwxyz"), 15)
    config = get_config(model_type)
    state = fresh_state(config, vocab)
    idx_bt = jax.random.randint(jax.random.PRNGKey(4), (64, 16), 1, 27)
    loss = float(jax.jit(loss_fn)(state.params, state, idx_bt.at[:, 0].set(0), idx_bt)[0])  # one program
    # makemore's BoW starts higher: its lm_head reads the unnormalised x + mean + MLP(x) (the PyTorch
    # version's initial loss: 3.66 to 4.03 over seeds 0-4).
    low, high = (0, 1.0) if model_type == "bow" else (-0.3, 0.3)
    assert math.log(27) + low < loss < math.log(27) + high
