"""GPT-2 style Transformer, as makemore.py's."""

import flax.linen as nn
import jax.numpy as jnp

from mmjax.models.layers import Embedding, LayerNorm, Linear


class CausalSelfAttention(nn.Module):
    """Multi-head masked self-attention (Vaswani et al. 2017).

    One fused `c_attn` projection rather than flax's per-head query/key/value layers, so each
    parameter is one makemore tensor.
    """

    n_embd: int
    n_head: int

    @nn.compact
    def __call__(self, x_btc, kv_cache=None, pos_b=None):
        """Causal attention over x; or, when decoding (x has T = 1, row b at position pos_b[b]), over
        the key/value cache (k_bsnh, v_bsnh) of positions 0..pos_b, which it returns updated."""
        B, T, C = x_btc.shape
        q_btc, k_btc, v_btc = jnp.split(Linear(3 * C, C, name="c_attn")(x_btc), 3, axis=-1)
        q_btnh, k_btnh, v_btnh = (t.reshape(B, T, self.n_head, C // self.n_head) for t in (q_btc, k_btc, v_btc))
        # flax's attention rather than jax.nn's, whose grouped-query vmap makes the backward pass
        # of ordinary multi-head attention reduce over a unit axis (a step 5% slower on CPU)
        if kv_cache is None:
            y_btnh = nn.dot_product_attention(q_btnh, k_btnh, v_btnh, mask=nn.make_causal_mask(jnp.ones((B, T))))
        else:
            rows_b = jnp.arange(B)
            k_bsnh, v_bsnh = (cache.at[rows_b, pos_b].set(new[:, 0]) for cache, new in zip(kv_cache, (k_btnh, v_btnh)))
            # positions past pos_b hold an earlier sequence of the row (or zeros): masked out
            seen_bs = jnp.arange(k_bsnh.shape[1]) <= pos_b[:, None]
            y_btnh = nn.dot_product_attention(q_btnh, k_bsnh, v_bsnh, mask=seen_bs[:, None, None, :])
            kv_cache = (k_bsnh, v_bsnh)
        return Linear(C, C, name="c_proj")(y_btnh.reshape(B, T, C)), kv_cache


class MLP(nn.Module):
    n_embd: int

    @nn.compact
    def __call__(self, x_btc):
        C = self.n_embd
        h_btf = nn.gelu(Linear(4 * C, C, name="c_fc")(x_btc), approximate=True)
        return Linear(C, 4 * C, name="c_proj")(h_btf)


class Block(nn.Module):
    """Pre-norm residual block of GPT-2 (Radford et al. 2019)."""

    n_embd: int
    n_head: int

    @nn.compact
    def __call__(self, x_btc, kv_cache=None, pos_b=None):
        y_btc, kv_cache = CausalSelfAttention(self.n_embd, self.n_head, name="attn")(
            LayerNorm("ln_1")(x_btc), kv_cache, pos_b)
        x_btc = x_btc + y_btc
        return x_btc + MLP(self.n_embd, name="mlp")(LayerNorm("ln_2")(x_btc)), kv_cache


class Transformer(nn.Module):
    """Transformer language model, exactly as in GPT-2 (Radford et al. 2019)."""

    vocab_size: int
    block_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64

    def setup(self):
        self.wte = Embedding(self.vocab_size, self.n_embd)
        self.wpe = Embedding(self.block_size, self.n_embd)
        self.h = [Block(self.n_embd, self.n_head) for _ in range(self.n_layer)]
        self.ln_f = LayerNorm()
        self.lm_head = Linear(self.vocab_size, self.n_embd, use_bias=False)

    def __call__(self, idx_bt, train: bool = False):
        x_btc = self.wte(idx_bt) + self.wpe(jnp.arange(idx_bt.shape[1]))
        for block in self.h:
            x_btc, _ = block(x_btc)
        return self.lm_head(self.ln_f(x_btc))

    def decode_init(self, batch_size):
        """A key/value cache per layer; a row restarting at position 0 needs no reset (see attention)."""
        shape = (batch_size, self.block_size, self.n_head, self.n_embd // self.n_head)
        return [(jnp.zeros(shape), jnp.zeros(shape)) for _ in range(self.n_layer)]

    def decode_step(self, kv, token_b, pos_b):
        x_b1c = (self.wte(token_b) + self.wpe(pos_b))[:, None]
        kv_out = []
        for block, kv_cache in zip(self.h, kv):
            x_b1c, kv_cache = block(x_b1c, kv_cache, pos_b)
            kv_out.append(kv_cache)
        return self.lm_head(self.ln_f(x_b1c))[:, 0], kv_out
