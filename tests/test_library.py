"""mmjax as a library: the three calls, locked configs, the optimiser's schedules and hyper-parameters, a
house without the lecture tools in the trainer, and a non-editable install used from another directory."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig

import jax
import numpy as np
import optax
import pytest

import mmjax
from conftest import ROOT, write_words
from mmjax import optimizers
from mmjax.config import get_config
from mmjax.input_pipeline import Dataset
from mmjax.errors import UserError
from mmjax.workdir import WorkDir
from mmjax.models import MODELS
from mmjax.state import create_train_state

TINY = dict(n_layer=1, n_head=2, n_embd=16, n_embd2=16, log_every=10, eval_every=20)


def test_three_calls_train_resume_and_sample(tmp_path, capsys):
    words = write_words(tmp_path / "words.txt")
    config = mmjax.get_config("mlp", max_steps=40, **TINY)
    state = mmjax.train_and_evaluate(config, tmp_path / "out", words, progress=False)
    assert int(state.step) == 40
    capsys.readouterr()
    names = mmjax.sample(tmp_path / "out", num_samples=7, seed=1, temperature=0.8)
    assert capsys.readouterr().out == ""  # a library call prints nothing
    assert len(names) == 7 and all(isinstance(n, str) and set(n) <= set("abcdefgh") for n in names)
    assert mmjax.sample(tmp_path / "out", num_samples=7, seed=1, temperature=0.8) == names
    config = mmjax.get_config("mlp", max_steps=60, **TINY)
    state = mmjax.train_and_evaluate(config, tmp_path / "out", progress=False)  # the same work dir: resumes
    assert int(state.step) == 60
    steps = [json.loads(l)["step"] for l in (tmp_path / "out/metrics.jsonl").read_text().splitlines()
             if "test_loss" in l]
    assert steps == [20, 40, 60]


def test_a_mistyped_config_field_is_an_error(tmp_path):
    config = get_config("transformer")
    with pytest.raises(UserError, match="unknown config field 'n_emdb'"):
        config.n_emdb = 8
    with pytest.raises(UserError, match="unknown config field 'n_emdb'"):
        get_config("transformer", n_emdb=8)
    config_file = tmp_path / "typo.py"
    config_file.write_text("from mmjax.config import base_config\n\n"
                           "def get_config():\n    config = base_config()\n    config.n_emdb = 8\n    return config\n")
    result = subprocess.run([sys.executable, ROOT / "train.py", "--config", config_file, "-o", tmp_path / "out"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {config_file} sets unknown config field 'n_emdb': fix its name "
                                          "(the fields are base_config()'s in mmjax/config.py)"]
    assert not (tmp_path / "out").exists()


def test_every_model_type_has_a_shipped_config():
    for model_type in MODELS:
        assert get_config(model_type).type == model_type


def test_schedules_scale_the_learning_rate():
    """Hand-computed learning rates of the lectures' step drop and of warm-up plus cosine decay."""
    vocab = Dataset.from_words(["ab", "ba"], seed=0).vocab
    cases = [(dict(lr_schedule="constant"), [(0, 1.0), (99, 1.0)]),
             (dict(lr_schedule="step", lr_decay_steps=50, lr_decay_factor=0.1), [(0, 1.0), (49, 1.0), (50, 0.1)]),
             (dict(lr_schedule="warmup_cosine", warmup_steps=10, max_steps=110, lr_decay_factor=0.1),
              [(0, 0.0), (5, 0.5), (10, 1.0), (60, 0.1 + 0.9 * 0.5), (110, 0.1)])]
    for overrides, expected in cases:
        config = get_config("bigram", learning_rate=0.2, **overrides)
        state = create_train_state(config, vocab, jax.random.PRNGKey(0))
        for step, factor in expected:
            opt_state = (state.opt_state[0], state.opt_state[1]._replace(count=np.int32(step)))
            assert float(optimizers.learning_rate(opt_state, config)) == pytest.approx(0.2 * factor, rel=1e-6)


def test_hyperparameters_live_in_the_optimiser_state_one_per_model_under_vmap():
    vocab = Dataset.from_words(["abc", "bca", "cab"], seed=0).vocab
    config = get_config("mlp", **TINY)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    # compiled: op by op, the vmapped initialisation and update take a minute of single-operation compilations
    states = jax.jit(jax.vmap(lambda key: create_train_state(config, vocab, key)))(keys)
    alone = jax.jit(lambda key: create_train_state(config, vocab, key))(keys[1])
    jax.tree.map(lambda s, a: np.testing.assert_array_equal(s[1], a), states.params, alone.params)
    learning_rates = np.array([1e-3, 1e-2, 1e-1], np.float32)
    hyperparams = optimizers.hyperparams(states.opt_state)
    hyperparams["learning_rate"] = learning_rates
    grads = jax.tree.map(np.ones_like, states.params)

    def update(opt_state, grads, params):
        return optax.apply_updates(params, states.tx.update(grads, opt_state, params)[0])

    params = jax.jit(jax.vmap(update))(states.opt_state, grads, states.params)
    steps = jax.tree.leaves(jax.tree.map(lambda new, old: np.abs(new - old).max(axis=tuple(range(1, new.ndim))),
                                         params, states.params))[0]
    # AdamW's first step moves every weight by about the learning rate (plus lr * wd * w)
    np.testing.assert_allclose(steps, learning_rates, rtol=0.05)


