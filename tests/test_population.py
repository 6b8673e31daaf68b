"""Population training (mmjax/population.py): each member is the standalone run of its seed and
hyper-parameters, sweeps, the ensemble's loss, sampling and export, kill -9 and resume, several devices."""

import contextlib
import functools
import io
import itertools
import math
import os
import shutil
import signal
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmjax
from conftest import write_words
from mmjax import cli, inference, interop, optimizers, population, sampling, steps
from mmjax.errors import UserError
from mmjax.state import create_train_state
from mmjax.models import create_model
from mmjax.workdir import WorkDir

SMALL = {"transformer": dict(n_layer=1, n_head=2, n_embd=16), "gru": dict(n_embd=16, n_embd2=16),
         "mlp_bn": dict(n_embd=16, n_embd2=16), "mlp": dict(n_embd=16, n_embd2=16), "bigram": {}}
# no test reads the samples printed while training (sample_every 200 would compile a sampler in each run)
STEPS = dict(max_steps=200, eval_every=100, log_every=50, sample_every=0)
SEED = 3407

# Each case: a population, and which of its members is compared with which standalone run (a config's overrides).
CASES = {
    # member 1 of two: seed + 1, the split of the population's seed
    "transformer": (dict(population=2), 1, dict(seed=SEED + 1, split_seed=SEED)),
    # a sweep of two learning rates times two seeds: member 3 has the second rate and seed + 1
    "gru": (dict(population=2, sweep="learning_rate=5e-4,1e-2"), 3,
            dict(seed=SEED + 1, split_seed=SEED, learning_rate=1e-2)),
    "mlp_bn": (dict(population=2), 1, dict(seed=SEED + 1, split_seed=SEED)),  # BatchNorm statistics per member
    # K = 1 is the plain run; its split seed differs from its seed (a bigram: the cheapest to compile; its
    # parameters start at zero, so the seed shows in its batches)
    "bigram": (dict(population=1, seed=SEED + 1, split_seed=SEED), 0, dict(seed=SEED + 1, split_seed=SEED)),
}
# A population of 16 MLPs sweeping the optimiser's other scalars (each of two values): trained on 8 devices
# by a command and on this process's one device
OPTIMISER_SWEEP = {"weight_decay": [0.0, 0.5], "b1": [0.9, 0.5], "b2": [0.99, 0.5], "grad_clip": [0.0, 0.05]}
SWEEP_FLAGS = dict(sweep=";".join(f"{k}={','.join(map(str, v))}" for k, v in OPTIMISER_SWEEP.items()),
                   max_steps=20, eval_every=20, log_every=10, sample_every=0)

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


def flags(model_type, progress=False, **overrides):
    fields = {"type": model_type, **SMALL[model_type], **STEPS, **overrides}
    out = []
    for name, value in fields.items():
        for item in value.split(";") if name == "sweep" else [value]:
            out += [f"--{name.replace('_', '-')}", str(item)]
    return out + ([] if progress else ["--no-progress"])


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
    """For each case, the population and the standalone run; the mlp_bn population also sent SIGTERM as its
    first dispatch starts (its exit status and stderr in d / "stopped.txt") and killed (-9) at step 150, in
    other processes that run alongside, one after the other (the second finds the first's compiled programs
    in the session's compilation cache)."""
    d = tmp_path_factory.mktemp("population")
    words = write_words(d / "words.txt")
    (d / "driver.py").write_text(DRIVER)
    start = lambda name, *signal_at: subprocess.Popen(
        [sys.executable, str(d / "driver.py"), *signal_at, "-i", str(words), "-o", str(d / name),
         *flags("mlp_bn", **CASES["mlp_bn"][0])], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stopped, killed = start("stopped", "SIGTERM", "0"), None
    for model_type, (pop, _, alone) in CASES.items():
        train_cli("-i", words, "-o", d / f"{model_type}_population", *flags(model_type, **pop))
        train_cli("-i", words, "-o", d / f"{model_type}_alone", *flags(model_type, **alone))
        if killed is None and stopped.poll() is not None:
            killed = start("killed", "SIGKILL", "150")
    (d / "stopped.txt").write_text(f"{stopped.wait(timeout=600)}\n{stopped.stderr.read()}")
    killed = killed or start("killed", "SIGKILL", "150")
    assert killed.wait(timeout=600) == -signal.SIGKILL, killed.stderr.read()
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
    member_params = population.unstack(restored(population_run)["state"].params, member)
    alone_params = mmjax.inference.load(alone, which="latest").state.params
    ours, theirs = without_key_bias(model_type, member_params), without_key_bias(model_type, alone_params)
    assert ours.keys() == theirs.keys()
    for path in ours:
        np.testing.assert_allclose(ours[path], theirs[path], atol=1e-4, rtol=0, err_msg=str(path))
    # and its BatchNorm statistics (mlp_bn's; the others have none)
    member_stats = population.unstack(restored(population_run)["state"].batch_stats, member)
    alone_stats = mmjax.inference.load(alone, which="latest").state.batch_stats
    assert jax.tree.structure(member_stats) == jax.tree.structure(alone_stats)
    assert bool(jax.tree.leaves(alone_stats)) == (model_type == "mlp_bn")
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4, rtol=0), member_stats, alone_stats)


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


