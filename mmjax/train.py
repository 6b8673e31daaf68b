"""Training: pure, compiled train and eval steps, and `train_and_evaluate`, the one entry point that
reads the words, creates or resumes a work dir, trains, evaluates and checkpoints."""

import functools
import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax.training import train_state
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax import config as config_lib
from mmjax import input_pipeline, losses, optimizers, sampling, stopping
from mmjax.errors import NonFiniteLossError, UserError
from mmjax.models import create_model, model_fields
from mmjax.workdir import WorkDir

LONG_WORD = 64  # longer words make every step slower (block size follows the longest): warn


class TrainState(train_state.TrainState):
    rng: jax.Array  # the batch-sampling (and dropout) key, split once per step
    batch_stats: dict  # running BatchNorm statistics; {} for models without BatchNorm


def create_train_state(config, vocab, key):
    """A fresh state: the model initialised from `key`, which also seeds the batches. Pure in `key`, so
    `jax.vmap` over keys makes many. Compiled as one program: run op by op, a Transformer's initialisation
    compiles about a hundred single operations (seconds in every train.py and sample.py)."""
    model, tx = create_model(config, vocab.size, vocab.block_size), optimizers.make_optimizer(config)

    def create(key):
        init_key, data_key = jax.random.split(key)
        variables = model.init(init_key, jnp.zeros((1, vocab.block_size), jnp.int32))
        return TrainState.create(apply_fn=model.apply, params=variables["params"], tx=tx, rng=data_key,
                                 batch_stats=variables.get("batch_stats", {}))

    return jax.jit(create)(key)


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


def train_step(state, x_nt, y_nt, batch_size, value_and_grad=losses.value_and_grad, compute_dtype="float32",
               batch_sharding=None, dropout=None):
    """One optimiser step on a batch drawn with replacement from the device-resident training set;
    with `batch_sharding`, each device computes its slice of the batch (data parallelism). `dropout`: the
    rate, a traced scalar (dropout_rate(config)); None compiles no dropout at all."""
    rng, batch_key = jax.random.split(state.rng)
    idx_b = jax.random.randint(batch_key, (batch_size,), 0, x_nt.shape[0])
    x_bt, y_bt = x_nt[idx_b], y_nt[idx_b]
    if batch_sharding is not None:
        x_bt, y_bt = jax.lax.with_sharding_constraint((x_bt, y_bt), batch_sharding)
    (loss, batch_stats), grads = value_and_grad(state.params, state, x_bt, y_bt, train=True,
                                                dropout_key=jax.random.fold_in(batch_key, 1),
                                                compute_dtype=compute_dtype,
                                                **({} if dropout is None else {"dropout": dropout}))
    return state.apply_gradients(grads=grads).replace(rng=rng, batch_stats=batch_stats), loss


@functools.partial(jax.jit, static_argnames=("num_steps", "batch_size", "value_and_grad", "compute_dtype",
                                             "batch_sharding"), donate_argnames=("state",))
def train_steps(state, x_nt, y_nt, dropout=None, *, num_steps, batch_size, value_and_grad=losses.value_and_grad,
                compute_dtype="float32", batch_sharding=None):
    """`num_steps` train steps in one dispatch; returns the new state and each step's loss."""
    step = functools.partial(train_step, x_nt=x_nt, y_nt=y_nt, batch_size=batch_size, value_and_grad=value_and_grad,
                             compute_dtype=compute_dtype, batch_sharding=batch_sharding, dropout=dropout)
    return jax.lax.scan(lambda s, _: step(s), state, length=num_steps)


@functools.partial(jax.jit, static_argnames="compute_dtype")
def eval_step(state, x_bt, y_bt, compute_dtype="float32"):
    return losses.cross_entropy(losses.forward(state, state.params, x_bt, compute_dtype=compute_dtype)[0], y_bt)


def evaluate(state, x_nt, y_nt, batch_size, compute_dtype="float32", step=eval_step):
    """Per-character NLL over the whole set, in fixed-size chunks (padding is masked) so it compiles once.
    `step(state, x_bt, y_bt, compute_dtype)` -> (summed NLL, count); a population's sums are an array."""
    pad = -len(x_nt) % batch_size
    x_nt = jnp.pad(x_nt, ((0, pad), (0, 0)))
    y_nt = jnp.pad(y_nt, ((0, pad), (0, 0)), constant_values=input_pipeline.IGNORE)
    nll_sum, count = 0.0, 0
    for i in range(0, len(x_nt), batch_size):
        s, c = step(state, x_nt[i:i + batch_size], y_nt[i:i + batch_size], compute_dtype)
        nll_sum, count = nll_sum + np.asarray(s, np.float64), count + int(c)
    return nll_sum / count


def dropout_rate(config):
    """The config's dropout rate as an array, traced by the train step; None at 0: then no dropout is
    compiled at all, and training is makemore's, bit for bit."""
    return jnp.float32(config.dropout) if config.dropout else None


def last_step(config):
    """config.max_steps; -1 (makemore's default) trains until stopped."""
    return math.inf if config.max_steps == -1 else config.max_steps


