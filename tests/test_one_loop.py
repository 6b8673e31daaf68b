"""One training loop for one model and a population (mmjax/train.py over mmjax/trainees.py): a population's
samples while it trains are its best member's, its eval hooks see each member, a diverged member is
reported while the others train on, one metrics schema; a repeated run compiles nothing new."""

import jax
import numpy as np
import pytest

import mmjax
from conftest import write_words
from helpers import small_config
from mmjax import optimizers, population, steps, train
from mmjax.errors import NonFiniteLossError
from mmjax.workdir import WorkDir

STEPS = dict(max_steps=20, eval_every=10, log_every=10, diagnostics=False)


@pytest.fixture(scope="module")
def words(tmp_path_factory):
    return write_words(tmp_path_factory.mktemp("loop") / "words.txt")


def member_lines(path, member):
    return [m for m in WorkDir(path).metrics() if m.get("member") == member]


def test_a_population_samples_its_best_member_while_it_trains(tmp_path, words, capsys):
    """The samples printed at step 20 come from the member that was best at step 10's evaluation: they are
    that member's standalone run's samples at step 20, which it equals."""
    config = small_config("gru", **STEPS, population=3, sample_every=20)
    mmjax.train_and_evaluate(config, tmp_path / "pop", words, progress=False)
    printed = [line for line in capsys.readouterr().out.splitlines() if "samples:" in line]
    assert len(printed) == 1 and printed[0].startswith("step 20 | samples: ")
    at_10 = [m for m in WorkDir(tmp_path / "pop").metrics() if m["step"] == 10 and "test_loss" in m]
    best = min(at_10, key=lambda m: m["test_loss"])["member"]
    alone = small_config("gru", **STEPS, seed=config.seed + best, split_seed=config.seed, sample_every=20)
    mmjax.train_and_evaluate(alone, tmp_path / "alone", words, progress=False)
    assert [line for line in capsys.readouterr().out.splitlines() if "samples:" in line] == printed


def test_eval_hooks_see_each_member_and_the_schema_names_it(tmp_path, words):
    norm = lambda state, x_bt, y_bt: {"norm": float(sum(np.square(a).sum() for a in jax.tree.leaves(state.params)))}
    config = small_config("mlp", **STEPS, population=2)
    states = train.train_and_evaluate(config, tmp_path / "pop", words, eval_hooks=[norm], progress=False)
    for i in range(2):
        lines = member_lines(tmp_path / "pop", i)
        # a training line per dispatch, an evaluation line per evaluation, each naming its member
        assert [sorted(m) for m in lines if "loss" in m] == [["loss", "member", "step"]] * 2
        evals = [m for m in lines if "test_loss" in m]
        assert [m["step"] for m in evals] == [10, 20]
        final = population.unstack(states.params, i)
        assert evals[-1]["norm"] == pytest.approx(sum(np.square(a).sum() for a in jax.tree.leaves(final)), rel=1e-6)
    assert {m["member"] for m in WorkDir(tmp_path / "pop").metrics() if "member" in m} == {0, 1}
    alone = small_config("mlp", **STEPS)
    train.train_and_evaluate(alone, tmp_path / "alone", words, eval_hooks=[norm], progress=False)
    assert {k for m in WorkDir(tmp_path / "alone").metrics() for k in m} == {
        "step", "loss", "train_loss", "test_loss", "norm"}


def test_a_member_that_diverges_is_reported_and_the_others_train_on(tmp_path, words, capsys):
    config = small_config("mlp", **STEPS, sweep="learning_rate=1e-3,1e9")
    states = mmjax.train_and_evaluate(config, tmp_path / "pop", words, progress=False)
    err = capsys.readouterr().err
    assert "warning: member 1 (seed=3407, learning_rate=1e+09) diverged: loss " in err
    assert err.count("diverged") == 1 and "the others train on" in err
    assert states.step.tolist() == [20, 20]
    healthy = [m for m in member_lines(tmp_path / "pop", 0) if "test_loss" in m]
    assert [m["step"] for m in healthy] == [10, 20] and all(np.isfinite(m["test_loss"]) for m in healthy)
    best = WorkDir(tmp_path / "pop").checkpoints.restore(population.abstract_checkpoint(
        config, WorkDir(tmp_path / "pop").load_dataset().vocab))["best"]
    assert np.isfinite(float(best["score"][0])) and not np.isfinite(float(best["score"][1]))


def test_a_member_whose_evaluation_is_not_finite_is_reported(tmp_path, words, capsys, monkeypatch):
    """A NaN in member 0's evaluation (not in its training) reports it; member 1 trains and evaluates on."""
    evaluate = steps.population_eval_step

    def nan_for_member_0(states, *args, **kwargs):
        sums, count = evaluate(states, *args, **kwargs)
        return sums.at[0].set(np.nan), count

    monkeypatch.setattr(steps, "population_eval_step", nan_for_member_0)
    mmjax.train_and_evaluate(small_config("mlp", **STEPS, population=2), tmp_path / "pop", words, progress=False)
    err = capsys.readouterr().err
    assert "warning: member 0 (seed=3407) diverged: test_loss nan at step 10; the others train on" in err
    assert [m["step"] for m in member_lines(tmp_path / "pop", 1) if "test_loss" in m] == [10, 20]


def test_when_every_member_has_diverged_training_stops(tmp_path, words):
    config = small_config("mlp", **STEPS, population=2, learning_rate=1e9)
    with pytest.raises(NonFiniteLossError, match="every member diverged; the last: loss is (nan|inf|-inf) at step"):
        mmjax.train_and_evaluate(config, tmp_path / "pop", words, progress=False)


def test_a_repeated_or_resumed_run_compiles_nothing_new(tmp_path, words):
    """One model and optimiser object per shape: the second run of a config, and a resume with another
    learning rate, reuse every compiled program of the first (counted with jax.monitoring's events)."""
    compiled = []  # lowerings to MLIR and backend compilations; jax.eval_shape (the restore's shapes) only traces
    listener = lambda event, duration, **kwargs: compiled.append(event) if event in (
        "/jax/core/compile/jaxpr_to_mlir_module_duration", "/jax/core/compile/backend_compile_duration") else None
    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        config = small_config("bow", **{**STEPS, "diagnostics": True}, sample_every=10, val_size=20)
        mmjax.train_and_evaluate(config, tmp_path / "first", words, progress=False)
        first = len(compiled)
        mmjax.train_and_evaluate(config, tmp_path / "second", words, progress=False)
        resumed = small_config("bow", **{**STEPS, "diagnostics": True, "max_steps": 30}, sample_every=10,
                               val_size=20, learning_rate=1e-2)
        mmjax.train_and_evaluate(resumed, tmp_path / "first", progress=False)
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
    assert first > 0 and len(compiled) == first, compiled[first:]
    latest = mmjax.inference.load(tmp_path / "first", which="latest").state
    assert float(optimizers.hyperparams(latest.opt_state)["learning_rate"]) == pytest.approx(1e-2)
