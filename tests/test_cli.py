"""train.py and sample.py as a user runs them, in subprocesses."""

import hashlib
import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT

SMALL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--no-progress"]


def run(script, *argv, env=None):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, argv)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def tree_digest(path):
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    words = tmp_path_factory.mktemp("data") / "words.txt"
    from conftest import write_words
    write_words(words)
    workdir = tmp_path_factory.mktemp("runs") / "run"
    result = run("train.py", "-i", words, "-o", workdir, *SMALL, "--max-steps", 200, "--eval-every", 100)
    assert result.returncode == 0, result.stderr
    return words, workdir, result


def test_train_writes_the_work_dir(trained):
    _, workdir, result = trained
    assert "300 words" in result.stdout and "270 train, 30 test" in result.stdout
    lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
    evals = [l for l in lines if "test_loss" in l]
    assert [l["step"] for l in evals] == [100, 200] and all("train_loss" in l for l in evals)
    assert list(workdir.glob("events.out.tfevents.*"))
    assert (workdir / "checkpoints" / "latest" / "200").is_dir()
    best = [int(p.name) for p in (workdir / "checkpoints" / "best").iterdir() if p.name.isdigit()]
    assert best == [min(evals, key=lambda l: l["test_loss"])["step"]]
    config = json.loads((workdir / "config.json").read_text())
    assert config["type"] == "transformer" and config["n_embd"] == 16 and config["max_steps"] == 200


def test_sample_is_reproducible_and_reports_three_groups(trained):
    _, workdir, _ = trained
    first = run("sample.py", "-o", workdir, "-n", 30, "--seed", 7)
    assert first.returncode == 0, first.stderr
    assert first.stdout == run("sample.py", "-o", workdir, "-n", 30, "--seed", 7).stdout
    assert first.stdout != run("sample.py", "-o", workdir, "-n", 30, "--seed", 8).stdout
    counts = [int(line.split()[0]) for line in first.stdout.splitlines() if "samples that are" in line]
    assert len(counts) == 3 and sum(counts) == 30


def test_sample_only_uses_the_work_dir(trained):
    _, workdir, _ = trained
    result = run("train.py", "-o", workdir, "--sample-only", "-n", 5)
    assert result.returncode == 0, result.stderr
    assert sum(int(l.split()[0]) for l in result.stdout.splitlines() if "samples that are" in l) == 5


@pytest.mark.parametrize("argv, message", [
    (["-o", "{run}"], "already holds a run: pass --resume"),
    (["-o", "{run}", "--resume", "--n-layer", "2"], "holds a n_layer=1 run"),
    (["-i", "{missing}", "-o", "{new}"], "does not exist"),
    (["-i", "{words}", "-o", "{new}", "--type", "nope"], "no config file"),
    (["-i", "{words}", "-o", "{new}", "-l", "0"], "learning_rate must be positive"),
])
def test_bad_input_is_one_line_exit_2_and_leaves_the_work_dir_alone(trained, tmp_path, argv, message):
    words, workdir, _ = trained
    before = tree_digest(workdir)
    fill = dict(run=workdir, missing=tmp_path / "missing.txt", new=tmp_path / "new", words=words)
    result = run("train.py", *[a.format(**fill) for a in argv], "--no-progress")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and "Traceback" not in result.stderr
    assert tree_digest(workdir) == before and not (tmp_path / "new").exists()


def test_sample_without_a_run_is_an_error(tmp_path):
    result = run("sample.py", "-o", tmp_path)
    assert result.returncode == 2 and "holds no run" in result.stderr


def test_default_dataset_trains_and_samples(tmp_path):
    env = {"MMJAX_CACHE": str(tmp_path / "cache")}
    result = run("train.py", "-o", tmp_path / "run", *SMALL, "--max-steps", 20, "--eval-every", 10,
                 "--log-every", 10, env=env)
    assert result.returncode == 0, result.stderr
    assert "32469 words from" in result.stdout and "babynames-2017.txt" in result.stdout
    assert "1000 test" in result.stdout
    assert run("sample.py", "-o", tmp_path / "run", "-n", 3).returncode == 0
