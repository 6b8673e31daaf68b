"""mmjax.score and mmjax-score: each name's NLL (the stop included), per character, perplexity, surprisals and
percentile, against the run's test loss, hand-computed bigram counts and the ensemble's mixture."""

import json
import math
import pathlib
import subprocess
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mmjax
from conftest import write_words
from helpers import assert_refused, random_run
from mmjax import cli, losses, population, scoring
from mmjax.errors import UserError

KEYS = ["name", "nll", "nll_per_char", "perplexity", "surprisal", "percentile"]
NAMES = ["a", "abcd", "dd", "cabba", "abcdabc", "dd"]  # a repeat: scored once, reported twice


@pytest.fixture(scope="module")
def counts_dir(tmp_path_factory):
    """bigram_counts fitted on 300 words of 2..7 letters a..d (30 test words)."""
    tmp = tmp_path_factory.mktemp("scoring")
    words = write_words(tmp / "words.txt", alphabet="abcd")
    mmjax.train_and_evaluate(mmjax.get_config("bigram_counts"), tmp / "run", words, progress=False)
    return tmp / "run"


@pytest.fixture(scope="module")
def counts_run(counts_dir):
    return scoring.load(counts_dir)


@pytest.fixture(scope="module")
def transformer(counts_run):
    """A 1-layer Transformer with random weights on the same words."""
    return random_run(counts_run.dataset)


def hand_bigram_nll(dataset, word):
    """-log p(word) from the training words' bigram counts, add-one smoothed, in numpy."""
    index = {c: i + 1 for i, c in enumerate(dataset.vocab.chars)}
    counts_vv = np.zeros((dataset.vocab.size,) * 2)
    for w in dataset.train_words:
        tokens = [0, *map(index.get, w), 0]
        np.add.at(counts_vv, (tokens[:-1], tokens[1:]), 1)
    p_vv = (counts_vv + 1) / (counts_vv + 1).sum(axis=1, keepdims=True)
    tokens = [0, *map(index.get, word), 0]
    return -np.log(p_vv[tokens[:-1], tokens[1:]])


def test_scores_are_the_hand_computed_bigram_values(counts_run):
    scores = scoring.score(counts_run, NAMES)
    assert [s["name"] for s in scores] == NAMES and all(list(s) == KEYS for s in scores)
    test_per_char = [hand_bigram_nll(counts_run.dataset, w).sum() / (len(w) + 1) for w in counts_run.dataset.test_words]
    for s in scores:
        surprisal = hand_bigram_nll(counts_run.dataset, s["name"])
        np.testing.assert_allclose(s["surprisal"], surprisal, rtol=1e-5)
        assert len(s["surprisal"]) == len(s["name"]) + 1 and s["nll"] == pytest.approx(sum(s["surprisal"]), abs=1e-9)
        assert s["nll_per_char"] == pytest.approx(s["nll"] / (len(s["name"]) + 1), rel=1e-12)
        assert s["perplexity"] == pytest.approx(math.exp(s["nll_per_char"]), rel=1e-12)
        per_char = surprisal.sum() / len(surprisal)  # % of test words less likely per character, ties half
        higher = sum(t > per_char + 1e-9 for t in test_per_char) + sum(abs(t - per_char) <= 1e-9 for t in test_per_char) / 2
        assert s["percentile"] == pytest.approx(100 * higher / len(test_per_char))
    assert scores[2] == scores[5]


def test_the_test_words_give_the_test_loss(counts_dir, counts_run, transformer):
    """bigram_counts against the loss its run logged; the Transformer against the loss training computes
    (losses.cross_entropy of the whole test set's logits, as train.evaluate sums it)."""
    logged = [json.loads(line) for line in (counts_dir / "metrics.jsonl").read_text().splitlines()]
    test_loss = next(m["test_loss"] for m in logged if "test_loss" in m)
    words = counts_run.dataset.test_words
    x_nt, y_nt = counts_run.dataset.vocab.encode_words(words)
    logits_ntv = jax.jit(transformer.model.apply)({"params": transformer.state.params}, x_nt)
    nll, count = losses.cross_entropy(logits_ntv, y_nt)
    for run, expected in ((counts_run, test_loss), (transformer, float(nll / count))):
        scores = scoring.score(run, words)
        assert sum(s["nll"] for s in scores) / sum(len(w) + 1 for w in words) == pytest.approx(expected, abs=1e-5)
        # each test word's percentile among them all: the mean is 50 exactly, ties half
        assert np.mean([s["percentile"] for s in scores]) == pytest.approx(50)


