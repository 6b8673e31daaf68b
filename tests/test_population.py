"""Population training (mmjax/population.py): each member is the standalone run of its seed and
hyper-parameters, sweeps, the ensemble's loss, sampling and export, kill -9 and resume, several devices."""

import functools
import math
import os
import signal
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmjax
from conftest import ROOT, write_words
from mmjax import cli, inference, interop, optimizers, population, sampling, steps
from mmjax.errors import UserError
from mmjax.state import create_train_state
from mmjax.models import create_model
from mmjax.workdir import WorkDir

SMALL = {"transformer": dict(n_layer=1, n_head=2, n_embd=16), "gru": dict(n_embd=16, n_embd2=16),
         "mlp_bn": dict(n_embd=16, n_embd2=16), "mlp": dict(n_embd=16, n_embd2=16)}
STEPS = dict(max_steps=200, eval_every=100, log_every=50)
SEED = 3407

# Each case: a population, and which of its members is compared with which standalone run (a config's overrides).
CASES = {
    # K = 1 is the plain run; its split seed differs from its seed
    "transformer": (dict(population=1, seed=SEED + 1, split_seed=SEED), 0, dict(seed=SEED + 1, split_seed=SEED)),
    # a sweep of two learning rates times two seeds: member 3 has the second rate and seed + 1
    "gru": (dict(population=2, sweep="learning_rate=5e-4,1e-2"), 3,
            dict(seed=SEED + 1, split_seed=SEED, learning_rate=1e-2)),
    "mlp_bn": (dict(population=2), 1, dict(seed=SEED + 1, split_seed=SEED)),  # BatchNorm statistics per member
}

# train.py that sends itself a signal (SIGKILL, SIGTERM) as the population's dispatch from step N starts
DRIVER = """
import os, signal, sys
from mmjax import cli, steps
signum, at = getattr(signal, sys.argv.pop(1)), int(sys.argv.pop(1))
train_steps = steps.population_train_steps
def signalling_train_steps(states, *args, **kwargs):
    if int(states.step[0]) == at:
        os.kill(os.getpid(), signum)
    return train_steps(states, *args, **kwargs)
steps.population_train_steps = signalling_train_steps
cli.run(cli.train_main, cli.train_parser())
"""


def flags(model_type, **overrides):
    fields = {"type": model_type, **SMALL[model_type], **STEPS, **overrides}
    out = []
    for name, value in fields.items():
        for item in value.split(";") if name == "sweep" else [value]:
            out += [f"--{name.replace('_', '-')}", str(item)]
    return out + ["--no-progress"]


def train_cli(*args):
    cli.train_main(cli.train_parser().parse_args([str(a) for a in args]))


@functools.cache
def restored(path):
    """A population work dir's latest checkpoint: {"state": stacked TrainState, "best": each member's best}."""
    workdir = WorkDir(path, read_only=True)
    return workdir.checkpoints.restore(population.abstract_checkpoint(workdir.load_config(), workdir.load_dataset().vocab))