def test_the_layers_import_downwards_only():
    """The trainer imports neither the lecture tools nor the command line; the loader, the pictures and the
    converter never import the training loop (mmjax.train) or what it trains (mmjax.trainees)."""
    code = ("import sys, importlib; first = sys.argv[1].split(','); [importlib.import_module(m) for m in first]; "
            "print(sorted(m for m in sys.argv[2].split(',') if m in sys.modules))")
    layers = [("mmjax.train,mmjax.inference", "mmjax.backprop,mmjax.diagnostics,mmjax.plots,mmjax.cli"),
              ("mmjax.inference,mmjax.plots,mmjax.interop", "mmjax.train,mmjax.trainees,mmjax.cli")]
    for imported, absent in layers:
        result = subprocess.run([sys.executable, "-c", code, imported, absent], capture_output=True, text=True,
                                timeout=120, check=True)
        assert result.stdout.strip() == "[]", (imported, result.stdout)


def test_the_api_trains_a_population_and_samples_its_members_and_ensemble(tmp_path, capsys):
    """mmjax.train_and_evaluate trains the population a config asks for; mmjax.sample takes `member` and
    `ensemble`; sample i depends only on (seed, i) there too."""
    words = write_words(tmp_path / "words.txt")
    config = mmjax.get_config("mlp", max_steps=20, population=2, sweep="learning_rate=1e-3,3e-3", diagnostics=False,
                              **TINY)
    states = mmjax.train_and_evaluate(config, tmp_path / "pop", words, progress=False)
    assert states.step.tolist() == [20] * 4
    assert "winner: learning_rate=" in capsys.readouterr().out  # the end table
    best = int(np.argmin([min(m["test_loss"] for m in WorkDir(tmp_path / "pop").metrics()
                              if m.get("member") == i and "test_loss" in m) for i in range(4)]))
    by_member = {i: mmjax.sample(tmp_path / "pop", num_samples=12, seed=3, member=i) for i in range(4)}
    assert mmjax.sample(tmp_path / "pop", num_samples=12, seed=3) == by_member[best]
    assert len({tuple(names) for names in by_member.values()}) > 1
    ensemble = mmjax.sample(tmp_path / "pop", num_samples=12, seed=3, ensemble=True)
    assert mmjax.sample(tmp_path / "pop", num_samples=5, seed=3, ensemble=True) == ensemble[:5]
    assert all(set(name) <= set("abcdefgh") for name in ensemble) and ensemble not in by_member.values()
    with pytest.raises(UserError, match="--member 4 is not in the population: pass one of 0..3"):
        mmjax.sample(tmp_path / "pop", member=4)


def test_a_non_editable_install_runs_from_any_directory(tmp_path):
    """Build a wheel, install it (no dependencies) into a fresh venv that borrows this venv's packages but
    not its editable mmjax, and run the console scripts and `python -m mmjax` from another directory."""
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".venv", ".git", "out", "build", "*.egg-info",
                                                                 "__pycache__", ".pytest_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    tmp_path / "dist", source], check=True, capture_output=True, timeout=300)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # a plain path line: this venv's .pth files (the editable finder among them) are not run
    pathlib.Path(site, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel, = (tmp_path / "dist").glob("mmjax-*.whl")
    subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], check=True,
                   capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write_words(elsewhere / "names.txt")
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "PYTHONPATH": ""}

    def command(*argv):
        result = subprocess.run(list(map(str, argv)), cwd=elsewhere, env=env, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout

    where, types = command(python, "-c", "import mmjax, mmjax.configs.gru; from mmjax.models import MODELS; print("
                           "mmjax.__file__); print(sum(mmjax.get_config(t).type == t for t in MODELS))").splitlines()
    assert where.startswith(site) and int(types) == len(MODELS)
    trained = command(venv / "bin" / "mmjax-train", "-i", "names.txt", "-o", "out", "--type", "gru",
                      "--max-steps", 20, "--n-embd", 8, "--n-embd2", 8, "--eval-every", 20, "--no-progress")
    assert "step 20" in trained
    assert len(command(venv / "bin" / "mmjax-sample", "-o", "out", "-n", 5).strip()) > 0
    assert len(command(python, "-m", "mmjax", "sample", "-o", "out", "-n", 3).strip()) > 0
