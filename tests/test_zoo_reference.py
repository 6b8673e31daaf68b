"""makemore's bigram, MLP, RNN, GRU and BoW, and an LSTM in the RNN frame: parameter counts and cells
(test_models.py checks what every model must do)."""

import math

import jax
import jax.numpy as jnp
import pytest
from conftest import ROOT

from mmjax.config import get_config
from mmjax.errors import UserError
from mmjax.models import create_model
from mmjax.models.rnn import RNN

NAMES = ("bigram", "mlp", "rnn", "gru", "lstm", "bow")
V, T, C = 27, 16, 64  # names.txt's vocabulary and block size; makemore's n_embd = n_embd2
XH = 2 * C  # the recurrent cells' Linear layers read [x, h]
PARAMETERS = {  # by hand; the first five are makemore's counts (reference.md)
    "bigram": V * V,  # 729
    "mlp": (V + 1) * C + (T * C * C + C) + (C * V + V),  # wte with BLANK, mlp.0, mlp.2: 69,147
    "rnn": C + V * C + (XH * C + C) + (C * V + V),  # start, wte, xh_to_h, lm_head: 11,803
    "gru": C + V * C + 3 * (XH * C + C) + (C * V + V),  # xh_to_z, xh_to_r, xh_to_hbar: 28,315
    "lstm": C + V * C + 4 * (C * C + C * C + C) + (C * V + V),  # per gate: input and hidden kernels, a bias: 36,571
    "bow": V * C + T * C + 2 * (C * C + C) + (C * V + V),  # wte, wpe, c_fc, c_proj, lm_head: 12,827
}


def config(name):
    return get_config(name)


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_at_makemore_defaults(name):
    model = create_model(config(name), V, T)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32))
    assert sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes)) == PARAMETERS[name]


def test_each_config_picks_its_cell():
    for name in ("rnn", "gru", "lstm"):
        assert create_model(config(name), V, T).cell == name
    with pytest.raises(UserError, match="unknown cell"):
        RNN(V, T, cell="lstn").init(jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32))
