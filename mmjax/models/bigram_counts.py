"""Counted bigrams, the first model of Karpathy's makemore lecture 1."""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.input_pipeline import IGNORE


class BigramCounts(nn.Module):
    """Character bigrams (Shannon 1948) estimated by counting, with add-alpha smoothing (Lidstone 1920;
    Laplace's add-one at alpha 1). Its parameters are the counts, set in closed form by `fit`."""

    vocab_size: int
    block_size: int
    alpha: float = 1.0

    def setup(self):
        self.counts = self.param("counts", nn.initializers.zeros, (self.vocab_size, self.vocab_size))

    def __call__(self, idx_bt, train: bool = False):
        # log of the smoothed conditional probabilities: already normalised, so softmax leaves them as they are
        smoothed_vv = self.counts + self.alpha
        return jnp.log(smoothed_vv / smoothed_vv.sum(axis=1, keepdims=True))[idx_bt]

    def fit(self, x_nt, y_nt):
        """The counts of (x, y) pairs over every position with a target."""
        mask_nt = y_nt != IGNORE
        counts_vv = jnp.zeros((self.vocab_size, self.vocab_size)).at[x_nt, jnp.where(mask_nt, y_nt, 0)].add(mask_nt)
        return {"counts": counts_vv}

    def decode_init(self, batch_size):
        return jnp.zeros((batch_size,), jnp.int32)

    def decode_step(self, last_b, token_b, pos_b):
        """The carry is the last token fed; the prediction depends on the newest one alone."""
        return self(token_b[:, None])[:, 0], token_b
