"""The MLP with BatchNorm of makemore lecture 3, and the causal-convolution frame it shares with WaveNet."""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models.layers import Embedding, restart

# Kaiming init for tanh (He et al. 2015): std (5/3)/sqrt(fan_in) keeps the pre-activations at unit scale.
TANH_INIT = nn.initializers.variance_scaling((5 / 3) ** 2, "fan_in", "normal")
# The output layer 10x smaller still: near-uniform logits, so the initial loss is about ln(V).
HEAD_INIT = nn.initializers.variance_scaling(0.1 ** 2, "fan_in", "normal")


class ConvBatchNormTanh(nn.Module):
    """A causal convolution as the lectures write it: a Linear without bias over the concatenation of
    `kernel` inputs `dilation` apart; then BatchNorm (Ioffe & Szegedy 2015), whose bias replaces the
    Linear's; then tanh. (Not nn.Conv: XLA's CPU convolutions run ~20x slower inside the training
    scan than this one matmul.)"""

    features: int
    kernel: int
    dilation: int = 1

    @nn.compact
    def __call__(self, h_btc, real_bt, train):
        # Valid positions only: the L outputs line up with the last L inputs, their newest.
        L, d = h_btc.shape[1] - (self.kernel - 1) * self.dilation, self.dilation
        window_btkc = jnp.concatenate([h_btc[:, i * d:i * d + L] for i in range(self.kernel)], axis=-1)
        h_btf = nn.Dense(self.features, use_bias=False, kernel_init=TANH_INIT, name="linear")(window_btkc)
        # Statistics over real positions only; momentum 0.9 is torch's 0.1.
        h_btf = nn.BatchNorm(not train, momentum=0.9, epsilon=1e-5, name="bn")(h_btf, mask=real_bt[:, -L:, None])
        return jnp.tanh(h_btf)


class CausalConvLM(nn.Module):
    """Embeddings of the last `context` tokens -> ConvBatchNormTanh layers -> Linear to the vocabulary.

    The tokens are left-padded with context - 1 zeros, so the valid convolutions leave one output per
    position and one pass predicts every position of a padded batch of names. Subclasses have the
    fields vocab_size, context, n_embd, n_embd2 and list their convolutions as (kernel, dilation).
    """

    def setup(self):
        self.wte = Embedding(self.vocab_size, self.n_embd)
        self.hidden = [ConvBatchNormTanh(self.n_embd2, kernel, dilation) for kernel, dilation in self._convolutions()]
        self.lm_head = nn.Dense(self.vocab_size, kernel_init=HEAD_INIT)

    def __call__(self, idx_bt, train: bool = False):
        # Positions before the word read token 0, as the lectures pad with '.'. Real positions are
        # the start and the characters; after the stop target, x is padding 0 and y is IGNORE.
        pad = ((0, 0), (self.context - 1, 0))
        real_bt = jnp.pad((idx_bt != 0).at[:, 0].set(True), pad)
        return self._logits(jnp.pad(idx_bt, pad), real_bt, train)

    def decode_init(self, batch_size):
        return jnp.zeros((batch_size, self.context), jnp.int32)

    def decode_step(self, window_bk, token_b, pos_b):
        """The carry is the window of the last `context` tokens; eval mode (running statistics)."""
        window_bk = restart(window_bk, self.decode_init(token_b.shape[0]), pos_b)
        window_bk = jnp.concatenate([window_bk[:, 1:], token_b[:, None]], axis=1)
        return self._logits(window_bk, jnp.ones_like(window_bk, bool), False)[:, -1], window_bk

    def _logits(self, idx_bt, real_bt, train):
        h_btc = self.wte(idx_bt)
        for layer in self.hidden:
            h_btc = layer(h_btc, real_bt, train)
        return self.lm_head(h_btc)


class MLPBatchNorm(CausalConvLM):
    """The MLP language model of Bengio et al. 2003 with BatchNorm (Ioffe & Szegedy 2015) before its
    tanh, as in makemore lecture 3: the Linear over the window's concatenated embeddings is one
    convolution as wide as the window."""

    vocab_size: int
    block_size: int
    context: int = 3
    n_embd: int = 10
    n_embd2: int = 200

    def _convolutions(self):
        return [(self.context, 1)]
