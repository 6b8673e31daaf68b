"""Regularisation and validation (issue 15): dropout at a traced rate (one per member under vmap), off by
default and then makemore's numbers exactly; the validation split, and the best checkpoint chosen on it;
their flags' one-line errors. (The schedules' learning rates are test_library.py's.)"""

import collections
import csv
import dataclasses
import io
import json
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmjax
from conftest import ROOT, write_words
from helpers import SMALL, assert_refused, run_script, small_config, train
from mmjax import optimizers, population, sampling, steps
from mmjax import train as trainer
from mmjax.state import create_train_state
from mmjax.errors import UserError
from mmjax.input_pipeline import Dataset, read_words
from mmjax.models import MODELS, create_model, has_dropout
from mmjax.models.layers import drop, hashed_bits
from mmjax.workdir import WorkDir
from test_cli import scalars

DROPOUT_TYPES = [t for t in MODELS if has_dropout(t)]
# at this learning rate the validation loss is lowest at step 20 and the test loss at step 10
STEPS = dict(max_steps=20, eval_every=10, log_every=10, sample_every=0, learning_rate=1e-2)
VAL = 20  # of write_words' 300 words: 30 test, 250 train, 20 validation
# The averaging decay of every averaged run here: the decay is part of the optimiser's structure, so one value
# is one optimiser, whose programs compile once. At 0.5 the bound binds from update 8 on (min(0.5, 9 / 18)).
EMA = 0.5


class Drop(nn.Module):
    @nn.compact
    def __call__(self, x, rate):
        return drop(self, x, rate)


def test_dropout_is_inverted_dropout_at_a_traced_rate_one_per_member():
    x = jax.random.normal(jax.random.PRNGKey(0), (400, 250))  # 100,000 elements
    rates = jnp.array([0.0, 0.25, 0.5])
    dropped = jax.jit(jax.vmap(lambda rate: Drop().apply({}, x, rate, rngs={"dropout": jax.random.PRNGKey(1)})))
    out = np.asarray(dropped(rates))
    np.testing.assert_array_equal(out[0], x)  # rate 0: x itself, bit for bit
    for rate, out_r in zip([0.25, 0.5], out[1:]):
        kept = out_r != 0
        assert abs(kept.mean() - (1 - rate)) < 0.01  # 7 standard deviations of the fraction kept
        # the kept elements scaled by 1 / (1 - rate), within float32's rounding (XLA multiplies by the inverse)
        np.testing.assert_allclose(out_r[kept], np.asarray(x)[kept] / np.float32(1 - rate), rtol=2.5e-7, atol=0)
    assert not np.array_equal(out[1] != 0, out[2] != 0)
    # the hashed masks (layers.hashed_bits) are independent of their neighbours and across keys: at rate 0.5
    # two independent masks agree on half the elements (0.5 +- 0.0016 is one standard deviation here)
    kept = out[2] != 0
    other = np.asarray(Drop().apply({}, x, 0.5, rngs={"dropout": jax.random.PRNGKey(2)})) != 0
    for a, b in [(kept[:, 1:], kept[:, :-1]), (kept[1:], kept[:-1]), (kept, other)]:
        assert abs((a == b).mean() - 0.5) < 0.01
    bits = np.asarray(hashed_bits(jax.random.PRNGKey(3), (1 << 16,)))
    counts = np.bincount(bits >> 24, minlength=256)  # the top byte: 256 cells of 256 expected
    assert ((counts - 256) ** 2 / 256).sum() < 350  # chi-square, 255 degrees of freedom: p ~ 1e-4
    assert Drop().apply({}, x, None) is x  # None: off, nothing computed


@pytest.mark.parametrize("model_type", DROPOUT_TYPES)
def test_training_at_rate_zero_is_the_evaluation_pass_bit_for_bit(model_type):
    model = create_model(small_config(model_type), 11, 9)
    idx_bt = jax.random.randint(jax.random.PRNGKey(1), (3, 9), 1, 11).at[:, 0].set(0)
    variables = model.init(jax.random.PRNGKey(0), idx_bt)
    rngs = {"dropout": jax.random.PRNGKey(2)}
    # op by op: the formula's exactness, not XLA's fusion of two programs
    logits = lambda rate: model.apply(variables, idx_bt, train=True, dropout=jnp.float32(rate), rngs=rngs)
    evaluated = model.apply(variables, idx_bt)
    np.testing.assert_array_equal(logits(0), evaluated)
    assert np.abs(logits(0.3) - evaluated).max() > 1e-2  # every model drops in training