def test_scores_do_not_depend_on_the_batch(transformer):
    names = NAMES + transformer.dataset.test_words
    alone = [scoring.score(transformer, [name], batch_size=5)[0] for name in NAMES[:3]]
    for batch_size in (5, scoring.SCORE_ROWS):
        scores = scoring.score(transformer, names, batch_size=batch_size)
        for s, single in zip(scores, alone):
            np.testing.assert_allclose(s["surprisal"], single["surprisal"], rtol=1e-6)
            assert s["percentile"] == single["percentile"]


def test_the_ensemble_mixes_the_members_probabilities(transformer):
    """A population's Mixture, as population.load makes it: at each position -log of the members' mean
    probability of the character."""
    members = [transformer, random_run(transformer.dataset, seed=1)]
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[{"params": m.state.params, "batch_stats": {}}
                                                                 for m in members])
    ensemble = transformer._replace(model=population.Mixture(transformer.model), state=types.SimpleNamespace(**stacked))
    mixed = scoring.score(ensemble, NAMES)
    each = [scoring.score(m, NAMES) for m in members]
    for i, s in enumerate(mixed):
        expected = -np.log(np.mean([np.exp(-np.array(e[i]["surprisal"])) for e in each], axis=0))
        np.testing.assert_allclose(s["surprisal"], expected, rtol=1e-5)


def test_bad_names_are_one_line_errors(counts_run):
    with pytest.raises(UserError, match=r"^characters 'XY' \(in 'aXb'\) are not in the vocabulary 'abcd': use only"):
        scoring.score(counts_run, ["ab", "aXb", "Yb"])
    with pytest.raises(UserError, match=r"^'abcdabcd' has 8 characters, more than the 7 of the longest word"):
        scoring.score(counts_run, ["abcdabcd"])


def test_the_command_prints_a_table_or_json(counts_dir, counts_run, tmp_path, capsys):
    names_file = tmp_path / "names.txt"
    names_file.write_text("dd\n\n cabba \n", encoding="utf-8")
    png = tmp_path / "surprisal.png"
    cli.score_command(["-o", str(counts_dir), "a", "abcd", "--file", str(names_file), "--plot", str(png)])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:5] == ["name", "nll", "nll/char", "perplexity", "percentile"] and len(lines) == 5
    expected = scoring.score(counts_run, ["a", "abcd", "dd", "cabba"])
    for line, s in zip(lines[1:], expected):
        assert line.split()[:5] == [s["name"], f"{s['nll']:.3f}", f"{s['nll_per_char']:.3f}", f"{s['perplexity']:.2f}",
                                    f"{s['percentile']:.1f}"]
        assert line.split()[5:] == [cell for c, x in zip(s["name"] + ".", s["surprisal"]) for cell in (c, f"{x:.2f}")]
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    cli.score_command(["-o", str(counts_dir), "--json", "a", "abcd", "--file", str(names_file)])
    assert json.loads(capsys.readouterr().out) == expected


@pytest.mark.parametrize("argv, message", [
    (["aZb"], "characters 'Z' (in 'aZb') are not in the vocabulary 'abcd'"),
    ([], "no names to score: give them after the flags, or --file F"),
    (["--file", "/nonexistent/names.txt"], "cannot read --file /nonexistent/names.txt"),
    (["a", "--batch-size", "0"], "--batch-size must be 1 or more"),
    (["a", "--member", "1"], "holds one model, not a population"),
])
def test_the_command_refuses_bad_input_on_one_line(counts_dir, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.score_command(["-o", str(counts_dir), *argv])
    assert_refused((exit_info.value.code, "", capsys.readouterr().err), message)


def test_the_console_script(counts_dir, counts_run):
    """mmjax-score, installed by pyproject.toml, in a process of its own (one CPU device per core)."""
    script = pathlib.Path(sys.executable).with_name("mmjax-score")
    result = subprocess.run([str(script), "-o", str(counts_dir), "--json", "cabba", "dd"], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    for got, expected in zip(json.loads(result.stdout), scoring.score(counts_run, ["cabba", "dd"])):
        np.testing.assert_allclose(got["surprisal"], expected["surprisal"], rtol=1e-6)
        assert got["percentile"] == expected["percentile"]
