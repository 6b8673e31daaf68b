"""A trained work dir's model, and names from it: `sample(workdir, ...)` is the Python API's sampler."""

import types
from typing import Any, NamedTuple

import numpy as np

from mmjax import optimizers, population, sampling, state
from mmjax.errors import UserError
from mmjax.models import create_model
from mmjax.workdir import WorkDir


class Run(NamedTuple):
    """A trained run, as restored from its work dir."""

    config: Any
    dataset: Any
    model: Any
    state: Any


def load(workdir, member=None, ensemble=False, which="best"):
    """The Run of a work dir's best checkpoint (one model: or its `which="latest"`), with averaged parameters
    if it averages them (ema_decay). For a population: member `member` (default: the one with the lowest
    best score) at its best step, or with `ensemble` the mixture of every member at its best step."""
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir, read_only=True)
    config, dataset = workdir.load_config(), workdir.load_dataset()
    model = create_model(config, dataset.vocab.size, dataset.vocab.block_size)
    if not population.is_population(config):
        if member is not None or ensemble:
            raise UserError(f"{workdir.path} holds one model, not a population: drop --member and --ensemble")
        best = workdir.checkpoints.restore(state.abstract_train_state(config, dataset.vocab), which)
        check_restored(best, workdir)
        return Run(config, dataset, model, optimizers.evaluated(best))
    if member is not None and ensemble:
        raise UserError("--member and --ensemble exclude each other: pass one")
    configs = population.member_configs(config)
    if member is not None and not 0 <= member < len(configs):
        raise UserError(f"--member {member} is not in the population: pass one of 0..{len(configs) - 1}")
    restored = workdir.checkpoints.restore(population.abstract_checkpoint(config, dataset.vocab))
    check_restored(restored, workdir)
    best = restored["best"]
    if ensemble:
        return Run(config, dataset, population.Mixture(model), types.SimpleNamespace(**best))
    member = int(np.argmin(best["score"])) if member is None else member
    return Run(configs[member], dataset, model, types.SimpleNamespace(**population.unstack(best, member), member=member))


def check_restored(restored, workdir):
    if restored is None:
        raise UserError(f"{workdir.path} has no checkpoint yet (the run stopped before its first evaluation): "
                        f"train.py -o {workdir.path} --resume")


def sample(workdir, num_samples=None, seed=None, temperature=None, top_k=None, top_p=None, prefix="",
           batch_size=1000, unique=False, new=False, member=None, ensemble=False, **constraints):
    """`num_samples` words from the best checkpoint of `workdir` (a path, a WorkDir or a loaded Run), as a
    list; prints nothing. A population's: its best member's, member `member`'s, or its `ensemble`'s. Options
    left None take the run's config (50 samples, its seed, temperature 1, all tokens). Sample i depends only
    on (seed, i). `unique`: no word twice; `new`: no word of the training or test set; `constraints`
    (`suffix`, `contains`, `regex` (re.fullmatch), `min_length`, `max_length`): only such names
    (sampling.Constraint). With any of these: the first such words in sample order; a UserError if 100 draws
    per name asked (1000 with a constraint) do not give them."""
    return draw(workdir, num_samples, seed, temperature, top_k, top_p, prefix, batch_size, unique, new, member,
                ensemble, **constraints)[0]


def draw(workdir, num_samples=None, seed=None, temperature=None, top_k=None, top_p=None, prefix="",
         batch_size=1000, unique=False, new=False, member=None, ensemble=False, **constraints):
    """`sample`'s words, and the number of samples drawn to get them."""
    config, dataset, model, restored = workdir if isinstance(workdir, Run) else load(workdir, member, ensemble)
    given = dict(num_samples=num_samples, seed=seed, temperature=temperature, top_k=top_k, top_p=top_p)
    options = {name: config[name] if value is None else value for name, value in given.items()}
    ranges = {"temperature": (options["temperature"] >= 0, "0 (greedy) or more"),
              "num_samples": (options["num_samples"] > 0, "1 or more"), "batch_size": (batch_size > 0, "1 or more"),
              "top_p": (0 < options["top_p"] <= 1, "above 0 and at most 1")}
    for name, (ok, allowed) in ranges.items():
        if not ok:
            value = batch_size if name == "batch_size" else options[name]
            raise UserError(f"sampling {name} must be {allowed}, got {value}: pass a value in that range")
    constraint = sampling.Constraint(prefix, **constraints)
    constraint.check(dataset.vocab)
    variables = {"params": restored.params, "batch_stats": restored.batch_stats}
    seed, num_samples = options.pop("seed"), options.pop("num_samples")
    kwargs = dict(prefix=prefix, batch_size=batch_size, options=sampling.SampleOptions(**options),
                  compute_dtype=config.compute_dtype)
    if not (unique or new or constraint.filters):
        return sampling.sample_words(model, variables, dataset.vocab, seed, num_samples, **kwargs), num_samples
    exclude = frozenset(dataset.train_words + dataset.val_words + dataset.test_words) if new else frozenset()
    return sampling.draw_words(model, variables, dataset.vocab, seed, num_samples, exclude=exclude, unique=unique,
                               constraint=constraint, **kwargs)