def test_dropout_changes_the_training_loss_and_rate_zero_changes_nothing(words_file):
    config = small_config("mlp")  # the cheapest to compile, twice (with and without dropout)
    dataset = Dataset.from_words(read_words(words_file), config.seed)
    x_nt, y_nt = map(jnp.asarray, dataset.vocab.encode_words(dataset.train_words))

    initial = create_train_state(config, dataset.vocab, jax.random.PRNGKey(0))

    def run(rate):  # from a copy of one state (its apply_fn, so one compilation for every traced rate)
        state, losses = steps.train_steps(jax.tree.map(jnp.copy, initial), x_nt, y_nt, rate, num_steps=10,
                                            batch_size=32)
        return jax.device_get((state.params, losses[:10]))

    plain, zero, dropped, again = run(None), run(jnp.float32(0)), run(jnp.float32(0.2)), run(jnp.float32(0.2))
    # the traced rate at 0 gives the run without dropout (makemore's), parameters bit for bit
    jax.tree.map(np.testing.assert_array_equal, zero, plain)
    assert np.isfinite(dropped[1]).all() and np.abs(dropped[1] - plain[1]).min() > 0
    jax.tree.map(np.testing.assert_array_equal, dropped, again)  # the same seed, the same run


def test_parameter_averaging_is_the_hand_computed_average_and_leaves_training_alone(words_file):
    """ema_decay: after update t the average moves to the new parameters by 1 - min(decay, (1 + t) / (10 + t));
    the trained parameters are those of the run without it, bit for bit."""
    dataset = Dataset.from_words(read_words(words_file), 3407)
    x_nt, y_nt = map(jnp.asarray, dataset.vocab.encode_words(dataset.train_words))

    def run(ema_decay):  # one step per dispatch, each step's parameters kept
        state = create_train_state(small_config("mlp", ema_decay=ema_decay), dataset.vocab, jax.random.PRNGKey(0))
        params = [jax.device_get(state.params)]
        for _ in range(12):
            state, _ = steps.train_steps(state, x_nt, y_nt, num_steps=1, batch_size=32)
            params.append(jax.device_get(state.params))
        return state, params

    (plain, plain_params), (averaged, params) = run(0.0), run(EMA)
    jax.tree.map(np.testing.assert_array_equal, params, plain_params)
    assert optimizers.evaluated(plain) is plain
    by_hand = params[0]
    for t, new in enumerate(params[1:]):
        d = min(EMA, (1 + t) / (10 + t))  # 0.1, 0.18, ... then 0.5 from t = 8 on
        by_hand = jax.tree.map(lambda a, p: d * a + (1 - d) * p, by_hand, new)
    result = jax.device_get(optimizers.evaluated(averaged).params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), result, by_hand)
    assert max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(result), jax.tree.leaves(params[-1]))) > 1e-4


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """MLPs (the cheapest to compile of the models with dropout) trained 20 steps on write_words' words with a
    validation set and an average of their parameters (EMA): one with dropout 0.2, and a population sweeping
    dropout 0 and 0.2."""
    d = tmp_path_factory.mktemp("regularisation")
    words = write_words(d / "words.txt")
    trainer.train_and_evaluate(small_config("mlp", **STEPS, val_size=VAL, dropout=0.2, ema_decay=EMA), d / "val",
                               words, progress=False)
    trainer.train_and_evaluate(small_config("mlp", **STEPS, val_size=VAL, ema_decay=EMA, sweep="dropout=0,0.2"),
                               d / "population", words, progress=False)
    return d


