"""Training: pure, compiled train and eval steps, and the loop that logs, evaluates and checkpoints."""

import functools
import math

import flax
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax import backprop, input_pipeline
from mmjax.errors import NonFiniteLossError, UserError
from mmjax.models import create_model


class TrainState(train_state.TrainState):
    rng: jax.Array  # the batch-sampling key, split once per step
    batch_stats: dict  # running BatchNorm statistics; {} for models without BatchNorm
    # "bfloat16": mixed precision, the forward and backward passes in bfloat16 while parameters,
    # gradients and optimiser state stay float32 (for GPU/TPU; slower on CPU)
    compute_dtype: str = flax.struct.field(pytree_node=False, default="float32")
    # mlp_bn only: gradients by lecture 4's manual backward pass (mmjax.backprop), not jax.grad
    manual_grad: bool = flax.struct.field(pytree_node=False, default=False)


def make_optimizer(config):
    """AdamW as makemore.py, or SGD as the lectures; optionally the learning rate drops once, and the
    gradients are clipped to a global norm first. Clipping on or off, the optimiser state has the same
    structure (both keep an empty state), so a run can turn it on when resumed."""
    learning_rate = config.learning_rate
    if config.lr_decay_steps > 0:
        learning_rate = optax.piecewise_constant_schedule(learning_rate, {config.lr_decay_steps: config.lr_decay_factor})
    if config.optimizer == "sgd":
        optimizer = optax.chain(optax.add_decayed_weights(config.weight_decay), optax.sgd(learning_rate))
    else:
        optimizer = optax.adamw(learning_rate, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay)
    clip = optax.clip_by_global_norm(config.grad_clip) if config.grad_clip > 0 else optax.identity()
    return optax.chain(clip, optimizer)


def create_train_state(config, vocab):
    model = create_model(config, vocab.size, vocab.block_size)
    init_key, data_key = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = model.init(init_key, jnp.zeros((1, vocab.block_size), jnp.int32))
    return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=make_optimizer(config),
                             rng=data_key, batch_stats=variables.get("batch_stats", {}),
                             compute_dtype=config.compute_dtype, manual_grad=config.manual_grad)


def cross_entropy(logits_btv, y_bt):
    """Summed NLL over targets that are not IGNORE, and their count."""
    mask_bt = y_bt != input_pipeline.IGNORE
    nll_bt = optax.softmax_cross_entropy_with_integer_labels(logits_btv, jnp.where(mask_bt, y_bt, 0))
    return jnp.sum(nll_bt * mask_bt), jnp.sum(mask_bt)


def forward(state, params, x_bt, train=False):
    """Logits, and the BatchNorm statistics: updated from the batch when training a BatchNorm model."""
    cast = lambda tree, dtype: jax.tree.map(lambda a: a.astype(dtype), tree)
    variables = {"params": cast(params, state.compute_dtype), "batch_stats": state.batch_stats}
    if train and state.batch_stats:
        logits_btv, updates = state.apply_fn(variables, x_bt, train=True, mutable=["batch_stats"])
        return logits_btv.astype(jnp.float32), cast(updates["batch_stats"], jnp.float32)
    return state.apply_fn(variables, x_bt).astype(jnp.float32), state.batch_stats


def loss_fn(params, state, x_bt, y_bt, train=False):
    """Mean NLL per character, and the BatchNorm statistics as `forward` returns them."""
    logits_btv, batch_stats = forward(state, params, x_bt, train)
    nll_sum, count = cross_entropy(logits_btv, y_bt)
    return nll_sum / count, batch_stats


def data_parallel(batch_size):
    """Shardings over every device of every process: (replicated, batch split on the 'data' axis)."""
    devices = jax.device_count()
    if batch_size % devices:
        raise UserError(f"batch size {batch_size} does not divide over {devices} devices: "
                        f"pass a multiple of {devices}")
    mesh = jax.make_mesh((devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    return NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))


def to_devices(state, arrays, batch_size):
    """The state and arrays replicated on every device, and the sharding for batches. They pass through
    host memory: with several processes, device_put onto a global sharding takes host values (the same
    on every process, which it checks), not arrays already on a local device."""
    replicated, batch_sharding = data_parallel(batch_size)
    return *jax.device_put(jax.device_get((state, arrays)), replicated), batch_sharding


def train_step(state, x_nt, y_nt, batch_size, batch_sharding=None):
    """One optimiser step on a batch drawn with replacement from the device-resident training set;
    with `batch_sharding`, each device computes its slice of the batch (data parallelism)."""
    rng, batch_key = jax.random.split(state.rng)
    idx_b = jax.random.randint(batch_key, (batch_size,), 0, x_nt.shape[0])
    x_bt, y_bt = x_nt[idx_b], y_nt[idx_b]
    if batch_sharding is not None:
        x_bt, y_bt = jax.lax.with_sharding_constraint((x_bt, y_bt), batch_sharding)
    value_and_grad = backprop.value_and_grad if state.manual_grad else jax.value_and_grad(loss_fn, has_aux=True)
    (loss, batch_stats), grads = value_and_grad(state.params, state, x_bt, y_bt, train=True)
    return state.apply_gradients(grads=grads).replace(rng=rng, batch_stats=batch_stats), loss


