"""mmjax.most_likely and sample.py --most-likely: the N most probable names, exactly, against brute-force
enumeration of every name of up to 5 letters over a 4-letter vocabulary."""

import itertools
import math
import random
import re

import numpy as np
import pytest

import mmjax
from helpers import assert_refused, random_run
from mmjax import cli, sampling, scoring
from mmjax.errors import UserError

EVERY_NAME = ["".join(t) for n in range(1, 6) for t in itertools.product("abcd", repeat=n)]  # 1,364


@pytest.fixture(scope="module")
def counts_dir(tmp_path_factory):
    """bigram_counts fitted on 200 random words of 1..5 letters a..d (so block_size 6)."""
    tmp = tmp_path_factory.mktemp("most_likely")
    rng = random.Random(0)
    words = ["".join(rng.choice("abcd") for _ in range(rng.randint(1, 5))) for _ in range(200)]
    (tmp / "words.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    mmjax.train_and_evaluate(mmjax.get_config("bigram_counts"), tmp / "run", tmp / "words.txt", progress=False)
    return tmp / "run"


@pytest.fixture(scope="module")
def runs(counts_dir):
    counts = scoring.load(counts_dir)
    return {"bigram_counts": counts, "transformer": random_run(counts.dataset, scale=0.3)}


@pytest.fixture(scope="module")
def brute_force(runs):
    """Every name's log-probability under each model, by scoring them all."""
    return {kind: {s["name"]: -s["nll"] for s in scoring.score(run, EVERY_NAME)} for kind, run in runs.items()}


def assert_top(found, logp, n):
    """found is the n most probable names of `logp` (name -> log-probability), best first: the same
    log-probabilities in order, and every name more probable than the last one listed is listed."""
    ranked = sorted(logp.values(), reverse=True)
    probs = [p for _, p in found]
    assert len(found) == min(n, len(logp)) and probs == sorted(probs, reverse=True)
    np.testing.assert_allclose(np.log(probs), ranked[:len(found)], atol=1e-5)
    for name, p in found:
        assert math.log(p) == pytest.approx(logp[name], abs=1e-5)
    listed = {name for name, _ in found}
    assert {name for name, lp in logp.items() if lp > math.log(probs[-1]) + 1e-5} <= listed


@pytest.mark.parametrize("kind", ["bigram_counts", "transformer"])
@pytest.mark.parametrize("constraint", [{}, dict(prefix="b"), dict(suffix="a", max_length=4), dict(regex="[ab]*c[ab]*"),
                                        dict(prefix="a", max_length=2), dict(new=True)])
def test_the_most_likely_names_are_those_of_brute_force(runs, brute_force, kind, constraint):
    """30 asked (prefix 'a' up to 2 letters: the 5 there are)."""
    run, new = runs[kind], constraint.pop("new", False)
    data = set(run.dataset.train_words + run.dataset.test_words) if new else set()
    accepts = sampling.Constraint(**constraint).accepts
    logp = {name: lp for name, lp in brute_force[kind].items() if accepts(name) and name not in data}
    assert_top(mmjax.most_likely(run, 30, new=new, **constraint), logp, 30)


def test_the_search_batch_does_not_change_the_names(runs):
    one_by_one, expanded = scoring.search(runs["transformer"], 30, rows=1)
    batched, expanded_batched = scoring.search(runs["transformer"], 30)
    assert [w for w, _ in one_by_one] == [w for w, _ in batched] and expanded <= expanded_batched
    np.testing.assert_allclose([p for _, p in one_by_one], [p for _, p in batched], rtol=1e-6)


def test_a_sampled_name_more_probable_than_the_last_listed_is_listed(runs):
    run = runs["transformer"]
    found = mmjax.most_likely(run, 30)
    sampled = [s for s in scoring.score(run, mmjax.sample(run, num_samples=2000, seed=3)) if s["name"]]
    likely = [s["name"] for s in sampled if -s["nll"] > math.log(found[-1][1]) + 1e-5]
    assert likely and set(likely) <= {name for name, _ in found}


def test_the_command_lists_them(counts_dir, tmp_path, capsys):
    out = tmp_path / "names.txt"
    cli.sample_command(["-o", str(counts_dir), "--most-likely", "8", "--prefix", "c", "--new", "--unique",
                        "--out", str(out)])
    lines = capsys.readouterr().out.splitlines()
    expected = mmjax.most_likely(counts_dir, 8, prefix="c", new=True)
    assert lines[0].split() == ["rank", "name", "probability", "in"] and len(lines) == 10
    assert [line.split() for line in lines[1:9]] == [[str(i), w, f"{p:.4%}", "new"] for i, (w, p) in
                                                     enumerate(expected, 1)]
    assert re.fullmatch(r"the 8 most likely names hold [\d.]+% of the model's probability; \d+ prefixes expanded in "
                        r"[\d.]+ s", lines[9])
    assert out.read_text().split() == [w for w, _ in expected]


@pytest.mark.parametrize("argv, message", [
    (["--most-likely", "5", "-n", "3"], "so --num-samples does not apply: drop it"),
    (["--most-likely", "5", "--temperature", "0.5"], "so --temperature does not apply: drop it"),
    (["--most-likely", "0"], "the number of most likely names must be 1 or more, got 0"),
    (["--most-likely", "5", "--suffix", "x"], "suffix has characters 'x' that are not in the vocabulary"),
])
def test_the_command_refuses_bad_input_on_one_line(counts_dir, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        cli.sample_command(["-o", str(counts_dir), *argv])
    assert_refused((exit_info.value.code, "", capsys.readouterr().err), message)


def test_the_search_stops_at_its_budget(runs):
    with pytest.raises(UserError, match=r"^the search for the 1000 most likely names expanded more than 20 prefixes "
                                        r"without finishing \(\d+ found so far\): ask for fewer names"):
        mmjax.most_likely(runs["bigram_counts"], 1000, max_expansions=20)
