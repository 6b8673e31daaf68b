import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import fresh_state
from mmjax.config import base_config, get_config
from mmjax.input_pipeline import Vocab
from mmjax.models import create_model
from mmjax.models.transformer import Transformer

V, T = 27, 16


@pytest.fixture(scope="module")
def params():
    """The parameters train.py starts from at configs/transformer.py's sizes on names.txt's vocabulary (the
    state test_models.py's initial loss starts from too: a process that runs both compiles it once)."""
    return fresh_state(get_config("transformer"), Vocab(tuple("abcdefghijklmnopqrstuvwxyz"), T - 1)).params


def test_parameters_match_makemore_tensors(params):
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
    # the module's own defaults (their shapes traced: nothing compiled), and the config's model that train.py builds
    module = jax.eval_shape(Transformer(V, T).init, jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32))["params"]
    for tree in (module, params):
        shapes = {"/".join(k.key for k in path): leaf.shape for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}
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






def test_n_embd_must_divide_into_heads():
    config = base_config()
    config.n_embd, config.n_head = 30, 4
    with pytest.raises(ValueError, match="not divisible by n_head"):
        create_model(config, V, T)
