"""Optimisers and learning-rate schedules, chosen by the config (`optimizer`, `lr_schedule`).

The hyper-parameters (HYPERPARAMS) sit in the optimiser state through `optax.inject_hyperparams`, as
arrays: they can differ per model under `jax.vmap`, and a resumed run changes them without compiling
again. The schedule multiplies the whole update, as a scheduled learning rate would. With `ema_decay`, the
last link keeps an average of the parameters (`average_params`), which evaluation uses (`evaluated`).
"""

import functools
import types
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from mmjax.errors import UserError

HYPERPARAMS = ("learning_rate", "weight_decay", "b1", "b2", "grad_clip")


def clip_by_global_norm(max_norm):
    """optax's clipping, off at max_norm 0: a `where`, not a Python `if`, so that the bound can be a traced
    value (one per model under vmap)."""
    clip = optax.clip_by_global_norm(max_norm)

    def update(updates, state, params=None):
        clipped, state = clip.update(updates, state, params)
        return jax.tree.map(lambda c, u: jnp.where(max_norm > 0, c, u), clipped, updates), state

    return optax.GradientTransformation(clip.init, update)


def adamw(learning_rate, weight_decay, b1, b2, grad_clip, eps):
    """makemore.py's AdamW (decoupled weight decay on every parameter)."""
    return optax.chain(clip_by_global_norm(grad_clip),
                       optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))


def sgd(learning_rate, weight_decay, b1, b2, grad_clip, eps):
    """The lectures' plain SGD, with weight decay added to the gradient (b1, b2, eps unused)."""
    del b1, b2, eps
    return optax.chain(clip_by_global_norm(grad_clip), optax.add_decayed_weights(weight_decay),
                       optax.sgd(learning_rate))


OPTIMIZERS = {"adamw": adamw, "sgd": sgd}

# Each schedule is a multiplier of the learning rate, a function of the step.
SCHEDULES = {
    "constant": lambda config: optax.constant_schedule(1.0),
    # the lectures' drop: x lr_decay_factor from step lr_decay_steps on
    "step": lambda config: optax.piecewise_constant_schedule(1.0, {config.lr_decay_steps: config.lr_decay_factor}),
    # linear warm-up from 0 over warmup_steps, then cosine decay to lr_decay_factor at max_steps
    "warmup_cosine": lambda config: optax.warmup_cosine_decay_schedule(
        0.0, 1.0, config.warmup_steps, max(config.max_steps, config.warmup_steps + 1), config.lr_decay_factor),
}


class AverageState(NamedTuple):
    count: jax.Array
    params: Any  # the average


def average_params(decay):
    """Polyak averaging (Polyak & Juditsky 1992) as an exponential moving average: after each update, the
    average moves towards the new parameters by 1 - d, with d = min(decay, (1 + t) / (10 + t)) at update t,
    so that it forgets the initialisation early on (TensorFlow's ExponentialMovingAverage). The updates pass
    unchanged. Written here: optax's `ema` averages updates, not parameters."""

    def init(params):
        return AverageState(jnp.zeros([], jnp.int32), params)

    def update(updates, state, params):
        d = jnp.minimum(decay, (1.0 + state.count) / (10.0 + state.count))
        average = jax.tree.map(lambda a, p: d * a + (1 - d) * p, state.params, optax.apply_updates(params, updates))
        return updates, AverageState(state.count + 1, average)

    return optax.GradientTransformation(init, update)


def evaluated(state):
    """The train state that evaluation, sampling and the best checkpoint use: with ema_decay, its parameters
    are the average's (the state's own keep training); else the state itself. Works on a population's stack."""
    average = next((s for s in state.opt_state if isinstance(s, AverageState)), None)
    return state if average is None else state.replace(params=average.params)


def make_optimizer(config):
    """config's optimiser: its init puts config's hyper-parameters in the state."""
    tx = optimizer_of(config)
    return optax.GradientTransformation(lambda params: with_hyperparams(tx.init(params), config), tx.update)


def optimizer_of(config):
    """The optimiser that config's train state holds: one object for every config that differs only in
    HYPERPARAMS (they live in the state, set by with_hyperparams), so its compiled steps are reused."""
    if config.optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {config.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if config.lr_schedule not in SCHEDULES:
        raise UserError(f"unknown lr_schedule {config.lr_schedule!r}: choose one of {', '.join(SCHEDULES)}")
    schedule = {f: config[f] for f in SCHEDULE_FIELDS[config.lr_schedule]}
    return _optimizer(config.optimizer, config.lr_schedule, tuple(schedule.items()), config.eps, config.ema_decay)


# the config fields each schedule reads
SCHEDULE_FIELDS = {"constant": (), "step": ("lr_decay_steps", "lr_decay_factor"),
                   "warmup_cosine": ("warmup_steps", "max_steps", "lr_decay_factor")}


@functools.lru_cache(maxsize=64)
def _optimizer(name, lr_schedule, schedule, eps, ema_decay):
    # the hyper-parameters' values here are placeholders of their dtype: with_hyperparams sets them
    optimizer = optax.inject_hyperparams(OPTIMIZERS[name], static_args="eps")(eps=eps, **dict.fromkeys(HYPERPARAMS, 0.0))
    scale = optax.scale_by_schedule(SCHEDULES[lr_schedule](types.SimpleNamespace(**dict(schedule))))
    if ema_decay:
        return optax.chain(optimizer, scale, average_params(ema_decay))
    return optax.chain(optimizer, scale)


def hyperparams(opt_state):
    """The hyper-parameters in an optimiser state made by make_optimizer."""
    return opt_state[0].hyperparams


def with_hyperparams(opt_state, config):
    """The optimiser state with the config's hyper-parameters (a resumed run may have changed them)."""
    injected = opt_state[0]
    values = {name: jnp.full_like(value, config[name]) for name, value in injected.hyperparams.items()}
    return (injected._replace(hyperparams=values), *opt_state[1:])


def learning_rate(opt_state, config):
    """The learning rate of the next step."""
    schedule = SCHEDULES[config.lr_schedule](config)
    return hyperparams(opt_state)["learning_rate"] * schedule(opt_state[1].count)
