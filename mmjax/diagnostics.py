"""Lecture 3's diagnostics: how activations, their gradients and the parameter updates are distributed.

For any model, on one training batch, in the training forward pass (batch statistics for BatchNorm):

- per layer, the layers being the model's top-level submodules (their output: the array returned,
  or the first element of a returned tuple; mlp_bn: the embedding `wte`, the tanh layer `hidden_0`,
  the logits `lm_head`; WaveNet also its three tanh levels; the Transformer wte, wpe, the blocks h_0..,
  ln_f, lm_head): the mean and std of the output, the fraction of it saturated (|x| > 0.97: for tanh
  layers, where tanh's gradient is below 6%), and the mean and std of the loss's gradient with
  respect to it. Outputs are read with a flax method interceptor and their gradients through a zero
  added to each; statistics cover the positions of the words (those with a target), not the padding.
- per weight matrix (the parameters with two dimensions, as the lecture plots): the mean and std of
  its gradient, grad:data = std(gradient) / std(weights), and update:data = std(update) / std(weights)
  for the update the optimiser would make with this gradient (the lecture aims at about 1e-3).

train.py turns this on (`record` is an evaluation hook of train.train_and_evaluate) and records them at each evaluation, on the same first batch of training words, in the
evaluation's line of metrics.jsonl (keys "layers" and "params"); the plots read them from there.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from mmjax import input_pipeline, losses

SATURATED = 0.97


def position_weights(out, real_bt):
    """1.0 at the word positions of a layer output laid out (B, T', ...) with T' >= T (models that pad
    on the left put the words in the last T) or (B*T, ...); 1.0 everywhere in other outputs."""
    (B, T), shape = real_bt.shape, out.shape
    if len(shape) >= 2 and shape[0] == B and shape[1] >= T:
        w = jnp.zeros(shape[:2]).at[:, -T:].set(real_bt)
    elif shape[0] == B * T:
        w = real_bt.reshape(-1)
    else:
        return jnp.ones(shape)
    return jnp.broadcast_to(w.reshape(w.shape + (1,) * (len(shape) - w.ndim)), shape)


def tapped_loss(params, taps, state, x_bt, y_bt, called=None):
    """The training loss, and each layer's output with taps[name] (a zero) added;
    `called` collects the layer names in the order the forward pass calls them."""
    outputs, active = {}, []  # active: the path lengths of the module calls under way

    def record(next_fun, args, kwargs, context):
        path = context.module.path
        # A layer is a child called by the model itself: not by the child's own code (a Dense subclass's
        # super().__call__) nor by another child (nn.RNN calling its cell inside a scan).
        is_layer = context.method_name == "__call__" and len(path) == 1 and not any(active)
        active.append(len(path))
        out, rest = next_fun(*args, **kwargs), ()
        active.pop()
        if is_layer and isinstance(out, tuple):  # e.g. a Transformer block's (output, key/value cache)
            out, *rest = out
        if is_layer and isinstance(out, jax.Array):
            out = outputs[path[0]] = out + taps.get(path[0], 0)
            if called is not None:
                called.append(path[0])
        return (out, *rest) if rest else out

    with nn.intercept_methods(record):
        return losses.loss_fn(params, state, x_bt, y_bt, train=True)[0], outputs


def layer_names(state, x_bt, y_bt):
    """The layers, in the order of the forward pass (jit returns dicts sorted by key)."""
    called = []
    jax.eval_shape(functools.partial(tapped_loss, called=called), state.params, {}, state, x_bt, y_bt)
    return called


@jax.jit
def layers_and_grads(state, x_bt, y_bt):
    """Each layer's output, the loss's gradient with respect to it, their position weights, and the
    parameters' gradients."""
    shapes = jax.eval_shape(tapped_loss, state.params, {}, state, x_bt, y_bt)[1]
    taps = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (d_params, d_outputs), outputs = jax.grad(tapped_loss, argnums=(0, 1), has_aux=True)(
        state.params, taps, state, x_bt, y_bt)
    real_bt = (y_bt != input_pipeline.IGNORE).astype(jnp.float32)
    weights = {name: position_weights(out, real_bt) for name, out in outputs.items()}
    return outputs, d_outputs, weights, d_params


def weighted_mean_std(x, w):
    mean = (w * x).sum() / w.sum()
    return mean, jnp.sqrt((w * (x - mean) ** 2).sum() / w.sum())


@jax.jit
def diagnostics(state, x_bt, y_bt):
    """{"layers": {name: {mean, std, saturated, grad_mean, grad_std}},
        "params": {path: {grad_mean, grad_std, grad_data, update_data}}} as scalars."""
    outputs, d_outputs, weights, d_params = layers_and_grads(state, x_bt, y_bt)
    layers = {}
    for name, out in outputs.items():
        w = weights[name]
        (mean, std), (grad_mean, grad_std) = weighted_mean_std(out, w), weighted_mean_std(d_outputs[name], w)
        saturated = (w * (jnp.abs(out) > SATURATED)).sum() / w.sum()
        layers[name] = dict(mean=mean, std=std, saturated=saturated, grad_mean=grad_mean, grad_std=grad_std)
    updates = state.tx.update(d_params, state.opt_state, state.params)[0]
    grads, updates = traverse_util.flatten_dict(d_params, sep="/"), traverse_util.flatten_dict(updates, sep="/")
    params = {path: dict(grad_mean=grads[path].mean(), grad_std=grads[path].std(),
                         grad_data=grads[path].std() / p.std(), update_data=updates[path].std() / p.std())
              for path, p in traverse_util.flatten_dict(state.params, sep="/").items() if p.ndim == 2}
    return {"layers": layers, "params": params}


def record(state, x_bt, y_bt):
    """diagnostics() as plain floats, for metrics.jsonl."""
    return jax.tree.map(float, jax.device_get(diagnostics(state, x_bt, y_bt)))
