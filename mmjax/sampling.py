"""Compiled, batched sampling (full recompute: each step re-runs the model on the whole buffer)."""

import functools

import jax
import jax.numpy as jnp

from mmjax.input_pipeline import STOP


@functools.partial(jax.jit, static_argnames=("model", "num_samples", "top_k"))
def sample(model, params, key, *, num_samples, temperature=1.0, top_k=-1):
    """Tokens (num_samples, block_size - 1): each row a word, then STOP, then anything.

    Sample i draws its randomness from fold_in(key, i) only, so it does not depend on num_samples.
    """
    block_size = model.block_size
    sample_keys = jax.vmap(jax.random.fold_in, (None, 0))(key, jnp.arange(num_samples))

    def step(t, idx_nt):
        logits_nv = model.apply({"params": params}, idx_nt)[:, t, :] / temperature
        if top_k > 0:
            kth_n1 = jax.lax.top_k(logits_nv, top_k)[0][:, -1:]
            logits_nv = jnp.where(logits_nv < kth_n1, -jnp.inf, logits_nv)
        step_keys = jax.vmap(jax.random.fold_in, (0, None))(sample_keys, t)
        return idx_nt.at[:, t + 1].set(jax.vmap(jax.random.categorical)(step_keys, logits_nv))

    idx_nt = jnp.full((num_samples, block_size), STOP, jnp.int32)
    return jax.lax.fori_loop(0, block_size - 1, step, idx_nt)[:, 1:]


def sample_words(model, params, vocab, seed, num_samples, temperature=1.0, top_k=-1):
    tokens = sample(model, params, jax.random.PRNGKey(seed), num_samples=num_samples,
                    temperature=temperature, top_k=top_k)
    return [vocab.decode(row) for row in jax.device_get(tokens).tolist()]


def report(words, dataset):
    """makemore's three lists: samples seen in train, seen in test, and new."""
    train, test = set(dataset.train_words), set(dataset.test_words)
    groups = {"in train": [w for w in words if w in train],
              "in test": [w for w in words if w in test and w not in train],
              "new": [w for w in words if w not in train and w not in test]}
    lines = []
    for name, group in groups.items():
        lines += ["-" * 80, f"{len(group)} samples that are {name}:", *group]
    return "\n".join(lines + ["-" * 80])
