"""Recurrent language models: makemore.py's RNN frame with an Elman, GRU or LSTM cell."""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.errors import UserError
from mmjax.models.layers import Embedding, Linear, drop, restart, torch_uniform


class XHCell(nn.RNNCellBase):
    """makemore's cells: every gate is one Linear(n_embd + n_embd2 -> n_embd2) on [x, h], input first.

    Written by hand (not flax's SimpleCell/GRUCell) because those split each such Linear into an
    input and a hidden kernel, and flax's GRU puts the reset gate elsewhere.
    """

    features: int

    def xh_linear(self, name, x_bc, h_bc):
        xh_bc = jnp.concatenate([x_bc, h_bc], axis=-1)
        return Linear(self.features, xh_bc.shape[-1], name=name)(xh_bc)

    @property
    def num_feature_axes(self):
        return 1


class RNNCell(XHCell):
    """Elman 1990 ("Finding Structure in Time"): h' = tanh(W [x, h] + b)."""

    @nn.compact
    def __call__(self, h_bc, x_bc):
        h_bc = jnp.tanh(self.xh_linear("xh_to_h", x_bc, h_bc))
        return h_bc, h_bc


class GRUCell(XHCell):
    """GRU of Cho et al. 2014, makemore's form: the reset gate scales h before the candidate's Linear."""

    @nn.compact
    def __call__(self, h_bc, x_bc):
        r_bc = nn.sigmoid(self.xh_linear("xh_to_r", x_bc, h_bc))
        hbar_bc = jnp.tanh(self.xh_linear("xh_to_hbar", x_bc, r_bc * h_bc))
        z_bc = nn.sigmoid(self.xh_linear("xh_to_z", x_bc, h_bc))
        h_bc = (1 - z_bc) * h_bc + z_bc * hbar_bc
        return h_bc, h_bc


def make_cell(kind, n_embd, n_embd2):
    """The cell named `kind`. The LSTM (Hochreiter & Schmidhuber 1997; Graves 2013's without peepholes)
    is flax's fused cell, initialised as the others: U(+-1/sqrt(n_embd + n_embd2)) for every tensor."""
    if kind == "lstm":
        init = torch_uniform(n_embd + n_embd2)
        return nn.OptimizedLSTMCell(n_embd2, kernel_init=init, recurrent_kernel_init=init, bias_init=init, name="cell")
    cells = {"rnn": RNNCell, "gru": GRUCell}
    if kind not in cells:
        raise UserError(f"unknown cell {kind!r}: choose rnn, gru or lstm")
    return cells[kind](n_embd2, name="cell")


class RNN(nn.Module):
    """Recurrent language model (makemore's frame): h_t = cell(wte(token t), h_{t-1}), logits_t = lm_head(h_t).

    `cell`: "rnn" (Elman 1990, Mikolov et al. 2010), "gru" (Cho et al. 2014) or "lstm" (Graves 2013).
    h_0 is the learned `start`; the LSTM's cell state starts at zeros. Dropout (off unless `dropout` is
    given in training) on the recurrence's inputs and outputs, not on the recurrent connection (Zaremba
    et al. 2014): on the embeddings fed to the cell and on h before `lm_head`.
    Parameters, flax -> makemore (kernels transposed): `start` = `start`, `wte/embedding` =
    `wte.weight`, `cell/xh_to_h/kernel|bias` = `cell.xh_to_h.weight|bias` (gru: `xh_to_z`, `xh_to_r`,
    `xh_to_hbar` likewise), `lm_head/kernel|bias` = `lm_head.weight|bias`. The LSTM, which makemore
    lacks, has flax's names: `cell/i{i,f,g,o}/kernel` (input), `cell/h{i,f,g,o}/kernel|bias` (hidden);
    mmjax.interop stacks them as torch's nn.LSTMCell (`cell.weight_ih`, ...).
    """

    vocab_size: int
    block_size: int
    n_embd: int = 64
    n_embd2: int = 64
    cell: str = "rnn"

    def setup(self):
        self.start = self.param("start", nn.initializers.zeros, (1, self.n_embd2))
        self.wte = Embedding(self.vocab_size, self.n_embd)
        self.recurrence = make_cell(self.cell, self.n_embd, self.n_embd2)
        self.scan = nn.RNN(self.recurrence)
        self.lm_head = Linear(self.vocab_size, self.n_embd2)

    def __call__(self, idx_bt, train: bool = False, dropout=None):
        rate = dropout if train else None
        h_btc = self.scan(drop(self, self.wte(idx_bt), rate), initial_carry=self.decode_init(idx_bt.shape[0]))
        return self.lm_head(drop(self, h_btc, rate))

    def decode_init(self, batch_size):
        h_bc = jnp.broadcast_to(self.start, (batch_size, self.n_embd2))
        return (jnp.zeros_like(h_bc), h_bc) if self.cell == "lstm" else h_bc  # the LSTM carries (c, h)

    def decode_step(self, carry, token_b, pos_b):
        carry = restart(carry, self.decode_init(token_b.shape[0]), pos_b)
        carry, h_bc = self.recurrence(carry, self.wte(token_b))
        return self.lm_head(h_bc), carry
