"""sample.py --suffix/--contains/--regex/--min-length/--max-length: the plain sampler's stream with the other
names left out, in order, for the same seed; a one-line error when the constraint is too rare."""

import re

import pytest

import mmjax
from conftest import write_words
from helpers import assert_refused, random_run
from mmjax import cli, sampling, scoring
from mmjax.errors import UserError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """bigram_counts fitted on 300 words of 2..7 letters a..h: for the commands."""
    tmp = tmp_path_factory.mktemp("constraints")
    mmjax.train_and_evaluate(mmjax.get_config("bigram_counts"), tmp / "run", write_words(tmp / "words.txt"),
                             progress=False)
    return tmp / "run"


@pytest.fixture(scope="module")
def transformer(run_dir):
    """A 1-layer Transformer with random weights on the same words: sampled through the Python API."""
    return random_run(scoring.load(run_dir).dataset)


def kept(words, constraint, n, exclude=(), unique=False):
    """The first n words of a stream that the constraint accepts (and not empty, excluded or repeated)."""
    out = []
    for word in words:
        if word and constraint.accepts(word) and word not in exclude and not (unique and word in out):
            out.append(word)
    return out[:n]


@pytest.mark.parametrize("constraint, options", [
    (dict(suffix="a"), {}),
    (dict(contains="bc"), {}),
    (dict(regex="[a-d]+(e|f)?"), {}),
    (dict(min_length=4, max_length=5), {}),
    (dict(suffix="h", min_length=3), {}),
    (dict(prefix="c", suffix="e"), dict(temperature=0.8, top_k=4)),
    (dict(contains="a", max_length=4), dict(unique=True, new=True)),
])
def test_constrained_samples_are_the_plain_stream_filtered(transformer, constraint, options):
    """20 names asked: each constraint accepts over 4% of the stream, so the first 1000 samples hold them."""
    data = transformer.dataset
    sampling_options = {k: v for k, v in options.items() if k not in ("unique", "new")}
    plain = mmjax.sample(transformer, num_samples=1000, seed=7, prefix=constraint.get("prefix", ""), **sampling_options)
    words = mmjax.sample(transformer, num_samples=20, seed=7, **constraint, **options)
    accepted = sampling.Constraint(**constraint)
    exclude = set(data.train_words + data.test_words) if options.get("new") else ()
    assert len(words) == 20 and words == kept(plain, accepted, 20, exclude, options.get("unique", False))
    assert all(accepted.accepts(w) for w in words) and not set(words) & set(exclude)
    if "regex" in constraint:
        assert all(re.fullmatch(constraint["regex"], w) for w in words)


def test_a_rare_constraint_is_a_one_line_error(run_dir, capsys):
    """Four h's running: about one bigram sample in ten thousand; 2 asked, 2000 draws (1000 per name)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.sample_command(["-o", str(run_dir), "-n", "2", "--regex", ".*hhhh.*", "--seed", "1"])
    err = capsys.readouterr().err
    assert_refused((exit_info.value.code, "", err), "")
    found = re.fullmatch(r"error: found only (\d) names with --regex \.\*hhhh\.\* of the 2 asked after 2000 draws "
                         r"\(1000 per name asked\), an acceptance rate of ([\d.]+)%: ask for fewer, loosen the "
                         r"constraint, or raise --temperature\n", err)
    assert found and float(found.group(2)) == pytest.approx(100 * int(found.group(1)) / 2000, abs=5e-4), err


def test_the_command_prints_the_acceptance_rate(run_dir, capsys):
    cli.sample_command(["-o", str(run_dir), "-n", "30", "--suffix", "a", "--min-length", "3", "--seed", "2"])
    out = capsys.readouterr().out
    draws, rate = re.search(r"^30 names from (\d+) draws: [\d.]+ draws per name, acceptance rate ([\d.]+)%$", out,
                            re.M).groups()
    assert float(rate) == pytest.approx(100 * 30 / int(draws), abs=5e-3)
    names = [line for line in out.splitlines() if re.fullmatch("[a-h]+", line)]
    assert len(names) == 30 and all(n.endswith("a") and len(n) >= 3 for n in names)


@pytest.mark.parametrize("constraint, message", [
    (dict(regex="a("), "regex 'a(' is not a valid Python regular expression"),
    (dict(suffix="az"), "suffix has characters 'z' that are not in the vocabulary: use only 'abcdefgh'"),
    (dict(contains="Q"), "contains has characters 'Q' that are not in the vocabulary"),
    (dict(min_length=8), "no name can have from 8 to 7 characters"),
    (dict(min_length=5, max_length=4), "no name can have from 5 to 4 characters"),
    (dict(prefix="abc", max_length=2), "no name can have from 3 to 2 characters"),
])
def test_impossible_constraints_are_refused_before_any_draw(transformer, constraint, message):
    with pytest.raises(UserError, match=re.escape(message)):
        mmjax.sample(transformer, num_samples=5, **constraint)


def test_the_command_refuses_a_bad_regex_on_one_line(run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.sample_command(["-o", str(run_dir), "--regex", "[a-"])
    assert_refused((exit_info.value.code, "", capsys.readouterr().err), "regex '[a-' is not a valid Python regular")
