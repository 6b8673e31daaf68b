"""What several test files share: the small model they train, the ways they run the commands, batches of
encoded words, and fresh train states (the one place tests call create_train_state)."""

import os
import runpy
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from conftest import ROOT
from mmjax import cli, inference
from mmjax.config import get_config
from mmjax.input_pipeline import Vocab
from mmjax.models import create_model
from mmjax.state import create_train_state

# train.py's flags for a model that compiles and trains in a second or two
SMALL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--no-progress"]
SMALL_FIELDS = dict(n_layer=1, n_head=2, n_embd=16, n_embd2=16)


def small_config(model_type="transformer", **changes):
    """The config of `model_type` at SMALL's sizes, with `changes`."""
    return get_config(model_type, **{**SMALL_FIELDS, **changes})


def fresh_state(config, vocab, seed=None):
    """A new train state for `config` and `vocab`, seeded by config.seed as train.py seeds it (or `seed`)."""
    return create_train_state(config, vocab, jax.random.PRNGKey(config.seed if seed is None else seed))


def compiled_count(jitted):
    """How many programs a jitted function holds. jax has no public count: this reads the private
    `_cache_size()`, and skips the test (saying why) in a jax that has none, so a rename never fails it."""
    size = getattr(jitted, "_cache_size", None)
    if not callable(size):
        pytest.skip(f"jax {jax.__version__}'s jitted functions have no _cache_size() (private, the only count of "
                    "their compiled programs): the compile count is not checked")
    return size()


def train(*argv):
    """train.py's main in this process."""
    cli.train_main(cli.train_parser().parse_args([str(a) for a in argv]))


def command(script, *argv, env=None, **popen):
    """A command as a user starts it (`script` is train.py, sample.py or `-m module`): its Popen."""
    script = ["-m", script[3:]] if script.startswith("-m ") else [str(ROOT / script)]
    return subprocess.Popen([sys.executable, *script, *map(str, argv)], text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})}, **{"stdout": subprocess.PIPE,
                                                                  "stderr": subprocess.PIPE, **popen})


def run_command(script, *argv, env=None, timeout=300):
    """(exit status, stdout, stderr) of a command run to its end."""
    process = command(script, *argv, env=env)
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def run_script(capsys, monkeypatch, script, *argv):
    """scripts/SCRIPT ARGV run as a script (its __main__) in this process, for a script that needs no process of
    its own (no device count, no signal): (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", [script, *map(str, argv)])
    monkeypatch.setattr(sys, "path", [str(ROOT / "scripts"), *sys.path])  # its directory first, as python puts it
    capsys.readouterr()
    try:
        runpy.run_path(str(ROOT / "scripts" / script), run_name="__main__")
        status = 0
    except SystemExit as e:
        status = e.code
    return (status, *capsys.readouterr())


def assert_refused(result, message):
    """A refusal as docs/troubleshooting.md promises it: exit status 2 and one line on stderr with `message`."""
    status, _, err = result
    assert status == 2 and err.count("\n") == 1 and err.startswith("error: ") and message in err, (status, err)


def names_batch(seed, batch_size=16, vocab_size=27, block_size=12):
    """x, y as the data protocol makes them (Vocab.encode_words), for random words of 1..block_size-1
    characters over vocab_size - 1 letters."""
    rng = np.random.default_rng(seed)
    chars = tuple(chr(ord("a") + i) for i in range(vocab_size - 1))
    words = ["".join(rng.choice(chars, rng.integers(1, block_size))) for _ in range(batch_size)]
    x_bt, y_bt = Vocab(chars, block_size - 1).encode_words(words)
    return jax.numpy.asarray(x_bt), jax.numpy.asarray(y_bt)


def random_run(dataset, model_type="transformer", seed=0, scale=0.2, **changes):
    """An inference.Run of a small model on `dataset` with random weights: normal, std `scale`, drawn by numpy
    for the shapes of the model's parameters. Not its initialisation, whose compile costs seconds; any weights
    do for the functions that take a loaded Run (scoring, sampling). No training, no work dir."""
    config = small_config(model_type, seed=seed, **changes)
    model = create_model(config, dataset.vocab.size, dataset.vocab.block_size)
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), np.zeros((1, dataset.vocab.block_size), np.int32))
    rng = np.random.default_rng(seed)
    params = jax.tree.map(lambda s: (scale * rng.standard_normal(s.shape)).astype(s.dtype), shapes["params"])
    return inference.Run(config, dataset, model, types.SimpleNamespace(params=params, batch_stats={}))
