"""The train state (parameters, optimiser state, step, the batches' key, BatchNorm statistics), made fresh
from a key, or as abstract shapes that a checkpoint is restored into without computing an initialisation."""

import functools

import jax
import jax.numpy as jnp
from flax.training import train_state

from mmjax import optimizers
from mmjax.models import create_model


class TrainState(train_state.TrainState):
    rng: jax.Array  # the batch-sampling (and dropout) key, split once per step
    batch_stats: dict  # running BatchNorm statistics; {} for models without BatchNorm


@functools.lru_cache(maxsize=64)
def initialiser(model, tx, block_size):
    """key -> a fresh state, pure in the key (`jax.vmap` over keys makes many), with placeholder
    hyper-parameters. One function per model and optimiser, which `create_model` and `optimizer_of` keep
    one of per shape: its compiled programs are reused by every run of the same shapes in a process."""

    def create(key):
        init_key, data_key = jax.random.split(key)
        variables = model.init(init_key, jnp.zeros((1, block_size), jnp.int32))
        return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx, rng=data_key,
                                 batch_stats=variables.get("batch_stats", {}))

    return create


def initialiser_of(config, vocab):
    return initialiser(create_model(config, vocab.size, vocab.block_size), optimizers.optimizer_of(config),
                       vocab.block_size)


@functools.cache
def compiled_initialiser(initialiser):
    """`initialiser` jitted, one per initialiser (a population's members call it once each). It runs once, so
    on the CPU LLVM optimises it at -O1: each random draw costs about 0.1 s of compilation at -O2, and a small
    model's initialisation compiles in half the time (the default MLP's 1.2 s -> 0.5 s; the default
    Transformer's 2.6 -> 2.1 s), with the same bits (tests/test_models.py checks every model type)."""
    options = {"xla_backend_optimization_level": 1} if jax.default_backend() == "cpu" else None
    fast, nested = jax.jit(initialiser, compiler_options=options), jax.jit(initialiser)  # options: top-level only
    return lambda key: nested(key) if isinstance(key, jax.core.Tracer) else fast(key)


def create_train_state(config, vocab, key):
    """A fresh state: the model initialised from `key`, which also seeds the batches; config's
    hyper-parameters. Compiled as one program: run op by op, a Transformer's initialisation compiles about
    a hundred single operations."""
    state = compiled_initialiser(initialiser_of(config, vocab))(key)
    return state.replace(opt_state=optimizers.with_hyperparams(state.opt_state, config))


def abstract_train_state(config, vocab):
    """The shapes and dtypes of config's train state, to restore a checkpoint into (nothing is compiled)."""
    return jax.eval_shape(initialiser_of(config, vocab), jax.ShapeDtypeStruct((2,), jnp.uint32))


def dropout_rate(config):
    """The config's dropout rate as an array, traced by the train step; None at 0: then no dropout is
    compiled at all, and training is makemore's, bit for bit."""
    return jnp.float32(config.dropout) if config.dropout else None
