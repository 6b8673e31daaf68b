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
import sys
import types
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax import config as config_lib
from mmjax import inference, losses, optimizers, sampling, stopping, train
from mmjax.errors import UserError
from mmjax.models import create_model
from mmjax.workdir import WorkDir

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
    if config.population < 0:
        raise UserError(f"population must be at least 1, got {config.population}: pass the number of seeds")
    sweep = parse_sweep(config.sweep)
    settings = [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())]
    return [{**setting, "seed": setting.get("seed", config.seed) + j}
            for setting in settings for j in range(max(config.population, 1))]


def member_configs(config):
    """Each member's standalone config: the run that it equals (its seed and hyper-parameters, the split's seed)."""
    return [config_lib.override(config.copy_and_resolve_references(),
                                {**member, "split_seed": config_lib.split_seed(config), "population": 0, "sweep": ""})
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


def create_states(config, vocab, configs):
    """The members' fresh states, stacked: create_train_state vmapped over their keys."""
    keys_k = jnp.stack([jax.random.PRNGKey(c.seed) for c in configs])
    states = jax.jit(jax.vmap(lambda key: train.create_train_state(config, vocab, key)))(keys_k)
    return states.replace(opt_state=with_member_hyperparams(states.opt_state, configs))


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


def to_devices(stacked, shared, mesh):
    """Members split over the mesh's "pop" axis (no gradient crosses devices), the words replicated."""
    if mesh is None:
        return jax.device_put((stacked, shared))
    return jax.device_put(stacked, NamedSharding(mesh, P("pop"))), jax.device_put(shared, NamedSharding(mesh, P()))


@functools.partial(jax.jit, static_argnames=("num_steps", "batch_size", "value_and_grad", "compute_dtype",
                                             "spmd_axis", "members"), donate_argnames=("states",))
def train_steps(states, x_nt, y_nt, dropout_k=None, *, num_steps, batch_size, value_and_grad=losses.value_and_grad,
                compute_dtype="float32", spmd_axis=None, members="vmap"):
    """`num_steps` steps of every member in one dispatch: train.train_step vmapped over the members
    (`members="map"`: jax.lax.map, one member after the other in the same program), each with its dropout
    rate (dropout_k; None: no dropout); returns the new states and the losses (num_steps, members)."""
    step = lambda state, dropout: train.train_step(state, x_nt, y_nt, batch_size, value_and_grad, compute_dtype,
                                                   dropout=dropout)
    each = (jax.vmap(step, spmd_axis_name=spmd_axis) if members == "vmap"
            else lambda s, d: jax.lax.map(lambda member: step(*member), (s, d)))
    return jax.lax.scan(lambda s, _: each(s, dropout_k), states, length=num_steps)


def mixture_logits(logits_k_v):
    """Log of the average of the members' probabilities (axis 0): the ensemble's next-token distribution."""
    return jax.nn.logsumexp(jax.nn.log_softmax(logits_k_v), axis=0) - jnp.log(logits_k_v.shape[0])


@functools.partial(jax.jit, static_argnames=("compute_dtype", "spmd_axis"))
def eval_step(states, x_bt, y_bt, compute_dtype="float32", spmd_axis=None):
    """Summed NLL of each member and, last, of their ensemble; and the count of targets."""
    forward = lambda state: losses.forward(state, state.params, x_bt, compute_dtype=compute_dtype)[0]
    logits_kbtv = jax.vmap(forward, spmd_axis_name=spmd_axis)(states)
    nll_k, _ = jax.vmap(losses.cross_entropy, (0, None))(logits_kbtv, y_bt)
    nll, count = losses.cross_entropy(mixture_logits(logits_kbtv), y_bt)
    return jnp.append(nll_k, nll), count


def check_resumable(config, workdir):
    saved = workdir.load_config()
    if (saved.population, saved.sweep) != (config.population, config.sweep):
        raise UserError(f"{workdir.path} holds a run with population={saved.population} sweep={saved.sweep!r}, not "
                        f"population={config.population} sweep={config.sweep!r}: drop --population and --sweep to "
                        "continue it, or pass another -o")


def train_and_evaluate(config, workdir, input_file=None, *, encoding="utf-8", max_word_length=None,
                       value_and_grad=losses.value_and_grad, progress=True):
    """train.train_and_evaluate for a population (config.population seeds x config.sweep's grid): a new run
    in `workdir`, or the population it holds resumed. Logs each member's losses and the ensemble's, prints
    a table of the members at the end; returns the final stacked state. SIGINT or SIGTERM stops it as it
    stops train.train_and_evaluate: evaluated and saved at the end of the dispatch, then stopping.Stopped."""
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    configs = member_configs(config)  # checks the sweep before anything is written
    if getattr(create_model(config, 1, 1), "fit", None):
        raise UserError(f"{config.type} is fitted in closed form, so its members would all be the same: "
                        "train it without --population and --sweep")
    resumed = workdir.has_run
    if resumed:
        check_resumable(config, workdir)
        dataset = train.resumed_dataset(config, workdir, input_file)
    else:
        dataset = train.new_dataset(config, workdir, input_file, encoding, max_word_length)
    vocab, train_words = dataset.vocab, dataset.train_words
    states = create_states(config, vocab, configs)
    checkpoint = workdir.restore({"state": states, "best": initial_best(states)})
    states, best = checkpoint["state"], checkpoint["best"]
    states = states.replace(opt_state=with_member_hyperparams(states.opt_state, configs))  # a resume may change them
    step = int(states.step[0])
    if resumed:
        workdir.drop_metrics_after(step)
    eval_sets = train.evaluation_sets(dataset, config)
    mesh = sampling.local_mesh(len(configs), "pop")
    spmd_axis = None if mesh is None else "pop"
    if jax.process_index() == 0:
        devices = 1 if mesh is None else mesh.size
        print(f"population: {len(configs)} members on {devices} {jax.devices()[0].platform} "
              f"device{'s' * (devices > 1)}, {len(configs) // devices} on each")
    rates = [c.dropout for c in configs]
    dropout_k = jnp.asarray(rates, jnp.float32) if any(rates) else None  # None: no dropout compiled
    (states, best, dropout_k), ((x_nt, y_nt), eval_sets) = to_devices(
        (states, best, dropout_k), (vocab.encode_words(train_words), eval_sets), mesh)
    score_name = train.best_score_name(eval_sets)
    evaluate = functools.partial(train.evaluate, batch_size=config.eval_batch_size, compute_dtype=config.compute_dtype,
                                 step=functools.partial(eval_step, spmd_axis=spmd_axis))
    diverged, max_steps = set(), train.last_step(config)
    from tqdm import tqdm

    with stopping.on_signals() as stop, workdir.logger() as log, \
            tqdm(total=None if max_steps == math.inf else max_steps, initial=step, disable=not progress, unit="step",
                 dynamic_ncols=True) as bar:
        while step < max_steps:
            num_steps = train.next_stop(step, config) - step
            states, losses_sk = train_steps(states, x_nt, y_nt, dropout_k, num_steps=num_steps,
                                            batch_size=config.batch_size, value_and_grad=value_and_grad,
                                            compute_dtype=config.compute_dtype, spmd_axis=spmd_axis)
            step += num_steps
            losses_k = np.asarray(jax.device_get(losses_sk))[-1]
            signum = stop.requested()  # once per dispatch, by every process
            bar.update(num_steps)
            bar.set_postfix(best=f"{np.nanmin(losses_k):.4f}", median=f"{np.nanmedian(losses_k):.4f}")
            log.write({"step": step, "losses": losses_k.tolist()})
            for i in sorted(set(np.flatnonzero(~np.isfinite(losses_k)).tolist()) - diverged):
                diverged.add(i)  # the others train on; its best stays its last finite evaluation
                bar.write(f"warning: member {i} ({describe(config, configs[i])}) diverged: loss {losses_k[i]} at "
                          f"step {step}", file=sys.stderr)
            if step % config.eval_every and step != max_steps and not signum:
                continue
            evaluated = optimizers.evaluated(states)
            metrics = {name: evaluate(evaluated, *xy) for name, xy in eval_sets.items()}  # each: members, then ensemble
            for i, member in enumerate(configs):
                log.write({"step": step, "member": i, **hyperparams(member),
                           **{name: float(v[i]) for name, v in metrics.items()}})
            ensemble = {f"ensemble_{name}": float(v[-1]) for name, v in metrics.items()}
            log.write({"step": step, **ensemble})
            scores_k = metrics[score_name][:-1]
            bar.write(f"step {step} | {score_name} best {np.nanmin(scores_k):.4f} median {np.nanmedian(scores_k):.4f}"
                      f" | ensemble {ensemble['ensemble_' + score_name]:.4f}")
            best = update_best(best, evaluated, jnp.asarray(scores_k, jnp.float32))
            workdir.save_population({"state": states, "best": best}, step)
            if signum and step < max_steps:
                raise stopping.Stopped(step, signum)
    if jax.process_index() == 0:
        print(summary(config, configs, workdir.metrics(), score_name))
    return states


def describe(config, member_config):
    return ", ".join(f"{k}={v:g}" for k, v in {"seed": member_config.seed, **setting(config, member_config)}.items())


def summary(config, configs, metrics, score_name):
    """The end table: each member's best score and its step; per setting of the sweep the mean ± std over
    seeds, and the winner; the ensemble's last score."""
    best = {}
    for m in metrics:
        if "member" in m and math.isfinite(m[score_name]) and m[score_name] < best.get(m["member"], (math.inf,))[0]:
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
    return "\n".join(lines)


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
            return mixture_logits(jax.vmap(lambda variables: self.model.apply(variables, *args))(variables_k))
        if method == "decode_init":
            return jax.vmap(lambda variables: self.model.apply(variables, *args, method=method))(variables_k)
        carry_k, *inputs = args  # decode_step(carry, token_b, ...): each member its carry, the same inputs
        logits_kbv, carry_k = jax.vmap(lambda variables, carry: self.model.apply(variables, carry, *inputs,
                                                                                 method=method))(variables_k, carry_k)
        return mixture_logits(logits_kbv), carry_k


def abstract_checkpoint(config, vocab):
    """The shapes and dtypes of a population's checkpoint, to restore it (no initialisation is computed)."""
    states = jax.eval_shape(lambda: create_states(config, vocab, member_configs(config)))
    return {"state": states, "best": jax.eval_shape(initial_best, states)}


def load(workdir, member=None, ensemble=False):
    """The inference.Run to sample or export: a single model's best checkpoint; for a population, member
    `member` (default: the one with the lowest best score) at its best step, or with `ensemble` the mixture
    of every member at its best step."""
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir, read_only=True)
    config = workdir.load_config()
    if not is_population(config):
        if member is not None or ensemble:
            raise UserError(f"{workdir.path} holds one model, not a population: drop --member and --ensemble")
        return inference.load(workdir)
    if member is not None and ensemble:
        raise UserError("--member and --ensemble exclude each other: pass one")
    dataset, configs = workdir.load_dataset(), member_configs(config)
    restored = workdir.restore(abstract_checkpoint(config, dataset.vocab))
    if isinstance(restored["best"]["score"], jax.ShapeDtypeStruct):  # no checkpoint: restore gave its argument back
        raise UserError(f"{workdir.path} has no checkpoint yet (the run stopped before its first evaluation): "
                        f"train.py -o {workdir.path} --resume")
    best = restored["best"]
    model = create_model(config, dataset.vocab.size, dataset.vocab.block_size)
    if ensemble:
        return inference.Run(config, dataset, Mixture(model), types.SimpleNamespace(**best))
    if member is None:
        member = int(jnp.argmin(best["score"]))
    if not 0 <= member < len(configs):
        raise UserError(f"--member {member} is not in the population: pass one of 0..{len(configs) - 1}")
    return inference.Run(configs[member], dataset, model, types.SimpleNamespace(**jax.tree.map(lambda a: a[member], best)))
