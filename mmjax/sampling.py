"""Compiled, batched sampling through every model's decode interface (mmjax/models/__init__.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.input_pipeline import STOP


def filter_logits(logits_nv, temperature, top_k, top_p):
    """Logits scaled by 1/temperature, -inf outside the top-k and outside the nucleus of mass top_p."""
    logits_nv = logits_nv / temperature
    if top_k > 0:
        kth_n1 = jax.lax.top_k(logits_nv, top_k)[0][:, -1:]
        logits_nv = jnp.where(logits_nv < kth_n1, -jnp.inf, logits_nv)
    if top_p < 1.0:
        # keep the most likely tokens until their mass reaches top_p: a token stays if the mass
        # of the tokens strictly more likely than it is still below top_p
        sorted_nv = jnp.sort(logits_nv, axis=-1)[:, ::-1]
        mass_before_nv = jnp.cumsum(jax.nn.softmax(sorted_nv), axis=-1) - jax.nn.softmax(sorted_nv)
        cutoff_n1 = jnp.min(jnp.where(mass_before_nv < top_p, sorted_nv, jnp.inf), axis=-1, keepdims=True)
        logits_nv = jnp.where(logits_nv < cutoff_n1, -jnp.inf, logits_nv)
    return logits_nv


@functools.partial(jax.jit, static_argnames=("model", "batch_size", "top_k", "top_p"))
def sample_batch(model, variables, key, first_index, prefix_p, *, batch_size, temperature=1.0, top_k=-1,
                 top_p=1.0):
    """Samples first_index .. first_index + batch_size - 1: tokens (batch_size, block_size - 1), the
    word followed by STOPs, and lengths. Sample i uses only fold_in(key, i), so it is the same in
    any batch. The loop stops once every sequence has emitted STOP; `prefix_p` is forced first;
    temperature 0 is greedy."""
    max_len = model.block_size - 1
    keys_n = jax.vmap(jax.random.fold_in, (None, 0))(key, first_index + jnp.arange(batch_size))

    def choose(t, logits_nv):
        logits_nv = filter_logits(logits_nv, jnp.where(temperature > 0, temperature, 1.0), top_k, top_p)
        step_keys_n = jax.vmap(jax.random.fold_in, (0, None))(keys_n, t)
        sampled_n = jax.vmap(jax.random.categorical)(step_keys_n, logits_nv)
        return jnp.where(temperature > 0, sampled_n, jnp.argmax(logits_nv, axis=-1))

    def body(loop):
        t, carry, token_n, tokens_nt, done_n = loop
        logits_nv, carry = model.apply(variables, carry, token_n, method="decode_step")
        next_n = choose(t, logits_nv)
        if prefix_p.shape[0]:
            next_n = jnp.where(t < prefix_p.shape[0], prefix_p[jnp.minimum(t, prefix_p.shape[0] - 1)], next_n)
        next_n = jnp.where(done_n, STOP, next_n)
        return t + 1, carry, next_n, tokens_nt.at[:, t].set(next_n), done_n | (next_n == STOP)

    def cond(loop):
        t, _, _, _, done_n = loop
        return (t < max_len) & ~jnp.all(done_n)

    carry = model.apply(variables, batch_size, method="decode_init")
    start_n = jnp.full((batch_size,), STOP, jnp.int32)
    tokens_nt = jnp.full((batch_size, max_len), STOP, jnp.int32)
    loop = (jnp.zeros((), jnp.int32), carry, start_n, tokens_nt, jnp.zeros((batch_size,), bool))
    tokens_nt = jax.lax.while_loop(cond, body, loop)[3]
    lengths_n = jnp.argmax(jnp.concatenate([tokens_nt, jnp.zeros((batch_size, 1), jnp.int32)], 1) == STOP, 1)
    return tokens_nt, lengths_n


def sample(model, variables, seed, num_samples, batch_size=1000, prefix=(), **options):
    """`num_samples` samples as numpy (tokens, lengths), in compiled batches of at most batch_size."""
    batch_size = min(batch_size, num_samples)
    key, prefix_p = jax.random.PRNGKey(seed), jnp.asarray(prefix, jnp.int32)
    tokens, lengths = [], []
    for first in range(0, num_samples, batch_size):
        tokens_nt, lengths_n = jax.device_get(sample_batch(model, variables, key, first, prefix_p,
                                                           batch_size=batch_size, **options))
        tokens.append(tokens_nt)
        lengths.append(lengths_n)
    return np.concatenate(tokens)[:num_samples], np.concatenate(lengths)[:num_samples]


def sample_words(model, variables, vocab, seed, num_samples, prefix="", **options):
    tokens, lengths = sample(model, variables, seed, num_samples, prefix=vocab.encode(prefix), **options)
    return [vocab.decode(row[:n]) for row, n in zip(tokens.tolist(), lengths.tolist())]


def report(words, dataset):
    """makemore's three lists: samples seen in train, seen in test, and new; then the novelty rate."""
    train, test = set(dataset.train_words), set(dataset.test_words)
    groups = {"in train": [w for w in words if w in train],
              "in test": [w for w in words if w in test and w not in train],
              "new": [w for w in words if w not in train and w not in test]}
    lines = []
    for name, group in groups.items():
        lines += ["-" * 80, f"{len(group)} samples that are {name}:", *group]
    novelty = len(groups["new"]) / max(len(words), 1)
    return "\n".join(lines + ["-" * 80, f"novelty: {novelty:.1%} of {len(words)} samples are new"])
