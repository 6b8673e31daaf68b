"""GPT-2 style Transformer, as makemore.py's."""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models.layers import Embedding, LayerNorm, Linear, drop


class CausalSelfAttention(nn.Module):
    """Multi-head masked self-attention (Vaswani et al. 2017).

    One fused `c_attn` projection rather than flax's per-head query/key/value layers, so each
    parameter is one makemore tensor.
    """

    n_embd: int
    n_head: int

    @nn.compact
    def __call__(self, x_btc, kv_cache=None, slot=None, seen_bs=None, rate=None):
        """Causal attention over x; or, when decoding (x has T = 1), over the key/value cache (k_xsh,
        v_xsh; x is row * heads + head): this token's key and value go to cache slot `slot`, and row b
        attends to the slots seen_bs[b] (see Transformer.decode_step). Returns the cache updated. `rate`: dropout
        on the attention weights and on the output (GPT-2's attn_dropout and resid_dropout)."""
        B, T, C = x_btc.shape
        q_btc, k_btc, v_btc = jnp.split(Linear(3 * C, C, name="c_attn")(x_btc), 3, axis=-1)
        q_btnh, k_btnh, v_btnh = (t.reshape(B, T, self.n_head, C // self.n_head) for t in (q_btc, k_btc, v_btc))
        # flax's attention rather than jax.nn's, whose grouped-query vmap makes the backward pass
        # of ordinary multi-head attention reduce over a unit axis (a step 5% slower on CPU)
        if kv_cache is None and rate is None:
            y_btnh = nn.dot_product_attention(q_btnh, k_btnh, v_btnh, mask=nn.make_causal_mask(jnp.ones((B, T))))
        elif kv_cache is None:  # what nn.dot_product_attention computes, with dropout on the weights
            weights_bnts = nn.dot_product_attention_weights(q_btnh, k_btnh, mask=nn.make_causal_mask(jnp.ones((B, T))))
            y_btnh = jnp.einsum("...hqk,...khd->...qhd", drop(self, weights_bnts, rate), v_btnh)
        else:
            # the cache is (B * heads, S, head) and the two products are written out: flax's attention
            # wants (B, S, heads, head), which made XLA:CPU transpose and copy the whole cache every
            # step (half of the step's time); and with rows and heads apart, at B = 1 XLA:CPU dropped the
            # unit axis, updated the cache twice and copied it four times a step (batch 1: 40% slower)
            X, H = B * self.n_head, C // self.n_head
            k_xsh, v_xsh = (jax.lax.dynamic_update_slice_in_dim(cache, new.reshape(X, 1, H), slot, axis=1)
                            for cache, new in zip(kv_cache, (k_btnh, v_btnh)))
            scores_bns = jnp.einsum("xh,xsh->xs", q_btnh.reshape(X, H), k_xsh).reshape(B, self.n_head, -1) * H ** -0.5
            probs_xs = jax.nn.softmax(jnp.where(seen_bs[:, None], scores_bns, -jnp.inf), axis=-1).reshape(X, -1)
            y_btnh = jnp.einsum("xs,xsh->xh", probs_xs, v_xsh).reshape(B, T, self.n_head, H)
            kv_cache = (k_xsh, v_xsh)
        return drop(self, Linear(C, C, name="c_proj")(y_btnh.reshape(B, T, C)), rate), kv_cache


class MLP(nn.Module):
    n_embd: int

    @nn.compact
    def __call__(self, x_btc, rate=None):
        C = self.n_embd
        h_btf = nn.gelu(Linear(4 * C, C, name="c_fc")(x_btc), approximate=True)
        return drop(self, Linear(C, 4 * C, name="c_proj")(h_btf), rate)


class Block(nn.Module):
    """Pre-norm residual block of GPT-2 (Radford et al. 2019)."""

    n_embd: int
    n_head: int

    @nn.compact
    def __call__(self, x_btc, kv_cache=None, slot=None, seen_bs=None, rate=None):
        y_btc, kv_cache = CausalSelfAttention(self.n_embd, self.n_head, name="attn")(
            LayerNorm("ln_1")(x_btc), kv_cache, slot, seen_bs, rate)
        x_btc = x_btc + y_btc
        return x_btc + MLP(self.n_embd, name="mlp")(LayerNorm("ln_2")(x_btc), rate), kv_cache


class Transformer(nn.Module):
    """Transformer language model, exactly as in GPT-2 (Radford et al. 2019). Dropout (off unless
    `dropout` is given in training) where GPT-2 has it: on the token + position embeddings, on the
    attention weights, and on each residual branch's output before it is added."""

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

    def __call__(self, idx_bt, train: bool = False, dropout=None):
        rate = dropout if train else None
        x_btc = drop(self, self.wte(idx_bt) + self.wpe(jnp.arange(idx_bt.shape[1])), rate)
        for block in self.h:
            x_btc, _ = block(x_btc, rate=rate)
        return self.lm_head(self.ln_f(x_btc))

    def decode_init(self, batch_size):
        """A key/value cache per layer, and the number of steps decoded."""
        shape = (batch_size * self.n_head, self.block_size, self.n_embd // self.n_head)
        return {"step": jnp.zeros((), jnp.int32), "kv": [(jnp.zeros(shape), jnp.zeros(shape)) for _ in range(self.n_layer)]}

    def decode_step(self, carry, token_b, pos_b):
        """Every row writes step s's key and value to slot s % block_size, a ring: one slice for the
        whole batch (a scatter at each row's position took 44% of the step). Row b's sequence holds
        the last pos_b + 1 slots; older ones, an earlier sequence of the row, are masked out.
        Attention ignores key order (positions are in wpe), so the ring's order does not matter."""
        step, S = carry["step"], self.block_size
        slot, seen_bs = step % S, (step - jnp.arange(S)) % S <= pos_b[:, None]
        x_b1c = (self.wte(token_b) + self.wpe(pos_b))[:, None]
        kv = []
        for block, kv_cache in zip(self.h, carry["kv"]):
            x_b1c, kv_cache = block(x_b1c, kv_cache, slot, seen_bs)
            kv.append(kv_cache)
        return self.lm_head(self.ln_f(x_b1c))[:, 0], {"step": step + 1, "kv": kv}
