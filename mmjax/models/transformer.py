"""GPT-2 style Transformer, as makemore.py's."""

import flax.linen as nn
import jax
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
    def __call__(self, x_btc):
        B, T, C = x_btc.shape
        q_btc, k_btc, v_btc = jnp.split(Linear(3 * C, C, name="c_attn")(x_btc), 3, axis=-1)
        heads = lambda t_btc: t_btc.reshape(B, T, self.n_head, C // self.n_head)
        y_btnh = jax.nn.dot_product_attention(heads(q_btc), heads(k_btc), heads(v_btc), is_causal=True)
        return Linear(C, C, name="c_proj")(y_btnh.reshape(B, T, C))


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
    def __call__(self, x_btc):
        x_btc = x_btc + CausalSelfAttention(self.n_embd, self.n_head, name="attn")(LayerNorm("ln_1")(x_btc))
        return x_btc + MLP(self.n_embd, name="mlp")(LayerNorm("ln_2")(x_btc))


class Transformer(nn.Module):
    """Transformer language model, exactly as in GPT-2 (Radford et al. 2019)."""

    vocab_size: int
    block_size: int
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 64

    @nn.compact
    def __call__(self, idx_bt):
        T = idx_bt.shape[1]
        x_btc = Embedding(self.vocab_size, self.n_embd, "wte")(idx_bt) + \
            Embedding(self.block_size, self.n_embd, "wpe")(jnp.arange(T))
        for i in range(self.n_layer):
            x_btc = Block(self.n_embd, self.n_head, name=f"h_{i}")(x_btc)
        return Linear(self.vocab_size, self.n_embd, use_bias=False, name="lm_head")(LayerNorm("ln_f")(x_btc))