def test_an_averaged_run_evaluates_keeps_and_resumes_its_average(runs, tmp_path):
    """With --ema-decay: the logged losses are the average's, the best checkpoint holds it (what sample.py
    samples), a resumed run continues it exactly (and a population member is its standalone run:
    test_a_member_with_dropout_is_the_standalone_run_of_its_rate)."""
    workdir = WorkDir(runs / "val")
    config, dataset = workdir.load_config(), workdir.load_dataset()
    assert config.ema_decay == EMA and config.dropout == 0.2
    latest = workdir.checkpoints.restore(create_train_state(config, dataset.vocab, jax.random.PRNGKey(0)))
    average = optimizers.evaluated(latest)
    assert latest.params is not average.params
    x_nt, y_nt = dataset.vocab.encode_words(dataset.val_words)
    logged = evaluations(runs / "val")[-1]
    assert logged["val_loss"] == pytest.approx(steps.evaluate(average, x_nt, y_nt, 500), abs=1e-6)
    assert logged["val_loss"] != pytest.approx(steps.evaluate(latest, x_nt, y_nt, 500), abs=1e-4)
    best = mmjax.inference.load(runs / "val")  # the lowest val_loss is at the last step, 20
    assert int(best.state.step) == min(evaluations(runs / "val"), key=lambda m: m["val_loss"])["step"] == 20
    jax.tree.map(np.testing.assert_array_equal, best.state.params, average.params)
    # stopped at 10 and resumed: the same average at 20 as the straight run
    half = small_config("mlp", **{**STEPS, "max_steps": 10}, val_size=VAL, ema_decay=EMA, dropout=0.2)
    trainer.train_and_evaluate(half, tmp_path / "resumed", runs / "words.txt", progress=False)
    resumed = trainer.train_and_evaluate(config, tmp_path / "resumed", progress=False)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(optimizers.evaluated(resumed).params),
                 jax.device_get(average.params))


def test_averaging_cannot_be_switched_on_or_off_at_a_resume(runs, tmp_path, words_file):
    """config.check_resumable: the optimiser state holds the average or not, so --ema-decay can neither turn it
    off in an averaged run nor on in a plain one; refused before anything is written."""
    metrics = (runs / "val" / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match=f"holds a run with ema_decay={EMA}, and averaging cannot be switched on or "
                                        "off in a run: drop --ema-decay, or pass another -o"):
        train("-o", runs / "val", "--resume", "--max-steps", 30, "--ema-decay", 0)
    assert (runs / "val" / "metrics.jsonl").read_bytes() == metrics
    # a plain run (a bigram: its zero initialisation compiles in a moment), and averaging switched on
    train("-i", words_file, "-o", tmp_path / "plain", "--type", "bigram", "--max-steps", 10, "--eval-every", 10,
          "--log-every", 10, "--no-progress")
    files = lambda: {p: p.read_bytes() for p in (tmp_path / "plain").rglob("*") if p.is_file()}
    before = files()
    with pytest.raises(UserError, match="holds a run with ema_decay=0.0, and averaging cannot be switched on or "
                                        "off in a run: drop --ema-decay, or pass another -o"):
        train("-o", tmp_path / "plain", "--resume", "--max-steps", 20, "--ema-decay", EMA)
    assert files() == before


def evaluations(path, **match):
    return [m for m in WorkDir(path).metrics() if "test_loss" in m and all(m.get(k) == v for k, v in match.items())]


def test_the_validation_split_is_carved_from_the_training_words(runs):
    words = read_words(runs / "words.txt")
    plain, val = Dataset.from_words(words, 3407), WorkDir(runs / "val").load_dataset()  # what the run recorded
    assert plain.test_words == val.test_words and len(val.test_words) == 30  # makemore's test set, unchanged
    assert len(val.val_words) == VAL and plain.val_words == []
    assert val.train_words + val.val_words == plain.train_words  # the last VAL of its permuted training words
    assert collections.Counter(val.train_words + val.val_words + val.test_words) == collections.Counter(words)
    distinct = Dataset.from_words(sorted(set(words)), 3407, VAL)  # a word in two sets only if it repeats
    assert not (set(distinct.val_words) & set(distinct.train_words) or set(distinct.val_words) & set(distinct.test_words))


def test_the_work_dir_records_the_split_and_an_old_one_still_loads(runs, tmp_path):
    workdir = WorkDir(runs / "val")
    assert len(json.loads((runs / "val" / "dataset.json").read_text())["val_words"]) == VAL
    old = json.loads((runs / "val" / "dataset.json").read_text())
    del old["val_words"]
    (tmp_path / "dataset.json").write_text(json.dumps(old))
    assert WorkDir(tmp_path).load_dataset() == dataclasses.replace(workdir.load_dataset(), val_words=[])
    # the words in file order, the permutation undone over train, validation and test
    assert workdir.run_words() == read_words(runs / "words.txt")
    # ... by the split's own seed when the run's seed differs (--split-seed)
    config = json.loads((runs / "val" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "seed": 1, "split_seed": 3407}))
    (tmp_path / "dataset.json").write_text((runs / "val" / "dataset.json").read_text())
    assert WorkDir(tmp_path).run_words() == read_words(runs / "words.txt")