def test_members_of_one_seed_start_from_the_same_parameters(runs):
    """Across the sweep's settings a seed gives the same initial parameters, those of its standalone run;
    another seed gives others."""
    workdir = WorkDir(runs / "gru_population")
    config, vocab = workdir.load_config(), workdir.load_dataset().vocab
    configs = population.member_configs(config)
    assert [(c.seed, c.learning_rate) for c in configs] == [(SEED, 5e-4), (SEED + 1, 5e-4), (SEED, 1e-2),
                                                            (SEED + 1, 1e-2)]
    initial = jax.device_get(population.create_states(config, vocab, configs).params)
    leaves = jax.tree.leaves(initial)
    for same_seed in ((0, 2), (1, 3)):
        for leaf in leaves:
            np.testing.assert_array_equal(leaf[same_seed[0]], leaf[same_seed[1]])
    varied = [leaf for leaf in leaves if np.ptp(leaf[0]) > 0]  # the random ones (biases start at zero)
    assert varied and all(np.abs(leaf[0] - leaf[1]).max() > 1e-3 for leaf in varied)
    for i, member_config in enumerate(configs):  # each member's start is its standalone run's
        alone = jax.device_get(create_train_state(member_config, vocab, jax.random.PRNGKey(member_config.seed)).params)
        jax.tree.map(lambda a, b: np.testing.assert_array_equal(a[i], b), initial, alone)


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
def test_bad_population_flags_are_one_line_errors(tmp_path, words_file, capsys, argv, message):
    with pytest.raises(SystemExit) as exit:  # the command's own entry, in this process
        cli.train_command(["-i", str(words_file), "-o", str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.startswith(message) and err.count("\n") == 1, err
    assert "learning_rate, weight_decay, b1, b2, grad_clip, seed" in err or "--population" in argv
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


def mmjax_train(cwd, *argv, devices=None):
    """`python -m mmjax train ARGV` in `cwd`, with `devices` CPU devices set by the user (XLA_FLAGS), or none."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    if devices:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    return subprocess.run([sys.executable, "-m", "mmjax", "train", *map(str, argv)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """OPTIMISER_SWEEP's 16 MLPs, 20 steps: "on_8" by the command given 8 CPU devices (XLA_FLAGS, the user's),
    its stdout in "on_8.out"; "same" in this process, on one device, with the progress bar (its stderr in
    "bar.txt"); "pristine" a copy of on_8 as trained, for the tests that resume it."""
    d = tmp_path_factory.mktemp("sharded")
    words = write_words(d / "words.txt")
    args = ["-i", words, *flags("mlp", **SWEEP_FLAGS)]
    on_8 = mmjax_train(d, "-o", d / "on_8", *args, devices=8)
    assert on_8.returncode == 0, on_8.stderr
    (d / "on_8.out").write_text(on_8.stdout)
    shutil.copytree(d / "on_8", d / "pristine")
    assert jax.local_device_count() == 1
    bar = io.StringIO()
    with contextlib.redirect_stderr(bar):  # tqdm writes to the stderr of its start
        train_cli("-o", d / "same", "-i", words, *flags("mlp", progress=True, **SWEEP_FLAGS))
    (d / "bar.txt").write_text(bar.getvalue())
    return d


def test_a_population_trained_on_8_devices_restores_on_1(sharded, tmp_path):
    assert "population: 16 members on 8 cpu devices, 2 on each" in (sharded / "on_8.out").read_text()
    on_8 = restored(sharded / "on_8")  # on this process's one device
    for a, b in zip(jax.tree.leaves(on_8), jax.tree.leaves(restored(sharded / "same")), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
    run = shutil.copytree(sharded / "pristine", tmp_path / "run")
    train_cli("-o", run, "--resume", "--max-steps", "40", "--no-progress")  # and trains on, on one device
    assert [m["step"] for m in evaluations(run, member=7)] == [20, 40]


def test_the_command_gives_a_population_a_cpu_device_per_core(sharded, tmp_path):
    """XLA:CPU runs a small model on about one core: the command spreads the members over one device per core
    (as many as divide K), here on a resume (the work dir says it is a population) and on a new run whose
    --config file makes it one; a user's device count is kept (8, for the run `sharded` trained)."""
    devices = math.gcd(16, len(os.sched_getaffinity(0)))
    spread = f"population: 16 members on {devices} cpu device{'s' * (devices > 1)}, {16 // devices} on each"
    assert "population: 16 members on 8 cpu devices, 2 on each" in (sharded / "on_8.out").read_text().splitlines()
    run = shutil.copytree(sharded / "pristine", tmp_path / "pop")
    resumed = mmjax_train(tmp_path, "-o", run, "--resume", "--max-steps", 30)  # a population, as its config says
    assert resumed.returncode == 0 and spread in resumed.stdout.splitlines(), resumed.stderr
    assert [m["step"] for m in evaluations(run, member=15)] == [20, 30]
    # the same decision for a population that only the --config file makes one
    config_file = tmp_path / "sweep.py"
    config_file.write_text("import mmjax\n\ndef get_config():\n    return mmjax.get_config('mlp', sweep='seed=1,2')\n")
    asks = lambda *argv: population.is_population(cli.resolve_config(
        cli.train_parser().parse_args(["-o", str(tmp_path / "new"), *argv]), WorkDir(tmp_path / "new")))
    assert asks("--config", str(config_file)) and asks("--population", "2") and not asks("--type", "mlp")
    with pytest.raises(UserError, match="no config file"):  # refused before any device is set up
        asks("--config", str(tmp_path / "absent.py"))


def test_a_sweep_of_the_optimisers_scalars_gives_each_member_its_values_and_its_standalone_run(sharded):
    """docs/populations.md: weight_decay, b1, b2 and grad_clip can be swept. Each member's optimiser state
    holds its values, and the member is its standalone run (the same steps on one model from its seed and
    values: one compiled program for all 16, the values being in the state); each value changes the run."""
    path = sharded / "same"
    workdir = WorkDir(path)
    config, dataset = workdir.load_config(), workdir.load_dataset()
    configs = population.member_configs(config)
    grid = [dict(zip(OPTIMISER_SWEEP, values)) for values in itertools.product(*OPTIMISER_SWEEP.values())]
    assert [{k: c[k] for k in OPTIMISER_SWEEP} for c in configs] == grid and {c.seed for c in configs} == {SEED}
    states = restored(path)["state"]
    held = optimizers.hyperparams(states.opt_state)
    for name in OPTIMISER_SWEEP:
        np.testing.assert_allclose(np.asarray(held[name]), [c[name] for c in configs], rtol=1e-6, err_msg=name)
    np.testing.assert_allclose(np.asarray(held["learning_rate"]), [config.learning_rate] * 16, rtol=1e-6)
    assert [{k: m[k] for k in OPTIMISER_SWEEP} for m in evaluations(path, step=20)] == grid  # and its lines say so
    x_nt, y_nt = map(jnp.asarray, dataset.vocab.encode_words(dataset.train_words))
    params = []
    for i, member_config in enumerate(configs):
        alone = create_train_state(member_config, dataset.vocab, jax.random.PRNGKey(member_config.seed))
        for _ in range(2):  # the run's two dispatches of 10 steps
            alone, _ = steps.train_steps(alone, x_nt, y_nt, num_steps=10, batch_size=config.batch_size)
        params.append(jax.device_get(alone.params))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, atol=1e-5, rtol=0, err_msg=str(i)),
                     jax.device_get(states.params), params[i])
    # each field's two values give different runs, whatever the other fields are (member i and its partner),
    # by more than ten times the tolerance above: the comparison tells every member from its neighbours
    for bit, name in enumerate(reversed(OPTIMISER_SWEEP)):
        for i in range(16):
            if not i & (1 << bit):
                apart = max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(params[i]),
                                                                jax.tree.leaves(params[i | 1 << bit])))
                assert apart > 1e-4, (name, i, apart)


