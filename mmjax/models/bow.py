"""Bag-of-words language model, as makemore.py's."""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models.layers import Embedding, Linear, drop


class TanhMLP(nn.Module):
    """c_proj(tanh(c_fc(x))), n_embd -> n_embd2 -> n_embd."""

    n_embd: int
    n_embd2: int

    @nn.compact
    def __call__(self, x_btc):
        h_btf = jnp.tanh(Linear(self.n_embd2, self.n_embd, name="c_fc")(x_btc))
        return Linear(self.n_embd, self.n_embd2, name="c_proj")(h_btf)


class BoWBlock(nn.Module):
    """x + the mean of x over the prefix (given), then x + an MLP of x."""

    n_embd: int
    n_embd2: int

    @nn.compact
    def __call__(self, x_btc, prefix_mean_btc, rate=None):
        x_btc = x_btc + prefix_mean_btc
        return x_btc + drop(self, TanhMLP(self.n_embd, self.n_embd2, name="mlp")(x_btc), rate)


class BoW(nn.Module):
    """Causal bag of words (makemore's; after Mikolov et al. 2013's CBOW): each position adds the plain
    average of its prefix's token + position embeddings, then a tanh MLP block, then `lm_head`.

    Parameters, flax -> makemore (kernels transposed): `wte/embedding` = `wte.weight`, `wpe/embedding`
    = `wpe.weight`, `context_block/mlp/c_fc|c_proj/kernel|bias` = `context_block.mlp.c_fc|c_proj.weight|bias`,
    `lm_head/kernel|bias` = `lm_head.weight|bias`. (makemore's mask buffer `context_block.cbow.bias`
    has no counterpart: a cumulative sum does the averaging.)
    Dropout (off unless `dropout` is given in training) where the Transformer has it in this frame: on the
    token + position embeddings and on the MLP branch's output before it is added.
    """

    vocab_size: int
    block_size: int
    n_embd: int = 64
    n_embd2: int = 64

    def setup(self):
        self.wte = Embedding(self.vocab_size, self.n_embd)
        self.wpe = Embedding(self.block_size, self.n_embd)
        self.context_block = BoWBlock(self.n_embd, self.n_embd2)
        self.lm_head = Linear(self.vocab_size, self.n_embd)

    def __call__(self, idx_bt, train: bool = False, dropout=None):
        T, rate = idx_bt.shape[1], dropout if train else None
        x_btc = drop(self, self.wte(idx_bt) + self.wpe(jnp.arange(T)), rate)
        mean_btc = jnp.cumsum(x_btc, axis=1) / jnp.arange(1, T + 1)[:, None]
        return self.lm_head(self.context_block(x_btc, mean_btc, rate))

    def decode_init(self, batch_size):
        return jnp.zeros((batch_size, self.n_embd))  # the sum of the prefix's x

    def decode_step(self, sum_bc, token_b, pos_b):
        x_bc = self.wte(token_b) + self.wpe(pos_b)
        sum_bc = jnp.where((pos_b == 0)[:, None], 0.0, sum_bc) + x_bc
        return self.lm_head(self.context_block(x_bc, sum_bc / (pos_b + 1)[:, None])), sum_bc