def next_stop(step, config):
    """The next step at which the loop logs, evaluates or ends."""
    return min((step // config.log_every + 1) * config.log_every,
               (step // config.eval_every + 1) * config.eval_every, last_step(config))


def sample_line(model, state, vocab, config, step, num_samples=10):
    """makemore's samples while it trains, as one line. They are drawn on a key of their own (the run's
    randomness is untouched) from host copies of the parameters (process 0 samples alone)."""
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    options = sampling.SampleOptions(config.temperature, config.top_k, config.top_p)
    words = sampling.sample_words(model, variables, vocab, config.seed + step, num_samples, batch_size=num_samples,
                                  options=options)
    return f"step {step} | samples: {', '.join(words)}"


def check_finite(name, losses_, first_step):
    """Stops training at the first NaN or infinite loss; losses_[i] is step first_step + i's."""
    bad = [i for i, loss in enumerate(losses_) if not math.isfinite(loss)]
    if bad:
        raise NonFiniteLossError(f"{name} is {losses_[bad[0]]} at step {first_step + bad[0]}, so training stopped "
                                 "(checkpoints before it are kept): --resume with a lower --learning-rate "
                                 "or with --grad-clip 1")


def mismatched_field(saved, config):
    """The first field that shapes the model and differs between two configs, or None."""
    return next((f for f in ["type", *model_fields(saved.type)] if config[f] != saved[f]), None)


def new_run(config, workdir, input_file, encoding, max_word_length):
    """The state and dataset of a new run on `input_file` (None: the embedded names), recorded in `workdir`."""
    dataset = new_dataset(config, workdir, input_file, encoding, max_word_length)
    return create_train_state(config, dataset.vocab, jax.random.PRNGKey(config.seed)), dataset


def new_dataset(config, workdir, input_file, encoding, max_word_length):
    """The words of `input_file` (None: the embedded names), split, and recorded in `workdir` with `config`."""
    path = input_file or input_pipeline.default_words_path()
    words = input_pipeline.read_words(path, encoding, config.dedupe, max_word_length)
    dataset = input_pipeline.Dataset.from_words(words, config_lib.split_seed(config), config.val_size)
    create_model(config, dataset.vocab.size, dataset.vocab.block_size)  # refuses bad sizes before anything is written
    data_parallel(config.batch_size)  # a batch that does not divide over the devices is refused before writing
    workdir.create(config, dataset)
    workdir.record_words(words)
    if jax.process_index() == 0:
        val = f"{len(dataset.val_words)} validation, " if dataset.val_words else ""
        print(f"{len(words)} words from {path}: {len(dataset.train_words)} train, {val}{len(dataset.test_words)} test, "
              f"vocabulary {''.join(dataset.vocab.chars)!r} ({dataset.vocab.size} tokens), "
              f"block size {dataset.vocab.block_size}")
        warn = lambda message: print(f"warning: {message}", file=sys.stderr)
        if not dataset.test_words:
            warn(f"no test set (it takes at least 10 words, the input has {len(words)}): training on all of "
                 "them; the best checkpoint is the one with the lowest training loss")
        if max_word_length is None and dataset.vocab.max_word_length > LONG_WORD:
            warn(f"the longest word has {dataset.vocab.max_word_length} characters and every step computes "
                 f"that many positions: pass --max-word-length to refuse lines over {LONG_WORD}")
    return dataset


def resumed_run(config, workdir, input_file):
    """The state and dataset of the run in `workdir`, at its latest checkpoint, with `config`'s
    hyper-parameters (fields that do not shape the model may change)."""
    dataset = resumed_dataset(config, workdir, input_file)
    state = workdir.restore(create_train_state(config, dataset.vocab, jax.random.PRNGKey(config.seed)))
    workdir.drop_metrics_after(int(state.step))
    return state.replace(opt_state=optimizers.with_hyperparams(state.opt_state, config)), dataset


def resumed_dataset(config, workdir, input_file):
    """The dataset of the run in `workdir`, which `config` may resume (it shapes the model the same way)."""
    if input_file is not None:
        raise UserError(f"{workdir.path} holds a run, which trains on its own words: give no input file, "
                        "or another work dir")
    saved = workdir.load_config()
    field = mismatched_field(saved, config)
    if field:
        raise UserError(f"{workdir.path} holds a {field}={saved[field]} run, not "
                        f"{field}={config[field]}: use the run's config, or another work dir")
    if bool(config.ema_decay) != bool(saved.ema_decay):  # the optimiser state has the average or not
        raise UserError(f"{workdir.path} holds a run with ema_decay={saved.ema_decay}, and averaging cannot be "
                        "switched on or off in a run: drop --ema-decay, or pass another -o")
    dataset = workdir.load_dataset()
    if config.val_size != len(dataset.val_words):
        raise UserError(f"{workdir.path} holds a run with val_size={len(dataset.val_words)}, whose split is recorded, "
                        f"not val_size={config.val_size}: drop --val-size, or pass another -o")
    workdir.check_writable()
    return dataset


def evaluation_sets(dataset, config):
    """The encoded sets each evaluation scores: the first eval_train_size training words, the validation
    words (if any) and the test words (if any)."""
    words = {"train_loss": dataset.train_words[:config.eval_train_size], "val_loss": dataset.val_words,
             "test_loss": dataset.test_words}
    return {name: dataset.vocab.encode_words(w) for name, w in words.items() if w}


def best_score_name(eval_sets):
    """What picks the best checkpoint: the validation loss, else the test loss (makemore), else the training loss."""
    return next(name for name in ("val_loss", "test_loss", "train_loss") if name in eval_sets)


def train_and_evaluate(config, workdir, input_file=None, *, encoding="utf-8", max_word_length=None,
                       value_and_grad=losses.value_and_grad, eval_hooks=(), progress=True):
    """Trains config's model up to config.max_steps in `workdir` (a path or WorkDir): a new run on the
    words of `input_file` (None: the embedded US baby names), or, if `workdir` holds a run, that run
    resumed from its latest checkpoint. Evaluates and checkpoints every config.eval_every steps.

    `value_and_grad`: the gradient (losses.value_and_grad's signature; mmjax.backprop has lecture 4's).
    `eval_hooks`: functions (state, x_bt, y_bt) -> dict of metrics, called at each evaluation on the first
    batch of training words and logged with it (mmjax.diagnostics.record is lecture 3's).
    SIGINT or SIGTERM ends training at the end of the current dispatch: it evaluates, saves and raises
    mmjax.stopping.Stopped. Returns the final state."""
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    if config.population or config.sweep:
        raise UserError("the config asks for a population (population, sweep): train it with "
                        "mmjax.population.train_and_evaluate")
    if config.manual_grad and value_and_grad is losses.value_and_grad:
        raise UserError("config.manual_grad asks for lecture 4's gradients: pass "
                        "value_and_grad=mmjax.backprop.value_and_grad")
    state, dataset = (resumed_run(config, workdir, input_file) if workdir.has_run
                      else new_run(config, workdir, input_file, encoding, max_word_length))
    vocab, train_words, eval_sets = dataset.vocab, dataset.train_words, evaluation_sets(dataset, config)
    # on the devices once, not copied there again at every evaluation
    state, ((x_nt, y_nt), eval_sets), batch_sharding = to_devices(
        state, (vocab.encode_words(train_words), eval_sets), config.batch_size)
    score_name = best_score_name(eval_sets)
    dropout = dropout_rate(config)
    model = create_model(config, vocab.size, vocab.block_size)
    fit = getattr(model, "fit", None)  # a model fitted in closed form: one step, no gradients for the hooks
    max_steps = 1 if fit else last_step(config)
    step = int(state.step)
    printing = jax.process_index() == 0  # with several processes, process 0 speaks for all
    from tqdm import tqdm

    with stopping.on_signals() as stop, workdir.logger() as log, \
            tqdm(total=None if max_steps == math.inf else max_steps, initial=step,
                 disable=not (progress and printing), unit="step", dynamic_ncols=True) as bar:

        def log_steps(state, step_losses, first_step, hooks, final=False):
            """Logs a dispatch's losses; evaluates, runs the hooks and checkpoints when it is time, or when
            `final`."""
            check_finite("loss", step_losses, first_step)
            step = first_step + len(step_losses) - 1
            bar.update(len(step_losses))
            bar.set_postfix(loss=f"{step_losses[-1]:.4f}")
            log.write({"step": step, "loss": step_losses[-1]})
            every = config.sample_every
            if printing and every and (first_step - 1) // every < step // every:  # passed a multiple of it
                bar.write(sample_line(model, optimizers.evaluated(state), vocab, config, step))
            if step % config.eval_every and step != max_steps and not final:
                return
            evaluated = optimizers.evaluated(state)
            metrics = {name: evaluate(evaluated, *xy, config.eval_batch_size, config.compute_dtype)
                       for name, xy in eval_sets.items()}
            for name, value in metrics.items():
                check_finite(name, [value], step)  # before the save: a non-finite state is never saved
            batch = x_nt[:config.batch_size], y_nt[:config.batch_size]
            log.write({"step": step, **metrics, **{k: v for hook in hooks for k, v in hook(state, *batch).items()}})
            if printing:
                bar.write(f"step {step} | " + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
            workdir.save(state, score=metrics[score_name], best=evaluated)

        if fit and step == 0:
            state = state.replace(step=1, params=fit(x_nt, y_nt))
            log_steps(state, [evaluate(state, x_nt, y_nt, config.eval_batch_size)], 1, hooks=())
        while step < max_steps and not fit:
            state, step_losses = train_steps(
                state, x_nt, y_nt, dropout, num_steps=next_stop(step, config) - step, batch_size=config.batch_size,
                value_and_grad=value_and_grad, compute_dtype=config.compute_dtype, batch_sharding=batch_sharding)
            step_losses = jax.device_get(step_losses).tolist()
            signum = stop.requested()  # once per dispatch, by every process
            log_steps(state, step_losses, step + 1, eval_hooks, final=bool(signum))
            step += len(step_losses)
            if signum and step < max_steps:
                raise stopping.Stopped(step, signum)
    return state