def evaluations(path, **match):
    return [m for m in WorkDir(path).metrics() if all(m.get(k) == v for k, v in match.items()) and "test_loss" in m]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """For each case, the population and the standalone run; the mlp_bn population also killed (-9) at
    step 150, and sent SIGTERM as its first dispatch starts, in other processes started first so that they
    run alongside (the second's exit status and stderr in d / "stopped.txt")."""
    d = tmp_path_factory.mktemp("population")
    words = write_words(d / "words.txt")
    (d / "driver.py").write_text(DRIVER)
    start = lambda name, *signal_at: subprocess.Popen(
        [sys.executable, str(d / "driver.py"), *signal_at, "-i", str(words), "-o", str(d / name),
         *flags("mlp_bn", **CASES["mlp_bn"][0])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed, stopped = start("killed", "SIGKILL", "150"), start("stopped", "SIGTERM", "0")
    for model_type, (pop, _, alone) in CASES.items():
        train_cli("-i", words, "-o", d / f"{model_type}_population", *flags(model_type, **pop))
        train_cli("-i", words, "-o", d / f"{model_type}_alone", *flags(model_type, **alone))
    assert killed.wait(timeout=600) == -signal.SIGKILL, killed.stderr.read()
    (d / "stopped.txt").write_text(f"{stopped.wait(timeout=600)}\n{stopped.stderr.read()}")
    return d


def without_key_bias(model_type, params):
    """The Transformer's attention key bias has no true gradient (it shifts all of a query's scores
    equally), so each side's rounding noise becomes its own AdamW steps (as in test_parity.py): left out."""
    flat = flax.traverse_util.flatten_dict(jax.device_get(params))
    if model_type == "transformer":
        for path, value in flat.items():
            if path[-3:] == ("attn", "c_attn", "bias"):
                n_embd = value.shape[-1] // 3
                flat[path] = np.concatenate([value[..., :n_embd], value[..., 2 * n_embd:]], -1)
    return flat


@pytest.mark.parametrize("model_type", CASES)
def test_a_member_is_the_standalone_run_of_its_seed_and_hyperparameters(runs, model_type):
    _, member, _ = CASES[model_type]
    population_run, alone = runs / f"{model_type}_population", runs / f"{model_type}_alone"
    ours, theirs = evaluations(population_run, member=member), evaluations(alone)
    assert [m["step"] for m in ours] == [m["step"] for m in theirs] == [100, 200]
    for a, b in zip(ours, theirs):
        assert abs(a["test_loss"] - b["test_loss"]) < 1e-5 and abs(a["train_loss"] - b["train_loss"]) < 1e-5
    member_params = jax.tree.map(lambda a: a[member], restored(population_run)["state"].params)
    alone_params = mmjax.inference.load(alone, which="latest").state.params
    ours, theirs = without_key_bias(model_type, member_params), without_key_bias(model_type, alone_params)
    assert ours.keys() == theirs.keys()
    for path in ours:
        np.testing.assert_allclose(ours[path], theirs[path], atol=1e-4, rtol=0, err_msg=str(path))


def test_a_sweep_gives_each_member_its_learning_rate(runs):
    path = runs / "gru_population"
    states = restored(path)["state"]
    rates = np.asarray(optimizers.hyperparams(states.opt_state)["learning_rate"])  # injected, one per member
    np.testing.assert_allclose(rates, [5e-4, 5e-4, 1e-2, 1e-2], rtol=1e-6)
    final = {m["member"]: m for m in evaluations(path, step=200)}
    assert [final[i]["seed"] for i in range(4)] == [SEED, SEED + 1, SEED, SEED + 1]
    # on 300 random words, 200 steps at 1e-2 fit the training words better than at 5e-4, for both seeds
    for slow, fast in ((0, 2), (1, 3)):
        assert final[fast]["train_loss"] < final[slow]["train_loss"] - 0.05
    # the same seed starts from the same parameters; the rates then take them apart
    first = jax.tree.leaves(states.params)[0]
    assert np.abs(first[0] - first[2]).max() > 1e-2


def test_the_table_and_metrics_of_a_sweep(runs, capsys):
    config = WorkDir(runs / "gru_population").load_config()
    metrics = WorkDir(runs / "gru_population").metrics()
    table = population.summary(config, population.member_configs(config), metrics, "test_loss")
    best = {i: min(m["test_loss"] for m in metrics if m.get("member") == i and "test_loss" in m) for i in range(4)}
    means = {rate: np.mean([best[i], best[i + 1]]) for rate, i in ((5e-4, 0), (1e-2, 2))}
    winner = min(means, key=means.get)
    assert f"winner: learning_rate={winner:g} (test_loss {means[winner]:.4f} mean over 2 seeds)" in table
    assert f"learning_rate=0.0005 | 2     | {means[5e-4]:.4f} ± " in table
    ensemble = [m for m in metrics if "ensemble_test_loss" in m]
    assert [m["step"] for m in ensemble] == [100, 200]
    events = list((runs / "gru_population").glob("events.out.tfevents.*"))
    assert b"member_3/Loss/test" in events[0].read_bytes() and b"ensemble/Loss/test" in events[0].read_bytes()


@pytest.mark.parametrize("argv, message", [
    (["--sweep", "n_embd=16,32"], "error: cannot sweep 'n_embd': the members share one compiled program"),
    (["--population", "0"], "error: --population must be at least 1, got 0"),
])
def test_bad_population_flags_are_one_line_errors(tmp_path, words_file, argv, message):
    result = subprocess.run([sys.executable, str(ROOT / "train.py"), "-i", str(words_file), "-o", str(tmp_path / "out"),
                             *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and result.stderr.startswith(message) and result.stderr.count("\n") == 1
    assert "learning_rate, weight_decay, b1, b2, grad_clip, seed" in result.stderr or "--population" in argv
    assert not (tmp_path / "out").exists()


def test_resumed_after_kill_9_equals_the_population_never_stopped(runs):
    whole, killed = runs / "mlp_bn_population", runs / "killed"
    assert sorted(p.name for p in (killed / "checkpoints" / "latest").iterdir()) == ["100"]
    train_cli("-o", killed, "--resume", "--no-progress")
    for a, b in zip(jax.tree.leaves(restored(whole)), jax.tree.leaves(restored.__wrapped__(killed)), strict=True):
        np.testing.assert_array_equal(a, b)
    assert (killed / "metrics.jsonl").read_bytes() == (whole / "metrics.jsonl").read_bytes()


def test_sigterm_stops_a_population_at_the_end_of_the_dispatch_and_resume_continues_it(runs):
    whole, stopped = runs / "mlp_bn_population", runs / "stopped"
    status, stderr = (runs / "stopped.txt").read_text().split("\n", 1)
    assert status == "143" and stderr.count("\n") == 1, stderr  # one line, no traceback
    assert stderr.startswith("stopped at step 50: continue with ") and stderr.rstrip().endswith("--resume")
    assert sorted(p.name for p in (stopped / "checkpoints" / "latest").iterdir()) == ["50"]
    assert [m["step"] for m in WorkDir(stopped).metrics() if "ensemble_test_loss" in m] == [50]  # evaluated there
    train_cli("-o", stopped, "--resume", "--no-progress")
    for a, b in zip(jax.tree.leaves(restored(whole)["state"]), jax.tree.leaves(restored.__wrapped__(stopped)["state"]),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_command_gives_a_population_a_cpu_device_per_core(tmp_path, words_file):
    """XLA:CPU runs a small model on about one core: the command spreads the members over one device per core
    (as many as divide K), here on a resume (the work dir says it is a population) and on a new run whose
    --config file makes it one; a user's device count is kept."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    command = lambda *argv, env=env: subprocess.run(
        [sys.executable, "-m", "mmjax", "train", "-o", str(tmp_path / "pop"), *map(str, argv)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    devices = math.gcd(2, len(os.sched_getaffinity(0)))
    spread = f"population: 2 members on {devices} cpu device{'s' * (devices > 1)}, {2 // devices} on each"
    new = command("-i", words_file, *flags("mlp", population=2, max_steps=20, eval_every=10, log_every=10),
                  env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"})
    assert new.returncode == 0 and "population: 2 members on 1 cpu device, 2 on each" in new.stdout, new.stderr
    resumed = command("--resume", "--max-steps", 30)  # a population, as its work dir's config says
    assert resumed.returncode == 0 and spread in resumed.stdout.splitlines(), resumed.stderr
    # the same decision for a population that only the --config file makes one
    config_file = tmp_path / "sweep.py"
    config_file.write_text("import mmjax\n\ndef get_config():\n    return mmjax.get_config('mlp', sweep='seed=1,2')\n")
    asks = lambda *argv: population.is_population(cli.resolve_config(
        cli.train_parser().parse_args(["-o", str(tmp_path / "new"), *argv]), WorkDir(tmp_path / "new")))
    assert asks("--config", str(config_file)) and asks("--population", "2") and not asks("--type", "mlp")
    with pytest.raises(UserError, match="no config file"):  # refused before any device is set up
        asks("--config", str(tmp_path / "absent.py"))


def test_ensemble_loss_is_the_nll_of_the_averaged_probabilities(words_file):
    config = mmjax.get_config("mlp", **SMALL["mlp"], population=3)
    dataset = mmjax.input_pipeline.Dataset.from_words(words_file.read_text().split(), SEED)
    x_bt, y_bt = dataset.vocab.encode_words(dataset.test_words)
    states = population.create_states(config, dataset.vocab, population.member_configs(config))
    sums, count = steps.population_eval_step(states, x_bt, y_bt)
    losses_k = np.asarray(sums, np.float64) / int(count)
    logits_kbtv = np.asarray(jax.vmap(lambda s: s.apply_fn({"params": s.params}, x_bt))(states), np.float64)
    probs_kbtv = np.exp(logits_kbtv - logits_kbtv.max(-1, keepdims=True))
    probs_btv = (probs_kbtv / probs_kbtv.sum(-1, keepdims=True)).mean(0)
    mask = y_bt >= 0
    expected = -np.log(np.take_along_axis(probs_btv, np.where(mask, y_bt, 0)[..., None], -1)[..., 0])[mask].mean()
    assert abs(losses_k[-1] - expected) < 1e-5
    assert losses_k[-1] <= losses_k[:-1].mean() and len(set(losses_k[:-1].round(6))) == 3
    # identical members: the ensemble is each of them
    same = population.create_states(config, dataset.vocab, population.member_configs(config)[:1] * 3)
    sums, count = steps.population_eval_step(same, x_bt, y_bt)
    np.testing.assert_allclose(np.asarray(sums[1:]), float(sums[0]), rtol=1e-6)


def test_sampling_the_mixture_of_identical_members_samples_the_member(words_file):
    config = mmjax.get_config("gru", **SMALL["gru"])
    dataset = mmjax.input_pipeline.Dataset.from_words(words_file.read_text().split(), SEED)
    state = create_train_state(config, dataset.vocab, jax.random.PRNGKey(5))
    model = create_model(config, dataset.vocab.size, dataset.vocab.block_size)
    variables = {"params": state.params}
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), variables)
    alone = sampling.sample_words(model, variables, dataset.vocab, 1, 30)
    assert sampling.sample_words(population.Mixture(model), stacked, dataset.vocab, 1, 30) == alone


def test_sample_and_export_pick_a_member(runs, tmp_path, capsys):
    path = runs / "gru_population"
    best = restored(path)["best"]
    chosen = inference.load(path)
    assert chosen.config.seed == SEED + int(np.argmin(best["score"])) % 2
    cli.sample_main(cli.sample_parser().parse_args(["-o", str(path), "--ensemble", "-n", "5"]))
    assert "novelty" in capsys.readouterr().out
    pytest.importorskip("torch")
    interop.main(["export", "-o", str(path), "--member", "2", str(tmp_path / "model.pt")])
    import torch

    tensors = torch.load(tmp_path / "model.pt", weights_only=True)
    member = jax.tree.map(lambda a: np.asarray(a[2]), best["params"])
    expected = interop.to_makemore("gru", {"params": member})
    assert tensors.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(tensors[name].numpy(), value)
    with pytest.raises(SystemExit):
        cli.sample_command(["-o", str(path), "--member", "4"])
    assert "error: --member 4 is not in the population: pass one of 0..3" in capsys.readouterr().err


def test_a_population_trained_on_8_devices_restores_on_1(tmp_path, words_file):
    run = tmp_path / "run"
    args = ["-i", str(words_file), "-o", str(run), *flags("mlp", population=8, max_steps=20, eval_every=20,
                                                             log_every=20)]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    probe = ("import jax, sys; from mmjax import cli, sampling; assert jax.local_device_count() == 8; "
             "assert sampling.local_mesh(8, 'pop').shape == {'pop': 8}; cli.train_command(sys.argv[1:])")
    result = subprocess.run([sys.executable, "-c", probe, *args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    on_8 = restored(run)  # on this process's one device
    assert jax.local_device_count() == 1
    same = tmp_path / "same"  # the same population trained on one device
    train_cli(*[str(same) if a == str(run) else a for a in args])
    for a, b in zip(jax.tree.leaves(on_8), jax.tree.leaves(restored(same)), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    train_cli("-o", run, "--resume", "--max-steps", "40", "--no-progress")  # and trains on, on one device
    assert [m["step"] for m in evaluations(run, member=7)] == [20, 40]