def test_the_best_checkpoint_is_chosen_on_the_validation_loss(runs):
    evals = evaluations(runs / "val")
    assert [m["step"] for m in evals] == [10, 20] and all("val_loss" in m for m in evals)
    by_val, by_test = (min(evals, key=lambda m: m[name])["step"] for name in ("val_loss", "test_loss"))
    assert by_val != by_test  # the two would choose differently: the validation loss chooses
    assert int(mmjax.inference.load(runs / "val").state.step) == by_val
    assert {tag for tag, _, _ in scalars(runs / "val")} == {"Loss/train", "Loss/val", "Loss/test"}


def test_sampling_counts_validation_words_as_training_words(runs):
    val_words = set(WorkDir(runs / "val").load_dataset().val_words)
    samples = mmjax.sample(runs / "val", num_samples=2000)
    seen = sorted(val_words.intersection(samples))
    assert seen  # the tiny model draws some of its short words
    report = sampling.report(seen, WorkDir(runs / "val").load_dataset())
    assert f"{len(seen)} samples that are in train" in report and "novelty: 0.0%" in report
    assert not val_words.intersection(mmjax.sample(runs / "val", num_samples=2000, new=True))


def test_a_member_with_dropout_is_the_standalone_run_of_its_rate(runs):
    """Member 1 (dropout 0.2, averaged) is the standalone run of its rate: its losses, its parameters and their
    average; member 0 (rate 0) is not."""
    ours, theirs = evaluations(runs / "population", member=1), evaluations(runs / "val")
    assert [m["dropout"] for m in ours] == [0.2] * 2 and len(theirs) == 2
    for a, b in zip(ours, theirs):
        for name in ("train_loss", "val_loss", "test_loss"):
            assert abs(a[name] - b[name]) < 1e-5, (name, a, b)
    rate_0 = evaluations(runs / "population", member=0)
    assert [m["dropout"] for m in rate_0] == [0.0] * 2 and rate_0[-1]["train_loss"] != ours[-1]["train_loss"]
    restored = WorkDir(runs / "population").checkpoints.restore(population.abstract_checkpoint(
        WorkDir(runs / "population").load_config(), WorkDir(runs / "population").load_dataset().vocab))
    best = restored["best"]
    alone = mmjax.inference.load(runs / "val", which="latest").state  # with its parameters' average
    trained = WorkDir(runs / "val").checkpoints.restore(create_train_state(
        WorkDir(runs / "val").load_config(), WorkDir(runs / "val").load_dataset().vocab, jax.random.PRNGKey(0)))
    member = lambda tree, i: jax.tree.map(lambda a: np.asarray(a[i]), jax.device_get(tree))
    for ours_k, theirs in ((restored["state"].params, trained.params),  # the trained parameters
                           (optimizers.evaluated(restored["state"]).params, alone.params),  # their average
                           (best["params"], alone.params)):  # member 1's best is at step 20, the last
        theirs = jax.device_get(theirs)
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=0), member(ours_k, 1), theirs)
        assert max(np.abs(a - b).max() for a, b in zip(jax.tree.leaves(member(ours_k, 0)), jax.tree.leaves(theirs))) > 1e-3
    for member in (0, 1):  # each member's best: its lowest validation loss
        scores = {m["step"]: m["val_loss"] for m in evaluations(runs / "population", member=member)}
        step = min(scores, key=scores.get)
        assert int(best["step"][member]) == step and float(best["score"][member]) == pytest.approx(scores[step], abs=1e-6)


def record_table(capsys, monkeypatch, *argv):
    """scripts/record_table.py ARGV in this process: (exit status, stdout, stderr)."""
    return run_script(capsys, monkeypatch, "record_table.py", *argv)


