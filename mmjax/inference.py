"""A trained work dir's model, and names from it: `sample(workdir, ...)` is the Python API's sampler."""

from typing import Any, NamedTuple

import jax

from mmjax import optimizers, sampling, train
from mmjax.errors import UserError
from mmjax.models import create_model
from mmjax.workdir import WorkDir


class Run(NamedTuple):
    """A trained run, as restored from its work dir."""

    config: Any
    dataset: Any
    model: Any
    state: Any


def load(workdir, which="best"):
    """The Run of a work dir's best (or latest) checkpoint; with ema_decay, its averaged parameters."""
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir, read_only=True)
    config, dataset = workdir.load_config(), workdir.load_dataset()
    state = workdir.restore(train.create_train_state(config, dataset.vocab, jax.random.PRNGKey(config.seed)), which)
    return Run(config, dataset, create_model(config, dataset.vocab.size, dataset.vocab.block_size),
               optimizers.evaluated(state))


def sample(workdir, num_samples=None, seed=None, temperature=None, top_k=None, top_p=None, prefix="",
           batch_size=1000, unique=False, new=False):
    """`num_samples` words from the best checkpoint of `workdir` (a path, a WorkDir or a loaded Run), as a
    list; prints nothing. Options left None take the run's config (50 samples, its seed, temperature 1,
    all tokens). Sample i depends only on (seed, i). `unique`: no word twice; `new`: no word of the
    training or test set (both: the first such words in sample order; a UserError if 100 draws per
    name asked do not give them)."""
    return draw(workdir, num_samples, seed, temperature, top_k, top_p, prefix, batch_size, unique, new)[0]


def draw(workdir, num_samples=None, seed=None, temperature=None, top_k=None, top_p=None, prefix="",
         batch_size=1000, unique=False, new=False):
    """`sample`'s words, and the number of samples drawn to get them."""
    config, dataset, model, state = workdir if isinstance(workdir, Run) else load(workdir)
    given = dict(num_samples=num_samples, seed=seed, temperature=temperature, top_k=top_k, top_p=top_p)
    options = {name: config[name] if value is None else value for name, value in given.items()}
    ranges = {"temperature": (options["temperature"] >= 0, "0 (greedy) or more"),
              "num_samples": (options["num_samples"] > 0, "1 or more"), "batch_size": (batch_size > 0, "1 or more"),
              "top_p": (0 < options["top_p"] <= 1, "above 0 and at most 1")}
    for name, (ok, allowed) in ranges.items():
        if not ok:
            value = batch_size if name == "batch_size" else options[name]
            raise UserError(f"sampling {name} must be {allowed}, got {value}: pass a value in that range")
    if len(prefix) >= dataset.vocab.block_size:
        raise UserError(f"prefix {prefix!r} is longer than the longest word ({dataset.vocab.max_word_length}): "
                        "shorten it")
    unknown = "".join(sorted(set(prefix) - set(dataset.vocab.chars)))
    if unknown:
        raise UserError(f"prefix has characters {unknown!r} that are not in the vocabulary: "
                        f"use only {''.join(dataset.vocab.chars)!r}")
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    seed, num_samples = options.pop("seed"), options.pop("num_samples")
    kwargs = dict(prefix=prefix, batch_size=batch_size, options=sampling.SampleOptions(**options),
                  compute_dtype=config.compute_dtype)
    if not (unique or new):
        return sampling.sample_words(model, variables, dataset.vocab, seed, num_samples, **kwargs), num_samples
    exclude = frozenset(dataset.train_words + dataset.val_words + dataset.test_words) if new else frozenset()
    return sampling.draw_words(model, variables, dataset.vocab, seed, num_samples, exclude=exclude, unique=unique,
                               **kwargs)
