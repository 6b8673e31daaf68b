"""Bigram language model, as makemore.py's."""

import flax.linen as nn


class Bigram(nn.Module):
    """Bigram language model: the next token's logits are a learned row of a (V, V) table, looked up by
    the current token. Parameter `logits` is makemore's `logits`, starting at zeros (uniform)."""

    vocab_size: int
    block_size: int  # unused: the context is one token

    def setup(self):
        self.logits = self.param("logits", nn.initializers.zeros, (self.vocab_size, self.vocab_size))

    def __call__(self, idx_bt, train: bool = False):
        return self.logits[idx_bt]

    def decode_init(self, batch_size):
        return ()  # nothing to remember: the token fed in is the whole context

    def decode_step(self, carry, token_b, pos_b):
        return self.logits[token_b], carry
