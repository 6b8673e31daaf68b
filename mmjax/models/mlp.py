"""MLP language model, as makemore.py's."""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models.layers import Embedding, Linear, drop, restart


class MLP(nn.Module):
    """MLP language model of Bengio et al. 2003, "A Neural Probabilistic Language Model".

    Position t concatenates the embeddings of tokens t, t-1, ..., t-block_size+1 (newest first; a
    BLANK token, row vocab_size of `wte`, where the index is below 0), then one tanh hidden layer.
    Parameters, flax -> makemore: `wte/embedding` = `wte.weight`; `mlp_0/kernel` = `mlp.0.weight`.T,
    `mlp_0/bias` = `mlp.0.bias`; `mlp_2/kernel` = `mlp.2.weight`.T, `mlp_2/bias` = `mlp.2.bias`.
    Dropout (off unless `dropout` is given in training) on the input and the hidden units, as Srivastava
    et al. 2014 apply it: on the concatenated context embeddings and on the tanh layer's output.
    """

    vocab_size: int
    block_size: int
    n_embd: int = 64
    n_embd2: int = 64

    def setup(self):
        self.wte = Embedding(self.vocab_size + 1, self.n_embd)  # + BLANK
        self.mlp_0 = Linear(self.n_embd2, self.block_size * self.n_embd)
        self.mlp_2 = Linear(self.vocab_size, self.n_embd2)

    def head(self, context_bk, rate=None):
        """Logits from each row's last block_size tokens, newest first; `rate`: dropout."""
        x_bkc = self.wte(context_bk)
        h_bf = jnp.tanh(self.mlp_0(drop(self, x_bkc.reshape(*context_bk.shape[:-1], -1), rate)))
        return self.mlp_2(drop(self, h_bf, rate))

    def __call__(self, idx_bt, train: bool = False, dropout=None):
        T, K = idx_bt.shape[1], self.block_size
        padded_bp = jnp.pad(idx_bt, ((0, 0), (K - 1, 0)), constant_values=self.vocab_size)
        # Token t - k sits at padded index t + K - 1 - k.
        return self.head(padded_bp[:, jnp.arange(T)[:, None] + K - 1 - jnp.arange(K)], dropout if train else None)

    def decode_init(self, batch_size):
        return jnp.full((batch_size, self.block_size), self.vocab_size, jnp.int32)

    def decode_step(self, context_bk, token_b, pos_b):
        context_bk = restart(context_bk, self.decode_init(token_b.shape[0]), pos_b)
        context_bk = jnp.concatenate([token_b[:, None].astype(context_bk.dtype), context_bk[:, :-1]], axis=1)
        return self.head(context_bk), context_bk
