"""Lecture 3's diagnostics (mmjax/diagnostics.py) against a hand computation in numpy."""

import jax
import numpy as np
import pytest

from mmjax import backprop, diagnostics
from mmjax.input_pipeline import Vocab
from helpers import compiled_count, fresh_state, names_batch
from test_zoo_lecture import lecture_config

V, T, CONTEXT = 5, 4, 2


def tiny_mlp_bn():
    """mlp_bn with 2-dim embeddings and 4 tanh units, its BatchNorm gain at 3 so that some saturate."""
    config = lecture_config("mlp_bn")
    config.update(context=CONTEXT, n_embd=2, n_embd2=4)
    state = fresh_state(config, Vocab(tuple("abcd"), T - 1))
    x_bt, y_bt = names_batch(0, batch_size=6, vocab_size=V, block_size=T)
    # its initial values plus N(0, 0.1) noise, as backprop.random_params (no zero bias or unit gain hides a
    # wrong formula), the noise drawn by numpy: no program compiled for it
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda a: (np.asarray(a) + 0.1 * rng.standard_normal(a.shape)).astype(a.dtype), state.params)
    params["hidden_0"]["bn"]["scale"] = 3 * params["hidden_0"]["bn"]["scale"]
    return state.replace(params=params), x_bt, y_bt


def by_hand(params, x_bt, y_bt):
    """The layers' outputs and gradients at the word positions, and lm_head's kernel gradient."""
    p = jax.tree.map(np.asarray, backprop.lecture_params(params))
    x_bt, y_bt = np.asarray(x_bt), np.asarray(y_bt)
    real = y_bt != -1
    x_pad = np.pad(x_bt, ((0, 0), (CONTEXT - 1, 0)))
    emb_btc = p["C"][x_pad]
    embcat = np.concatenate([emb_btc[:, i:i + T] for i in range(CONTEXT)], axis=-1)[real]
    hpre = embcat @ p["W1"]
    hnorm = (hpre - hpre.mean(0)) / np.sqrt(hpre.var(0) + 1e-5)
    h = np.tanh(p["bngain"] * hnorm + p["bnbias"])
    logits = h @ p["W2"] + p["b2"]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    dlogits = (probs - np.eye(V)[y_bt[real]]) / real.sum()
    layers = {"wte": (emb_btc[:, -T:][real], None), "hidden_0": (h, dlogits @ p["W2"].T), "lm_head": (logits, dlogits)}
    return layers, h.T @ dlogits


def test_diagnostics_match_a_hand_computation():
    state, x_bt, y_bt = tiny_mlp_bn()
    got = diagnostics.record(state, x_bt, y_bt)
    layers, d_W2 = by_hand(state.params, x_bt, y_bt)
    assert set(got["layers"]) == set(layers)
    assert set(got["params"]) == {"wte/embedding", "hidden_0/linear/kernel", "lm_head/kernel"}
    for name, (out, grad) in layers.items():
        stats = got["layers"][name]
        assert stats["mean"] == pytest.approx(out.mean(), abs=1e-6)
        assert stats["std"] == pytest.approx(out.std(), rel=1e-5)
        assert stats["saturated"] == pytest.approx((np.abs(out) > 0.97).mean(), abs=1e-6)
        if grad is not None:
            assert stats["grad_mean"] == pytest.approx(grad.mean(), abs=1e-8)
            assert stats["grad_std"] == pytest.approx(grad.std(), rel=1e-5)
    assert 0.05 < got["layers"]["hidden_0"]["saturated"] < 0.95  # the gain of 3 saturates some, not all
    W2 = np.asarray(state.params["lm_head"]["kernel"])
    head = got["params"]["lm_head/kernel"]
    assert head["grad_mean"] == pytest.approx(d_W2.mean(), abs=1e-8)
    assert head["grad_data"] == pytest.approx(d_W2.std() / W2.std(), rel=1e-5)
    assert head["update_data"] == pytest.approx(0.1 * d_W2.std() / W2.std(), rel=1e-5)  # SGD at 0.1


def test_diagnostics_compile_once():
    state, x_bt, y_bt = tiny_mlp_bn()
    diagnostics.record(state, x_bt, y_bt)
    before = compiled_count(diagnostics.diagnostics)
    diagnostics.record(state.replace(step=state.step + 7, params=jax.tree.map(lambda a: 2 * a, state.params)),
                       x_bt, y_bt)
    assert compiled_count(diagnostics.diagnostics) == before