def test_the_progress_bar_shows_the_best_and_median_loss_of_the_members(sharded):
    """docs/populations.md: the bar's postfix is the population's best and median loss, the last step's."""
    text = (sharded / "bar.txt").read_text()
    final = [m["loss"] for m in WorkDir(sharded / "same").metrics() if m["step"] == 20 and "loss" in m]
    halfway = [m["loss"] for m in WorkDir(sharded / "same").metrics() if m["step"] == 10 and "loss" in m]
    assert len(final) == len(halfway) == 16 and np.min(final) < np.median(final)
    for losses in (halfway, final):  # each dispatch's
        assert f"20/20" in text and f"best={np.min(losses):.4f}, median={np.median(losses):.4f}" in text, text
    last = text.replace("\n", "\r").strip("\r").split("\r")[-1]  # the bar as it is left
    assert last.startswith("100%") and f"best={np.min(final):.4f}, median={np.median(final):.4f}" in last, last


def test_ensemble_loss_is_the_nll_of_the_averaged_probabilities(sharded):
    """The evaluation's last entry, the ensemble's, is the NLL of the members' averaged probabilities (here 16
    trained members, their test words padded to the evaluation's batch as training pads them)."""
    workdir = WorkDir(sharded / "same")
    config, dataset = workdir.load_config(), workdir.load_dataset()
    x_bt, y_bt = dataset.vocab.encode_words(dataset.test_words)
    states = restored(sharded / "same")["state"]
    step = lambda *args: steps.population_eval_step(*args, spmd_axis=None)  # as the training loop calls it
    losses_k = steps.evaluate(states, x_bt, y_bt, config.eval_batch_size, step=step)
    logits_kbtv = np.asarray(jax.vmap(lambda s: s.apply_fn({"params": s.params}, x_bt))(states), np.float64)
    probs_kbtv = np.exp(logits_kbtv - logits_kbtv.max(-1, keepdims=True))
    probs_btv = (probs_kbtv / probs_kbtv.sum(-1, keepdims=True)).mean(0)
    mask = y_bt >= 0
    expected = -np.log(np.take_along_axis(probs_btv, np.where(mask, y_bt, 0)[..., None], -1)[..., 0])[mask].mean()
    assert abs(losses_k[-1] - expected) < 1e-5
    assert losses_k[-1] <= losses_k[:-1].mean() and len(set(losses_k[:-1].round(6))) == 16
    # identical members: the ensemble is each of them
    same = population.create_states(config, dataset.vocab, population.member_configs(config)[:1] * 16)
    losses_k = steps.evaluate(same, x_bt, y_bt, config.eval_batch_size, step=step)
    np.testing.assert_allclose(losses_k[1:], losses_k[0], rtol=1e-6)


