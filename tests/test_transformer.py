import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.config import base_config
from mmjax.input_pipeline import Vocab
from mmjax.models import create_model
from mmjax.models.transformer import Transformer
from mmjax.train import create_train_state, loss_fn

V, T = 27, 16


@pytest.fixture(scope="module")
def params():
    return Transformer(V, T).init(jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32))["params"]


def test_parameters_match_makemore_tensors(params):
    shapes = {"/".join(k.key for k in path): leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
    C = 64
    expected = {"wte/embedding": (V, C), "wpe/embedding": (T, C), "ln_f/scale": (C,), "ln_f/bias": (C,),
                "lm_head/kernel": (C, V)}  # no lm_head bias
    for i in range(4):
        expected.update({
            f"h_{i}/ln_1/scale": (C,), f"h_{i}/ln_1/bias": (C,), f"h_{i}/ln_2/scale": (C,), f"h_{i}/ln_2/bias": (C,),
            f"h_{i}/attn/c_attn/kernel": (C, 3 * C), f"h_{i}/attn/c_attn/bias": (3 * C,),
            f"h_{i}/attn/c_proj/kernel": (C, C), f"h_{i}/attn/c_proj/bias": (C,),
            f"h_{i}/mlp/c_fc/kernel": (C, 4 * C), f"h_{i}/mlp/c_fc/bias": (4 * C,),
            f"h_{i}/mlp/c_proj/kernel": (4 * C, C), f"h_{i}/mlp/c_proj/bias": (C,)})
    assert shapes == expected
    assert sum(math.prod(s) for s in shapes.values()) == 204_544


def test_initialisation_follows_pytorch_defaults(params):
    c_fc = params["h_0"]["mlp"]["c_fc"]  # fan_in 64: U(-1/8, 1/8)
    for leaf in (c_fc["kernel"], c_fc["bias"]):
        assert float(jnp.max(jnp.abs(leaf))) <= 1 / 8 and float(jnp.std(leaf)) == pytest.approx(1 / 8 / 3 ** 0.5, rel=0.1)
    assert float(jnp.max(jnp.abs(params["h_0"]["mlp"]["c_proj"]["kernel"]))) <= 1 / 16  # fan_in 256
    assert float(jnp.std(params["wte"]["embedding"])) == pytest.approx(1.0, rel=0.1)
    np.testing.assert_array_equal(params["ln_f"]["scale"], 1.0)
    np.testing.assert_array_equal(params["ln_f"]["bias"], 0.0)


def test_future_tokens_never_change_past_logits(params):
    model = Transformer(V, T)
    idx_bt = jax.random.randint(jax.random.PRNGKey(1), (2, T), 0, V)
    logits_btv = model.apply({"params": params}, idx_bt)
    assert logits_btv.shape == (2, T, V)
    for t in (0, 5, T - 2):
        changed_bt = idx_bt.at[:, t + 1:].set((idx_bt[:, t + 1:] + 1) % V)
        changed_btv = model.apply({"params": params}, changed_bt)
        np.testing.assert_allclose(changed_btv[:, :t + 1], logits_btv[:, :t + 1], atol=1e-6)
        assert not np.allclose(changed_btv[:, t + 1:], logits_btv[:, t + 1:], atol=1e-3)


def test_initial_loss_is_near_uniform():
    vocab = Vocab(tuple("abcdefghijklmnopqrstuvwxyz"), T - 1)
    state = create_train_state(base_config(), vocab)
    idx = jax.random.randint(jax.random.PRNGKey(2), (64, T), 1, V)
    x_bt, y_bt = idx.at[:, 0].set(0), idx
    loss = float(loss_fn(state.params, state, x_bt, y_bt)[0])
    assert abs(loss - math.log(V)) < 0.3


def test_n_embd_must_divide_into_heads():
    config = base_config()
    config.n_embd, config.n_head = 30, 4
    with pytest.raises(ValueError, match="not divisible by n_head"):
        create_model(config, V, T)
