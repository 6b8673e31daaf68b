"""Training: `train_and_evaluate`, the one entry point and the one loop, for one model and for a population
(mmjax/trainees.py: what is trained). It reads the words, creates or resumes a work dir, trains in compiled
dispatches of steps (mmjax/steps.py), evaluates, logs (mmjax/metrics.py) and checkpoints."""

import json
import math
import sys

import jax
import numpy as np

from mmjax import config as config_lib
from mmjax import devices, input_pipeline, metrics, population, sampling, stopping, trainees
from mmjax.errors import LostProcessError, NonFiniteLossError, UserError
from mmjax.models import create_model
from mmjax.workdir import WorkDir

LONG_WORD = 64  # longer words make every step slower (block size follows the longest): warn


def next_stop(step, config, max_steps):
    """The next step at which the loop logs, evaluates or ends."""
    return min((step // config.log_every + 1) * config.log_every,
               (step // config.eval_every + 1) * config.eval_every, max_steps)


def sample_line(model, state, config, vocab, step, num_samples=10):
    """makemore's samples while it trains, as one line. They are drawn on a key of their own (the run's
    randomness is untouched) from host copies of the parameters (process 0 samples alone)."""
    variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
    options = sampling.SampleOptions(config.temperature, config.top_k, config.top_p)
    # sample.py's batch and precision: `sample.py -n 10` after training runs the program compiled here
    words = sampling.sample_words(model, variables, vocab, config.seed + step, num_samples, options=options,
                                  compute_dtype=config.compute_dtype)
    return f"step {step} | samples: {', '.join(words)}"


def new_dataset(config, workdir, input_file, encoding, max_word_length):
    """The words of `input_file` (None: the embedded names), split, and recorded in `workdir` with `config`."""
    path = input_file or input_pipeline.default_words_path()
    words = input_pipeline.read_words(path, encoding, config.dedupe, max_word_length)
    dataset = input_pipeline.Dataset.from_words(words, config_lib.split_seed(config), config.val_size)
    create_model(config, dataset.vocab.size, dataset.vocab.block_size)  # refuses bad sizes before anything is written
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


def resumed_dataset(config, workdir, input_file):
    """The dataset of the run in `workdir`, which `config` may resume: it shapes the model the same way and
    trains the same kind of run (one model, or the same population)."""
    if input_file is not None:
        raise UserError(f"{workdir.path} holds a run, which trains on its own words: give no input file, "
                        "or another work dir")
    config_lib.check_resumable(workdir.load_config(), config, workdir.path)
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


class Divergence:
    """Members whose loss turned NaN or infinite: the others train on (each keeps its best); once none is
    left, training stops with a NonFiniteLossError (before anything of that dispatch is saved)."""

    def __init__(self, trainee, write):
        self.trainee, self.write, self.members = trainee, write, set()

    def check(self, name, values_sk, first_step):
        """values_sk[s, i]: member i's `name` at step first_step + s."""
        bad_sk = ~np.isfinite(values_sk)
        for i in sorted(set(np.flatnonzero(bad_sk.any(axis=0)).tolist()) - self.members):
            self.members.add(i)
            s = int(np.argmax(bad_sk[:, i]))
            if len(self.members) < values_sk.shape[1]:
                self.write(f"warning: member {i} ({self.trainee.describe(i)}) diverged: {name} {values_sk[s, i]} at "
                           f"step {first_step + s}; the others train on", file=sys.stderr)
            else:
                who = "" if self.trainee.members is None else "every member diverged; the last: "
                raise NonFiniteLossError(f"{who}{name} is {values_sk[s, i]} at step {first_step + s}, so training "
                                         "stopped (checkpoints before it are kept): --resume with a lower "
                                         "--learning-rate or with --grad-clip 1")


def train_and_evaluate(config, workdir, input_file=None, *, encoding="utf-8", max_word_length=None, eval_hooks=(),
                       progress=True):
    """Trains config's model, or its population (config.population seeds x config.sweep's grid), up to
    config.max_steps in `workdir` (a path or WorkDir): a new run on the words of `input_file` (None: the
    embedded US baby names), or, if `workdir` holds a run, that run resumed from its latest checkpoint.
    Evaluates and checkpoints every config.eval_every steps; a population prints a table of its members at
    the end. config.manual_grad trains with lecture 4's gradients, config.diagnostics records lecture 3's.

    `eval_hooks`: functions (state, x_bt, y_bt) -> dict of metrics, called at each evaluation on each
    member's training state and the first batch of training words, and logged with its losses.
    SIGINT or SIGTERM ends training at the end of the current dispatch: it evaluates, saves and raises
    mmjax.stopping.Stopped. Returns the final state (a population's: stacked)."""
    workdir = workdir if isinstance(workdir, WorkDir) else WorkDir(workdir)
    devices.agree("the config (the flags and the config file)", json.loads(config.to_json()))  # several hosts
    kind = trainees.Population if population.is_population(config) else trainees.SingleModel
    kind.check(config)
    resumed = workdir.has_run
    dataset = (resumed_dataset(config, workdir, input_file) if resumed
               else new_dataset(config, workdir, input_file, encoding, max_word_length))
    devices.agree("the words (the input file or the work dir's)", dataset.to_json())
    trainee = kind(config, workdir, dataset, resumed)
    if resumed:
        metrics.drop_after(workdir.path, trainee.step)
    eval_sets = trainee.place(evaluation_sets(dataset, config))  # on the devices once, not at every evaluation
    score_name = best_score_name(eval_sets)
    if config.diagnostics:
        from mmjax import diagnostics  # a lecture tool: imported only by the runs that record it

        eval_hooks = (*eval_hooks, diagnostics.record)
    # the hooks' batch; sliced only for runs with hooks (slicing a device array compiles a program, about 0.04 s)
    batch = tuple(xy[:config.batch_size] for xy in trainee.train_words) if eval_hooks else (None, None)
    printing, max_steps = jax.process_index() == 0, trainee.max_steps  # process 0 speaks for all
    from tqdm import tqdm

    with stopping.on_signals() as stop, metrics.writer(workdir.path) as log, \
            tqdm(total=None if max_steps == math.inf else max_steps, initial=trainee.step,
                 disable=not (progress and printing), unit="step", dynamic_ncols=True) as bar:
        write = bar.write if printing else lambda *args, **kwargs: None
        divergence, saved = Divergence(trainee, write), trainee.step

        def dispatched(losses_sk, first_step):
            """After a dispatch: its losses checked, the bar, a metrics line per member, the samples when due."""
            step, last_k = trainee.step, losses_sk[-1]
            divergence.check("loss", losses_sk, first_step)
            bar.update(len(losses_sk))
            if trainee.members is None:
                bar.set_postfix(loss=f"{last_k[0]:.4f}")
            else:  # the members that train on
                live_k = np.delete(last_k, sorted(divergence.members))
                bar.set_postfix(best=f"{np.min(live_k):.4f}", median=f"{np.median(live_k):.4f}")
            for i, loss in enumerate(last_k.tolist()):
                log.write({"step": step, **trainee.member_fields(i, hyperparams=False), "loss": loss})
            every = config.sample_every
            if every and (first_step - 1) // every < step // every:  # passed a multiple of it
                source = trainee.sample_source()  # by every process: a population's members may be on any host
                if printing:
                    write(sample_line(*source, dataset.vocab, step))

        def evaluated():
            """An evaluation: the losses checked (before the save: a non-finite run is never saved), the hooks, the
            lines, population-based training's exploits, the line printed, the checkpoint."""
            step = trainee.step
            losses_k, ensemble = trainee.evaluate(eval_sets)
            for name, values_k in losses_k.items():
                divergence.check(name, values_k[None], step)
            hooked = trainee.hook_metrics(eval_hooks, *batch)
            for i in range(len(hooked)):
                log.write({"step": step, **trainee.member_fields(i), **{k: float(v[i]) for k, v in losses_k.items()},
                           **hooked[i]})
            if ensemble:
                log.write({"step": step, **ensemble})
            replaced, exploits = trainee.adapt(losses_k)
            divergence.members -= set(replaced)  # a diverged member replaced by a copy trains again
            for line in exploits:
                log.write(line)
            write(f"step {step} | " + (" | ".join(f"{k} {v[0]:.4f}" for k, v in losses_k.items()) if not ensemble else
                  f"{score_name} best {np.nanmin(losses_k[score_name]):.4f} median "
                  f"{np.nanmedian(losses_k[score_name]):.4f} | ensemble {ensemble['ensemble_' + score_name]:.4f}"))
            trainee.save(losses_k[score_name])

        while trainee.step < max_steps:
            try:
                first_step = trainee.step + 1
                losses_sk = trainee.train(next_stop(trainee.step, config, max_steps) - trainee.step)
                signum = stop.requested()  # once per dispatch, by every process
                dispatched(losses_sk, first_step)
                if trainee.step % config.eval_every == 0 or trainee.step == max_steps or signum:
                    evaluated()
                    saved = trainee.step
            except Exception as e:
                if devices.lost_process(e):
                    kept = f"its checkpoint of step {saved} is kept" if saved else "it has no checkpoint yet"
                    raise LostProcessError(f"another process of the run stopped answering ({devices.reason(e)}), so "
                                           f"this one stopped after step {trainee.step}: {kept}; train.py -o "
                                           f"{workdir.path} --resume on every host continues it") from None
                raise
            if signum and trainee.step < max_steps:
                raise stopping.Stopped(trainee.step, signum)
    summary = trainee.summary(score_name) if printing else None
    if summary:
        print(summary)
    return trainee.state