def test_the_record_table_reads_test_where_validation_chose(runs, tmp_path, capsys, monkeypatch):
    """scripts/record_table.py: per model the evaluation with the lowest val_loss, its test_loss; a population's
    ensemble of best checkpoints (here all at the last step, so the ensemble the run logged there)."""
    status, out, err = record_table(capsys, monkeypatch, runs / "val", runs / "population", "--csv",
                                    tmp_path / "runs.csv")
    assert status == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert (tmp_path / "runs.csv").read_text() == out
    assert [(r["run"], r["member"], r["dropout"]) for r in rows] == [
        ("val", "", "0.2"), ("population", "0", "0.0"), ("population", "1", "0.2"), ("population", "ensemble", "all")]
    for row, evals in zip(rows, [evaluations(runs / "val"), *(evaluations(runs / "population", member=i) for i in (0, 1))]):
        chosen = min(evals, key=lambda m: m["val_loss"])
        assert (int(row["best_step"]), row["val_loss"], row["test_loss"]) == (
            chosen["step"], f"{chosen['val_loss']:.4f}", f"{chosen['test_loss']:.4f}")
    assert [row["best_step"] for row in rows[1:3]] == ["20", "20"]
    logged = [m for m in WorkDir(runs / "population").metrics() if "ensemble_val_loss" in m][-1]
    assert (rows[3]["val_loss"], rows[3]["test_loss"]) == (
        f"{logged['ensemble_val_loss']:.4f}", f"{logged['ensemble_test_loss']:.4f}")
    # a run without a validation set chose on the test set: not a row of the record's table
    (tmp_path / "no_val").mkdir()
    (tmp_path / "no_val" / "config.json").write_text((runs / "val" / "config.json").read_text())
    (tmp_path / "no_val" / "metrics.jsonl").write_text("".join(
        json.dumps({k: v for k, v in m.items() if k != "val_loss"}) + "\n" for m in WorkDir(runs / "val").metrics()))
    assert_refused(record_table(capsys, monkeypatch, tmp_path / "no_val"),
                   f"{tmp_path / 'no_val'} has no validation set, so nothing was chosen on one: train with --val-size")


def test_the_record_configs_follow_the_protocol_and_train(tmp_path, words_file):
    """configs/names_best.py and the record's runs (docs/record/*.py) choose on 1,000 validation words with
    makemore's split seed; names_best trains (10 steps here, small, on 250 small words) and is chosen on validation."""
    from conftest import ROOT
    from mmjax.config import load_config

    best = load_config(ROOT / "configs" / "names_best.py")
    runs = [load_config(path) for path in sorted((ROOT / "docs" / "record").glob("*.py"))]
    assert len(runs) >= 3 and any(population.is_population(c) for c in runs)
    for config in [best, *runs]:
        assert config.val_size == 1000 and config.seed == 3407 and config.split_seed is None
    assert not population.is_population(best) and best.dropout > 0
    train("-i", words_file, "-o", tmp_path / "best", "--config", ROOT / "configs" / "names_best.py", *SMALL,
          "--max-steps", 10, "--val-size", 20, "--eval-every", 10)
    assert [("val_loss" in m, m["step"]) for m in evaluations(tmp_path / "best")] == [(True, 10)]


@pytest.mark.parametrize("argv, message", [
    (["--dropout", "-0.1"], "dropout must be at least 0 and below 1, got -0.1"),
    (["--val-size", "-1"], "val_size must not be negative, got -1"),
    (["--ema-decay", "1"], "ema_decay must be at least 0 and below 1, got 1.0: pass a decay such as 0.999"),
    (["--type", "bigram_counts", "--ema-decay", "0.9"], "the bigram_counts model is fitted in closed form, in one step"),
    (["--val-size", "270"], "val_size must be at least 0 and below the 270 training words, got 270"),
    (["--type", "mlp_bn", "--dropout", "0.1"], "the mlp_bn model has no dropout, got dropout 0.1: pass 0, or a type"),
])
def test_bad_values_are_one_line_errors_and_write_nothing(tmp_path, words_file, argv, message):
    with pytest.raises(UserError, match=message):
        train("-i", words_file, "-o", tmp_path / "out", *SMALL, *argv)
    assert not (tmp_path / "out").exists()


def test_the_command_refuses_a_rate_of_1_and_a_resume_that_changes_the_split(runs, tmp_path, words_file, capsys):
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:  # train.py's entry, in this process
        mmjax.cli.train_command(["-i", str(words_file), "-o", str(tmp_path / "out"), "--dropout", "1", *SMALL])
    assert_refused((exit.value.code, *capsys.readouterr()),
                   "dropout must be at least 0 and below 1, got 1.0: pass a rate such as 0.1 (0: off)")
    assert not (tmp_path / "out").exists()
    # a swept rate is checked as each member's (through the API: the command would give this process a CPU
    # device per core for the population)
    with pytest.raises(UserError, match="dropout must be at least 0 and below 1, got 1.0"):
        trainer.train_and_evaluate(small_config(sweep="dropout=0,1"), tmp_path / "out", words_file)
    assert not (tmp_path / "out").exists()
    metrics = (runs / "val" / "metrics.jsonl").read_bytes()
    with pytest.raises(UserError, match=f"holds a run with val_size={VAL}, whose split is recorded, not val_size=5"):
        train("-o", runs / "val", "--resume", "--val-size", "5", "--max-steps", "50")
    assert (runs / "val" / "metrics.jsonl").read_bytes() == metrics
