"""Population training: many models (seeds, and a grid of hyper-parameters) trained at once, in one
compiled program (`jax.vmap` of train.train_step) that shares the device-resident words.

Member i of `--population K` has seed `seed + i` for its initialisation, batches and dropout, and the
split of `split_seed` (default: seed): it is the standalone run `--seed seed+i --split-seed seed`.
`--sweep FIELD=V1,V2` (config.sweep "FIELD=V1,V2;FIELD=...") multiplies the members by a grid of the
optimiser's scalars, which sit in each member's optimiser state (optax.inject_hyperparams), and of the
dropout rate (a traced argument of each member's step); fields that
change shapes cannot differ within one program. checkpoints/latest holds the stacked state and each
member's best parameters, step and score, in one orbax checkpoint.
"""

import dataclasses
import functools
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mmjax import config as config_lib
from mmjax import optimizers, sampling, state, steps
from mmjax.errors import UserError

SWEEPABLE = (*optimizers.HYPERPARAMS, "seed", "dropout")


def is_population(config):
    return bool(config.population or config.sweep)


def parse_sweep(text):
    """"FIELD=V1,V2;FIELD=V3" -> {FIELD: [V1, V2], ...}."""
    sweep = {}
    for item in filter(None, text.split(";")):
        field, _, values = item.partition("=")
        field = field.strip().replace("-", "_")
        if field not in SWEEPABLE:
            raise UserError(f"cannot sweep {field!r}: the members share one compiled program, so only the "
                            "optimiser's scalars, the dropout rate and the seed may differ (n_embd, n_layer, type, "
                            f"... change shapes; train separate runs for them): sweep one of {', '.join(SWEEPABLE)}")
        kind = int if field == "seed" else float
        try:
            sweep[field] = [kind(v) for v in values.split(",")]
        except ValueError:
            raise UserError(f"--sweep {item}: give {field}= a comma-separated list of "
                            f"{'integers' if kind is int else 'numbers'}, e.g. {field}=1,2") from None
    return sweep


def members(config):
    """Each member's seed and swept fields: every setting of the sweep's grid in order, each with
    max(population, 1) seeds counted from the setting's seed (default: config.seed)."""
    sweep = parse_sweep(config.sweep)
    settings = [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())]
    return [{**setting, "seed": setting.get("seed", config.seed) + j}
            for setting in settings for j in range(max(config.population, 1))]


def member_configs(config):
    """Each member's standalone config: the run that it equals (its seed and hyper-parameters, the split's seed)."""
    return [config_lib.override(config.copy_and_resolve_references(),
                                {**member, "split_seed": config_lib.split_seed(config), "population": 0, "sweep": "",
                                 "pbt": False})
            for member in members(config)]


def setting(config, member_config):
    """A member's swept fields but the seed: the members that differ only by seed share it."""
    return {field: member_config[field] for field in parse_sweep(config.sweep) if field != "seed"}


def hyperparams(member_config):
    return {field: member_config[field] for field in ("seed", *optimizers.HYPERPARAMS, "dropout")}


def with_member_hyperparams(opt_state, configs):
    """The stacked optimiser state with each member's hyper-parameters (axis 0: the members)."""
    injected = opt_state[0]
    values = {name: jnp.asarray([c[name] for c in configs], value.dtype) for name, value in injected.hyperparams.items()}
    return (injected._replace(hyperparams=values), *opt_state[1:])


def with_hyperparams(configs, opt_state, rates):
    """The member configs with the optimiser's scalars of the stacked `opt_state` and the dropout `rates`
    (population-based training's, which change during the run)."""
    values = {k: jax.device_get(v).tolist() for k, v in optimizers.hyperparams(opt_state).items()}
    return [config_lib.override(c.copy_and_resolve_references(), {**{k: v[i] for k, v in values.items()},
                                                                 "dropout": rates[i]})
            for i, c in enumerate(configs)]


def create_states(config, vocab, configs):
    """The members' fresh states, stacked on the host: each is its standalone run's, made by the same compiled
    initialisation (one call per key), so a population compiles no initialisation of its own and every
    member starts exactly where its standalone run starts."""
    initialise = state.compiled_initialiser(state.initialiser_of(config, vocab))
    member_states = jax.device_get([initialise(jax.random.PRNGKey(c.seed)) for c in configs])
    states = jax.tree.map(lambda *leaves: np.stack(leaves), *member_states)
    return states.replace(opt_state=with_member_hyperparams(states.opt_state, configs))


def abstract_states(config, vocab, size):
    """The shapes and dtypes of `size` stacked states (nothing is computed)."""
    stacked = lambda leaf: jax.ShapeDtypeStruct((size, *leaf.shape), leaf.dtype, weak_type=leaf.weak_type)
    return jax.tree.map(stacked, state.abstract_train_state(config, vocab))


def initial_best(states):
    """Each member's best so far: none yet (score infinite)."""
    size = states.step.shape[0]
    return {"params": jax.tree.map(jnp.zeros_like, states.params),
            "batch_stats": jax.tree.map(jnp.zeros_like, states.batch_stats),
            "step": jnp.zeros(size, jnp.int32), "score": jnp.full(size, jnp.inf, jnp.float32)}


@jax.jit
def update_best(best, states, score_k):
    """Members whose score went down keep their current parameters as their best (a NaN never does)."""
    improved_k = score_k < best["score"]
    current = {"params": states.params, "batch_stats": states.batch_stats, "step": states.step, "score": score_k}
    pick = lambda new, old: jnp.where(improved_k.reshape((-1,) + (1,) * (new.ndim - 1)), new, old)
    return jax.tree.map(pick, current, best)


