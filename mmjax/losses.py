"""The forward pass and the loss every trainer, lecture tool and converter shares (nanodo's loss.py)."""

import jax
import jax.numpy as jnp
import optax

from mmjax import precision
from mmjax.input_pipeline import IGNORE


def cross_entropy(logits_btv, y_bt):
    """Summed NLL over targets that are not IGNORE, and their count."""
    mask_bt = y_bt != IGNORE
    nll_bt = optax.softmax_cross_entropy_with_integer_labels(logits_btv, jnp.where(mask_bt, y_bt, 0))
    return jnp.sum(nll_bt * mask_bt), jnp.sum(mask_bt)


def forward(state, params, x_bt, train=False, dropout_key=None, compute_dtype="float32", dropout=None):
    """Logits, and the BatchNorm statistics: updated from the batch when training. `compute_dtype`
    (mmjax/precision.py): "float32", true float32 on every device; "tf32", its matrix products in TF32;
    "bfloat16", mixed precision: the passes in bfloat16, parameters and statistics stay float32. Its matmul
    precision holds for the gradient's products too (they take the forward's). `dropout`: the rate when
    training (models that have dropout; None: off)."""
    cast = lambda tree, dtype: jax.tree.map(lambda a: a.astype(dtype), tree)
    variables = {"params": cast(params, precision.pass_dtype(compute_dtype)), "batch_stats": state.batch_stats}
    with precision.matmuls(compute_dtype):
        if not train:
            return state.apply_fn(variables, x_bt).astype(jnp.float32), state.batch_stats
        rngs = {} if dropout_key is None else {"dropout": dropout_key}
        rate = {} if dropout is None else {"dropout": dropout}  # models without dropout take no rate
        logits_btv, updates = state.apply_fn(variables, x_bt, train=True, rngs=rngs, mutable=["batch_stats"], **rate)
    return logits_btv.astype(jnp.float32), cast(updates.get("batch_stats", state.batch_stats), jnp.float32)


def loss_fn(params, state, x_bt, y_bt, train=False, dropout_key=None, compute_dtype="float32", dropout=None):
    """Mean NLL per character, and the BatchNorm statistics as `forward` returns them."""
    logits_btv, batch_stats = forward(state, params, x_bt, train, dropout_key, compute_dtype, dropout)
    nll_sum, count = cross_entropy(logits_btv, y_bt)
    return nll_sum / count, batch_stats


# The trainer's default gradient: ((loss, batch_stats), grads) = value_and_grad(params, state, x_bt, y_bt,
# train=True, dropout_key=..., compute_dtype=..., [dropout=rate]). mmjax.backprop.value_and_grad is a drop-in
# (for mlp_bn, which has no dropout: the trainer passes a rate only when there is one).
value_and_grad = jax.value_and_grad(loss_fn, has_aux=True)
