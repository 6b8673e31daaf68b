"""train.py and sample.py as a user runs them, in subprocesses."""

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


def test_default_dataset_trains_and_samples(tmp_path):
    env = {"MMJAX_CACHE": str(tmp_path / "cache")}
    result = run("train.py", "-o", tmp_path / "run", *SMALL, "--max-steps", 20, "--eval-every", 10,
                 "--log-every", 10, env=env)
    assert result.returncode == 0, result.stderr
    assert "32469 words from" in result.stdout and "babynames-2017.txt" in result.stdout
    assert "1000 test" in result.stdout
    assert run("sample.py", "-o", tmp_path / "run", "-n", 3).returncode == 0