def describe(config, member_config):
    return ", ".join(f"{k}={v:g}" for k, v in {"seed": member_config.seed, **setting(config, member_config)}.items())


def summary(config, configs, metrics, score_name):
    """The end table: each member's best score and its step; per setting of the sweep the mean ± std over
    seeds, and the winner; the ensemble's last score."""
    best = {}
    for m in metrics:
        if "member" in m and score_name in m and math.isfinite(m[score_name]) and m[score_name] < best.get(m["member"], (math.inf,))[0]:
            best[m["member"]] = (m[score_name], m["step"])
    fields = ["seed", *(field for field in parse_sweep(config.sweep) if field != "seed")]
    rows = [["member", *fields, f"best {score_name}", "step"]]
    for i, c in enumerate(configs):
        score, step = best.get(i, (math.nan, "-"))
        rows.append([str(i), *(f"{c[f]:g}" for f in fields), f"{score:.4f}", str(step)])
    groups = {}
    for i, c in enumerate(configs):
        groups.setdefault(", ".join(f"{k}={v:g}" for k, v in setting(config, c).items()) or "all",
                          []).append(best.get(i, (math.nan,))[0])
    means = {name: (np.mean(scores), np.std(scores, ddof=1) if len(scores) > 1 else 0.0, len(scores))
             for name, scores in groups.items()}
    settings = [["setting", "seeds", f"{score_name} mean ± std"],
                *([name, str(n), f"{mean:.4f} ± {std:.4f}"] for name, (mean, std, n) in means.items())]
    lines = [*table(rows), "", *table(settings)]
    winner = min(means, key=lambda name: means[name][0] if math.isfinite(means[name][0]) else math.inf)
    lines.append(f"winner: {winner} ({score_name} {means[winner][0]:.4f} mean over {means[winner][2]} seed{'s' * (means[winner][2] > 1)})")
    ensemble = [m for m in metrics if f"ensemble_{score_name}" in m]
    if ensemble and best:
        lines.append(f"ensemble of the {len(configs)} members at step {ensemble[-1]['step']}: {score_name} "
                     f"{ensemble[-1][f'ensemble_{score_name}']:.4f} (best member's best: "
                     f"{min(b[0] for b in best.values()):.4f})")
    return "\n".join(lines + lineage(metrics))


def lineage(metrics):
    """Population-based training's exploits, member by member: whom it copied at which step, and its
    explored hyper-parameters from and to (the schedule they followed)."""
    exploits = [m["pbt"] for m in metrics if "pbt" in m]
    lines = ["", "exploits (member <- parent at step: hyper-parameters before -> after):"] if exploits else []
    for member in sorted({e["member"] for e in exploits}):
        moves = [f"step {e['step']} <- {e['parent']} (" + ", ".join(
            f"{k} {e['before'][k]:.3g} -> {e['after'][k]:.3g}" for k in e["after"] if e["after"][k] != e["before"][k])
            + ")" for e in exploits if e["member"] == member]
        lines.append(f"member {member}: " + "; ".join(moves))
    return lines


def table(rows):
    widths = [max(len(row[j]) for row in rows) for j in range(len(rows[0]))]
    return [" | ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


@dataclasses.dataclass(frozen=True)
class Mixture:
    """The ensemble as a model to sample from or score: the average of the members' next-token
    probabilities, through the decode interface that sampling.py drives (`block_size`, and
    `apply(variables, ..., method="decode_init" | "decode_step")`) and the full forward pass
    (`apply(variables, idx_bt)`, mmjax.scoring's), the members' variables stacked on axis 0."""

    model: Any

    @property
    def block_size(self):
        return self.model.block_size

    def apply(self, variables_k, *args, method=None):
        if method is None:  # every position at once: each member's logits, mixed per position
            return steps.mixture_logits(jax.vmap(lambda variables: self.model.apply(variables, *args))(variables_k))
        if method == "decode_init":
            return jax.vmap(lambda variables: self.model.apply(variables, *args, method=method))(variables_k)
        carry_k, *inputs = args  # decode_step(carry, token_b, ...): each member its carry, the same inputs
        logits_kbv, carry_k = jax.vmap(lambda variables, carry: self.model.apply(variables, carry, *inputs,
                                                                                 method=method))(variables_k, carry_k)
        return steps.mixture_logits(logits_kbv), carry_k


def abstract_checkpoint(config, vocab):
    """The shapes and dtypes of a population's checkpoint, to restore it (no initialisation is computed)."""
    configs = member_configs(config)
    states = abstract_states(config, vocab, len(configs))
    checkpoint = {"state": states, "best": jax.eval_shape(initial_best, states)}
    if config.pbt:  # the members' dropout rates, which the exploits change
        checkpoint["dropout"] = jax.ShapeDtypeStruct((len(configs),), jnp.float32)
    return checkpoint


def mesh(size):
    """The members' mesh: one "pop" axis over as many devices as divide `size`, every host's when several
    processes train together (each holds its members), else this process's; None for one device."""
    if jax.process_count() == 1:
        return sampling.local_mesh(size, "pop")
    devices = math.gcd(size, jax.device_count())
    return jax.make_mesh((devices,), ("pop",), (jax.sharding.AxisType.Auto,), devices=jax.devices()[:devices])


@jax.jit
def member_slice(tree, i):
    """Member i's slice of every leaf, in one compiled program per tree (i traced): sliced one leaf at a time, a
    device array compiles a program for each leaf's shape."""
    return jax.tree.map(lambda a: a[i], tree)


def unstack(tree, i):
    """Member i's slice of a stacked tree, as host (numpy) arrays: only that member's arrays leave the devices.
    Every process must call it at the same point (steps.fetch)."""
    return steps.fetch(member_slice(tree, i))
