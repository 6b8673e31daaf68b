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
from mmjax.state import compiled_initialiser, initialiser_of

V, T = 11, 9
TYPES = sorted(MODELS)


def small_config(model_type):
    config = get_config(model_type)
    config.update(n_layer=2, n_head=2, n_embd=16, n_embd2=24)
    return config


@pytest.fixture(scope="module", params=TYPES)
def randomised(request):
    """A small model of each type with random values in every variable (some start at zeros, which
    would hide mistakes), BatchNorm variances and counts positive: drawn by numpy for the shapes of the
    model's variables (jax.eval_shape: no initialisation compiled). Its forward pass jitted (one program,
    not one per operation)."""
    model = create_model(small_config(request.param), V, T)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32))

    def randomise(path, s):
        noise = np.random.default_rng(zlib.crc32(jax.tree_util.keystr(path).encode())).normal(0, 0.5, s.shape)
        return np.asarray(np.abs(noise) + 0.5 if path[-1].key in ("var", "counts") else noise, s.dtype)

    variables = jax.device_put(jax.tree_util.tree_map_with_path(randomise, shapes))
    return model, variables, jax.jit(model.apply)


def tokens(seed, batch=3):
    """Random tokens after the start token 0 (numpy: no program compiled for them)."""
    idx_bt = np.random.default_rng(seed).integers(1, V, (batch, T), dtype=np.int32)
    idx_bt[:, 0] = 0
    return idx_bt


def test_logits_have_one_row_per_position(randomised):
    _, variables, forward = randomised
    assert forward(variables, tokens(1)).shape == (3, T, V)
    # shorter than block_size too: the shape jax traces for it (what running it returns; nothing compiled)
    assert jax.eval_shape(forward, variables, tokens(1)[:, :5]).shape == (3, 5, V)


def test_future_tokens_never_change_past_logits(randomised):
    _, variables, forward = randomised
    idx_bt = tokens(2)
    logits_btv = forward(variables, idx_bt)
    for t in (0, 4, T - 2):
        changed_bt = idx_bt.copy()
        changed_bt[:, t + 1:] = idx_bt[:, t + 1:] % (V - 1) + 1
        changed_btv = forward(variables, changed_bt)
        np.testing.assert_allclose(changed_btv[:, :t + 1], logits_btv[:, :t + 1], atol=1e-6)
        assert not np.allclose(changed_btv[:, t + 1:], logits_btv[:, t + 1:], atol=1e-3)


def test_decode_steps_equal_the_full_forward(randomised):
    """Row b decodes sequence a up to step T - b, then restarts at position 0 on sequence c (its carry
    still holding a), as the sampler refills rows: every step's logits are the full pass's."""
    model, variables, forward = randomised
    a_bt, c_bt = tokens(3), tokens(5)
    restart_b = T - np.arange(3)
    s_bs = np.broadcast_to(np.arange(2 * T), (3, 2 * T))
    pos_bs = np.where(s_bs < restart_b[:, None], s_bs, s_bs - restart_b[:, None])
    rows_b1 = np.arange(3)[:, None]
    # (numpy evaluates both branches: "% T" keeps the one not taken in bounds; the one taken has pos < T)
    idx_bs = np.where(s_bs < restart_b[:, None], a_bt[rows_b1, pos_bs % T], c_bt[rows_b1, pos_bs % T])
    full_a_btv, full_c_btv = np.asarray(forward(variables, a_bt)), np.asarray(forward(variables, c_bt))
    expected_bsv = np.where((s_bs < restart_b[:, None])[..., None], full_a_btv[rows_b1, pos_bs % T],
                            full_c_btv[rows_b1, pos_bs % T])

    @jax.jit
    def decode(idx_bs, pos_bs):  # a scan, as the sampler's loop: the carry must keep its shapes and dtypes
        def step(carry, token_pos):
            logits_bv, carry = model.apply(variables, carry, *token_pos, method="decode_step")
            return carry, logits_bv
        carry = model.apply(variables, idx_bs.shape[0], method="decode_init")
        return jax.lax.scan(step, carry, (idx_bs.T, pos_bs.T))[1].transpose(1, 0, 2)

    valid_bs = pos_bs < T
    np.testing.assert_allclose(np.asarray(decode(idx_bs, pos_bs))[valid_bs], expected_bsv[valid_bs], atol=1e-5,
                               rtol=1e-5)


# names.txt's vocabulary and block size: the states of test_zoo_lecture.py and test_transformer.py too (and this
# loss the programs of test_zoo_lecture.py's), so a process that runs them compiles each once
NAMES_VOCAB = Vocab(tuple("abcdefghijklmnopqrstuvwxyz"), 15)
LOSS = jax.jit(loss_fn, static_argnames="train")  # one program, not one per operation


@pytest.mark.parametrize("model_type", TYPES)
def test_initial_loss_is_near_uniform(model_type):
    """At the configs' own sizes and initialisation; which, compiled at LLVM's -O1 on the CPU to compile
    faster, is bit for bit the initialisation compiled at the default -O2."""
    config = get_config(model_type)
    state = fresh_state(config, NAMES_VOCAB)
    initialiser, key = initialiser_of(config, NAMES_VOCAB), jax.random.PRNGKey(config.seed)
    at_o1, at_o2 = compiled_initialiser(initialiser)(key), jax.jit(initialiser)(key)
    assert jax.tree.leaves(at_o1) and jax.tree.structure(at_o1) == jax.tree.structure(at_o2)
    for a, b in zip(jax.tree.leaves(at_o1), jax.tree.leaves(at_o2), strict=True):
        np.testing.assert_array_equal(a, b)
    jax.tree.map(np.testing.assert_array_equal, state.params, at_o1.params)  # create_train_state's
    idx_bt = np.random.default_rng(4).integers(1, 27, (64, 16), dtype=np.int32)
    x_bt = idx_bt.copy()
    x_bt[:, 0] = 0
    loss = float(LOSS(state.params, state, x_bt, idx_bt, train=False)[0])
    # makemore's BoW starts higher: its lm_head reads the unnormalised x + mean + MLP(x) (the PyTorch
    # version's initial loss: 3.66 to 4.03 over seeds 0-4).
    low, high = (0, 1.0) if model_type == "bow" else (-0.3, 0.3)
    assert math.log(27) + low < loss < math.log(27) + high
