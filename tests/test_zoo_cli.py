"""Every model type trains a few steps, resumes, and samples through the same commands."""

import json

import pytest

from conftest import ROOT
from mmjax import cli
from mmjax.models import MODELS


@pytest.mark.parametrize("model_type", sorted(MODELS))
def test_every_model_trains_resumes_and_samples(model_type, words_file, tmp_path, capsys):
    workdir = tmp_path / "run"
    small = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--n-embd2", "16", "--eval-every", "20",
             "--log-every", "20", "--no-progress"]
    parse = cli.train_parser().parse_args
    cli.train_main(parse(["-i", str(words_file), "-o", str(workdir), "--type", model_type, "--max-steps", "20",
                          *small]))
    cli.train_main(parse(["-o", str(workdir), "--resume", "--max-steps", "40", "--no-progress"]))
    evals = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if "test_loss" in l]
    losses = [e["test_loss"] for e in evals]
    assert len(losses) == (1 if model_type == "bigram_counts" else 2)  # counting is one step
    assert losses[-1] <= losses[0] < 3.0  # ln(9) = 2.2 for uniform guesses
    capsys.readouterr()
    cli.sample_main(cli.sample_parser().parse_args(["-o", str(workdir), "-n", "20", "--prefix", "a"]))
    out = capsys.readouterr().out
    counts = [int(line.split()[0]) for line in out.splitlines() if "samples that are" in line]
    assert sum(counts) == 20
    assert json.loads((workdir / "config.json").read_text())["type"] == model_type
