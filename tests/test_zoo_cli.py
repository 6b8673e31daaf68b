"""Every model type trains, resumes, and samples through the same commands, and learns."""

import json
import math
import random

import pytest

from helpers import SMALL, train
from mmjax import cli
from mmjax.config import get_config
from mmjax.models import MODELS


@pytest.fixture(scope="module")
def chain_words(tmp_path_factory):
    """Words that a model can learn: a random first letter of 8, each next letter the one after it
    (h wraps to a), 2 to 7 letters. Guessing uniformly costs ln 9 a character, a bigram about 1."""
    rng = random.Random(0)
    words = ["".join("abcdefgh"[(start + i) % 8] for i in range(rng.randint(2, 7)))
             for start in (rng.randrange(8) for _ in range(300))]
    path = tmp_path_factory.mktemp("chain") / "words.txt"
    path.write_text("\n".join(words) + "\n")
    return path


@pytest.mark.parametrize("model_type", sorted(MODELS))
def test_every_model_trains_resumes_samples_and_learns(model_type, chain_words, tmp_path, capsys):
    workdir = tmp_path / "run"
    fast = ["-l", "0.01"] if get_config(model_type).optimizer == "adamw" else []  # SGD's 0.1 is fast already
    train("-i", chain_words, "-o", workdir, "--type", model_type, "--max-steps", 100, "--n-embd2", 16, *SMALL,
          "--eval-every", 100, "--log-every", 100, *fast)
    train("-o", workdir, "--resume", "--max-steps", 200, "--no-progress")
    losses = [m["test_loss"] for m in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines())
              if "test_loss" in m]
    assert len(losses) == (1 if model_type == "bigram_counts" else 2)  # counting is one step
    assert losses[-1] < math.log(9) - 0.6 and losses[-1] <= losses[0]  # uniform guesses: ln 9 = 2.2
    capsys.readouterr()
    cli.sample_main(cli.sample_parser().parse_args(["-o", str(workdir), "-n", "20", "--prefix", "a"]))
    out = capsys.readouterr().out
    counts = [int(line.split()[0]) for line in out.splitlines() if "samples that are" in line]
    assert sum(counts) == 20
    assert json.loads((workdir / "config.json").read_text())["type"] == model_type
