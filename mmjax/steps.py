"""The compiled steps, pure functions of a train state: a dispatch of training steps and an evaluation,
for one model (its batch split over the devices) and for a population (`jax.vmap` over its members)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import input_pipeline, losses


def train_step(state, x_nt, y_nt, batch_size, value_and_grad=losses.value_and_grad, compute_dtype="float32",
               batch_sharding=None, dropout=None):
    """One optimiser step on a batch drawn with replacement from the device-resident training set;
    with `batch_sharding`, each device computes its slice of the batch (data parallelism). `dropout`: the
    rate, a traced scalar (state.dropout_rate); None compiles no dropout at all."""
    rng, batch_key = jax.random.split(state.rng)
    idx_b = jax.random.randint(batch_key, (batch_size,), 0, x_nt.shape[0])
    x_bt, y_bt = x_nt[idx_b], y_nt[idx_b]
    if batch_sharding is not None:
        x_bt, y_bt = jax.lax.with_sharding_constraint((x_bt, y_bt), batch_sharding)
    (loss, batch_stats), grads = value_and_grad(state.params, state, x_bt, y_bt, train=True,
                                                dropout_key=jax.random.fold_in(batch_key, 1),
                                                compute_dtype=compute_dtype,
                                                **({} if dropout is None else {"dropout": dropout}))
    return state.apply_gradients(grads=grads).replace(rng=rng, batch_stats=batch_stats), loss


MAX_DISPATCH = 1000  # steps per call at most: the count is traced, so one program serves every dispatch length


def repeat(step, state, num_steps, loss_shape=()):
    """`step(state) -> (state, loss)` run `num_steps` times (traced) in one loop; the state and the losses in a
    (MAX_DISPATCH, *loss_shape) buffer: each step's, then zeros (a step past MAX_DISPATCH keeps no loss)."""

    def body(i, carry):
        state, losses = carry
        state, loss = step(state)
        return state, losses.at[i].set(loss)

    return jax.lax.fori_loop(0, num_steps, body, (state, jnp.zeros((MAX_DISPATCH, *loss_shape), jnp.float32)))


@functools.partial(jax.jit, static_argnames=("batch_size", "value_and_grad", "compute_dtype", "batch_sharding"),
                   donate_argnames=("state",))
def train_steps(state, x_nt, y_nt, dropout=None, *, num_steps, batch_size, value_and_grad=losses.value_and_grad,
                compute_dtype="float32", batch_sharding=None):
    """`num_steps` (traced, at most MAX_DISPATCH) train steps in one dispatch; returns the new state and the
    losses, (MAX_DISPATCH,): each step's first (run_steps takes any number of steps, and keeps theirs)."""
    step = functools.partial(train_step, x_nt=x_nt, y_nt=y_nt, batch_size=batch_size, value_and_grad=value_and_grad,
                             compute_dtype=compute_dtype, batch_sharding=batch_sharding, dropout=dropout)
    return repeat(step, state, num_steps)


@functools.partial(jax.jit, static_argnames=("batch_size", "value_and_grad", "compute_dtype", "spmd_axis", "members"),
                   donate_argnames=("states",))
def population_train_steps(states, x_nt, y_nt, dropout_k=None, *, num_steps, batch_size,
                           value_and_grad=losses.value_and_grad, compute_dtype="float32", spmd_axis=None,
                           members="vmap"):
    """`num_steps` (traced, at most MAX_DISPATCH) steps of every member in one dispatch: train_step vmapped over the
    members (`members="map"`: jax.lax.map, one member after the other in the same program), each with its dropout
    rate (dropout_k; None: no dropout); returns the new states and the losses (MAX_DISPATCH, members)."""
    step = lambda state, dropout: train_step(state, x_nt, y_nt, batch_size, value_and_grad, compute_dtype,
                                             dropout=dropout)
    each = (jax.vmap(step, spmd_axis_name=spmd_axis) if members == "vmap"
            else lambda s, d: jax.lax.map(lambda member: step(*member), (s, d)))
    return repeat(lambda s: each(s, dropout_k), states, num_steps, states.step.shape)


def run_steps(dispatch, state, num_steps):
    """`dispatch(state, n) -> (state, losses buffer)` (train_steps or population_train_steps with their arguments)
    for `num_steps` steps, MAX_DISPATCH at a time; the state and the host copy of each step's losses."""
    calls = []
    while num_steps > 0:
        n = min(num_steps, MAX_DISPATCH)
        state, losses = dispatch(state, n)
        calls.append((losses, n))  # fetched after the last call: no wait between them
        num_steps -= n
    return state, np.concatenate([fetch(losses)[:n] for losses, n in calls])


@functools.partial(jax.jit, static_argnames="compute_dtype")
def eval_step(state, x_bt, y_bt, compute_dtype="float32"):
    """Summed NLL and the count of targets."""
    return losses.cross_entropy(losses.forward(state, state.params, x_bt, compute_dtype=compute_dtype)[0], y_bt)


def mixture_logits(logits_k_v):
    """Log of the average of the members' probabilities (axis 0): the ensemble's next-token distribution."""
    return jax.nn.logsumexp(jax.nn.log_softmax(logits_k_v), axis=0) - jnp.log(logits_k_v.shape[0])


@functools.partial(jax.jit, static_argnames=("compute_dtype", "spmd_axis"))
def population_eval_step(states, x_bt, y_bt, compute_dtype="float32", spmd_axis=None):
    """Summed NLL of each member and, last, of their ensemble; and the count of targets."""
    forward = lambda state: losses.forward(state, state.params, x_bt, compute_dtype=compute_dtype)[0]
    logits_kbtv = jax.vmap(forward, spmd_axis_name=spmd_axis)(states)
    nll_k, _ = jax.vmap(losses.cross_entropy, (0, None))(logits_kbtv, y_bt)
    nll, count = losses.cross_entropy(mixture_logits(logits_kbtv), y_bt)
    return jnp.append(nll_k, nll), count


def fetch(tree):
    """Host (numpy) copies of a tree's arrays; those spread over several hosts' devices (a population's on the
    "pop" axis) gathered from all of them, so every process must call it at the same point."""
    from jax.experimental import multihost_utils

    def one(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        return np.asarray(jax.device_get(a))

    return jax.tree.map(one, tree)


def evaluate(state, x_nt, y_nt, batch_size, compute_dtype="float32", step=eval_step):
    """Per-character NLL over the whole set, in fixed-size chunks (padding is masked) so it compiles once.
    `step(state, x_bt, y_bt, compute_dtype)` -> (summed NLL, count); a population's sums are an array."""
    pad = -len(x_nt) % batch_size
    x_nt = jnp.pad(x_nt, ((0, pad), (0, 0)))
    y_nt = jnp.pad(y_nt, ((0, pad), (0, 0)), constant_values=input_pipeline.IGNORE)
    nll_sum, count = 0.0, 0
    for i in range(0, len(x_nt), batch_size):
        s, c = step(state, x_nt[i:i + batch_size], y_nt[i:i + batch_size], compute_dtype)
        s, c = fetch((s, c))
        nll_sum, count = nll_sum + s.astype(np.float64), count + int(c)
    return nll_sum / count
