"""Population-based training (Jaderberg et al. 2017): every `pbt_every` evaluations the members are ranked
on their validation loss, and each member of the bottom `pbt_fraction` copies one of the top fraction: all
of its train state (parameters, optimiser state with its averaged parameters, BatchNorm statistics) but
its own key, so that it draws its own batches; then each explored hyper-parameter (`pbt_fields`) is
multiplied by a factor drawn from `pbt_perturb` and clipped to RANGES. The choices come from a generator
seeded by the run's seed and the step: the same command gives the same run. An exploit is a gather over
the member axis of the stacked state, between two dispatches of the one compiled program."""

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import optimizers
from mmjax.errors import UserError

# where an explored hyper-parameter may go
RANGES = {"learning_rate": (1e-6, 1.0), "weight_decay": (0.0, 10.0), "b1": (0.0, 0.999), "b2": (0.0, 0.9999),
          "grad_clip": (0.0, 1e3), "dropout": (0.0, 0.9)}


def fields(config):
    return [f.strip() for f in config.pbt_fields.split(",") if f.strip()]


def factors(config):
    try:
        values = [float(v) for v in config.pbt_perturb.split(",")]
    except ValueError:
        values = []
    if not values or not all(v > 0 for v in values):
        raise UserError(f"--pbt-perturb {config.pbt_perturb!r}: give positive factors separated by commas, "
                        "e.g. 0.8,1.25")
    return values


def check(config):
    """The refusals of a PBT config, before anything is written."""
    if not (config.population or config.sweep):
        raise UserError("--pbt trains a population: add --population K (at least 2) or --sweep")
    if not config.val_size:
        raise UserError("--pbt ranks the members on the validation loss: add --val-size N (e.g. 1000)")
    unknown = [f for f in fields(config) if f not in RANGES]
    if unknown or not fields(config):
        raise UserError(f"--pbt-fields {config.pbt_fields!r}: explore the members' hyper-parameters, a comma-"
                        f"separated list of {', '.join(RANGES)}")
    if not 0 < config.pbt_fraction <= 0.5:
        raise UserError(f"--pbt-fraction must be above 0 and at most 0.5, got {config.pbt_fraction}: pass e.g. 0.25")
    if config.pbt_every < 1:
        raise UserError(f"--pbt-every must be 1 or more, got {config.pbt_every}: pass the evaluations between exploits")
    factors(config)


def due(config, step, max_steps):
    """Whether the evaluation at `step` ends with an exploit (not the last: nothing would train on)."""
    return bool(config.pbt) and step < max_steps and (step // config.eval_every) % config.pbt_every == 0


def plan(config, step, val_k):
    """[(member, parent, {field: factor})]: the bottom fraction by validation loss (NaN last), each with a
    parent drawn from the top fraction and a factor per explored field."""
    size = len(val_k)
    count = max(1, int(size * config.pbt_fraction))
    order = np.argsort(np.where(np.isfinite(val_k), val_k, np.inf), kind="stable")
    top, bottom = order[:count], order[size - count:]
    rng = np.random.default_rng([config.seed, step])
    return [(int(member), int(rng.choice(top)), {f: float(rng.choice(factors(config))) for f in fields(config)})
            for member in bottom]


def exploit(states, rates_k, exploits):
    """The stacked states and dropout rates (rates_k) after `exploits`: each member's state is its parent's,
    its own key kept, its explored hyper-parameters the parent's times the factors, clipped; and what
    changed, {member: (before, after)} of the explored fields."""
    source_k = np.arange(len(rates_k))
    for member, parent, _ in exploits:
        source_k[member] = parent
    gather = lambda tree: jax.tree.map(lambda a: a[source_k], tree)
    hyperparams = {k: np.asarray(v) for k, v in optimizers.hyperparams(states.opt_state).items()}
    new = {**{k: v[source_k] for k, v in hyperparams.items()}, "dropout": np.asarray(rates_k)[source_k]}
    changes = {}
    for member, _, factor in exploits:
        before = {f: float(rates_k[member] if f == "dropout" else hyperparams[f][member]) for f in factor}
        for field, f in factor.items():
            new[field][member] = np.clip(new[field][member] * f, *RANGES[field])
        changes[member] = (before, {f: float(new[f][member]) for f in factor})
    opt_state = gather(states.opt_state)
    injected = opt_state[0]
    values = {k: jnp.asarray(new[k], v.dtype) for k, v in injected.hyperparams.items()}
    copied = states.replace(params=gather(states.params), batch_stats=gather(states.batch_stats),
                            opt_state=(injected._replace(hyperparams=values), *opt_state[1:]))
    return copied, new["dropout"].astype(np.float32), changes