@functools.partial(jax.jit, static_argnames=("num_steps", "batch_size", "batch_sharding"),
                   donate_argnames=("state",))
def train_steps(state, x_nt, y_nt, *, num_steps, batch_size, batch_sharding=None):
    """`num_steps` train steps in one dispatch; returns the new state and each step's loss."""
    return jax.lax.scan(lambda s, _: train_step(s, x_nt, y_nt, batch_size, batch_sharding), state,
                        length=num_steps)


@jax.jit
def eval_step(state, x_bt, y_bt):
    return cross_entropy(forward(state, state.params, x_bt)[0], y_bt)


def evaluate(state, x_nt, y_nt, batch_size):
    """Per-character NLL over the whole set, in fixed-size chunks (padding is masked) so it compiles once."""
    pad = -len(x_nt) % batch_size
    x_nt = jnp.pad(x_nt, ((0, pad), (0, 0)))
    y_nt = jnp.pad(y_nt, ((0, pad), (0, 0)), constant_values=input_pipeline.IGNORE)
    nll_sum, count = 0.0, 0
    for i in range(0, len(x_nt), batch_size):
        s, c = eval_step(state, x_nt[i:i + batch_size], y_nt[i:i + batch_size])
        nll_sum, count = nll_sum + float(s), count + int(c)
    return nll_sum / count


def next_stop(step, config):
    """The next step at which the loop logs, evaluates or ends."""
    return min((step // config.log_every + 1) * config.log_every,
               (step // config.eval_every + 1) * config.eval_every, config.max_steps)


def check_finite(name, losses, first_step):
    """Stops training at the first NaN or infinite loss; losses[i] is step first_step + i's."""
    bad = [i for i, loss in enumerate(losses) if not math.isfinite(loss)]
    if bad:
        raise NonFiniteLossError(f"{name} is {losses[bad[0]]} at step {first_step + bad[0]}, so training stopped "
                                 "(checkpoints before it are kept): --resume with a lower --learning-rate "
                                 "or with --grad-clip 1")


def train_and_evaluate(config, workdir, state, dataset, progress=True):
    """Trains `state` (fresh or restored) up to config.max_steps; returns the final state."""
    from tqdm import tqdm

    from mmjax import diagnostics  # it imports this module

    vocab, train_words, test_words = dataset.vocab, dataset.train_words, dataset.test_words
    eval_sets = {"train_loss": vocab.encode_words(train_words[:config.eval_train_size])}
    if test_words:
        eval_sets["test_loss"] = vocab.encode_words(test_words)
    # on the devices once, not copied there again at every evaluation
    state, ((x_nt, y_nt), eval_sets), batch_sharding = to_devices(
        state, (vocab.encode_words(train_words), eval_sets), config.batch_size)
    score_name = "test_loss" if test_words else "train_loss"
    model = create_model(config, vocab.size, vocab.block_size)
    max_steps = 1 if hasattr(model, "fit") else config.max_steps  # a closed-form fit is one step

    step = int(state.step)
    printing = jax.process_index() == 0  # with several processes, process 0 speaks for all
    with workdir.logger() as log, tqdm(total=max_steps, initial=step, disable=not (progress and printing),
                                       unit="step", dynamic_ncols=True) as bar:
        while step < max_steps:
            if hasattr(model, "fit"):
                num_steps, state = 1, state.replace(step=1, params=model.fit(x_nt, y_nt))
                losses = [evaluate(state, x_nt, y_nt, config.eval_batch_size)]
            else:
                num_steps = next_stop(step, config) - step
                state, losses = train_steps(state, x_nt, y_nt, num_steps=num_steps, batch_size=config.batch_size,
                                            batch_sharding=batch_sharding)
                losses = jax.device_get(losses).tolist()
            check_finite("loss", losses, step + 1)
            loss = losses[-1]
            step += num_steps
            bar.update(num_steps)
            bar.set_postfix(loss=f"{loss:.4f}")
            log.write({"step": step, "loss": loss})
            if step % config.eval_every == 0 or step == max_steps:
                metrics = {name: evaluate(state, *xy, config.eval_batch_size) for name, xy in eval_sets.items()}
                for name, value in metrics.items():
                    check_finite(name, [value], step)  # before the save: a non-finite state is never saved
                # lecture 3's diagnostics, on the same first batch of training words at every evaluation
                lecture = {} if hasattr(model, "fit") else diagnostics.record(state, x_nt[:config.batch_size],
                                                                              y_nt[:config.batch_size])
                log.write({"step": step, **metrics, **lecture})
                if printing:
                    bar.write(f"step {step} | " + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                workdir.save(state, score=metrics[score_name])
    return state