def test_sampling_the_mixture_of_identical_members_samples_the_member(runs):
    loaded = inference.load(runs / "gru_alone")
    variables = {"params": loaded.state.params, "batch_stats": loaded.state.batch_stats}
    stacked = jax.tree.map(lambda a: jnp.stack([a] * 4), variables)  # as many as the gru population's
    alone = sampling.sample_words(loaded.model, variables, loaded.dataset.vocab, 1, 30)
    assert sampling.sample_words(population.Mixture(loaded.model), stacked, loaded.dataset.vocab, 1, 30) == alone


def test_sample_and_export_pick_a_member(runs, tmp_path, capsys):
    path = runs / "gru_population"
    best = restored(path)["best"]
    chosen = inference.load(path)
    assert chosen.config.seed == SEED + int(np.argmin(best["score"])) % 2
    with pytest.raises(SystemExit):
        cli.sample_command(["-o", str(path), "--member", "4"])
    assert "error: --member 4 is not in the population: pass one of 0..3" in capsys.readouterr().err
    # --ensemble: the mixture's names, those of mmjax.sample for the same seed; sample i depends only on
    # (seed, i): fewer samples are a prefix, another batch size the same names
    cli.sample_main(cli.sample_parser().parse_args(["-o", str(path), "--ensemble", "-n", "30", "--out",
                                                    str(tmp_path / "names.txt")]))
    assert "novelty" in capsys.readouterr().out
    names = (tmp_path / "names.txt").read_text().splitlines()
    assert len(names) == 30 and names == mmjax.sample(path, num_samples=30, ensemble=True)
    assert mmjax.sample(path, num_samples=12, ensemble=True) == names[:12]
    assert mmjax.sample(path, num_samples=30, ensemble=True, batch_size=7) == names
    assert names != mmjax.sample(path, num_samples=30)  # not the best member's
    pytest.importorskip("torch")
    interop.main(["export", "-o", str(path), "--member", "2", str(tmp_path / "model.pt")])
    import torch

    tensors = torch.load(tmp_path / "model.pt", weights_only=True)
    member = jax.tree.map(lambda a: np.asarray(a[2]), best["params"])
    expected = interop.to_makemore("gru", {"params": member})
    assert tensors.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(tensors[name].numpy(), value)
