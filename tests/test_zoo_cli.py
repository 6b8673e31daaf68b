"""Every model type trains, resumes, and samples through the same commands, and learns; the WaveNet's and
the Transformer's runs record lecture 3's diagnostics of the layers docs/lectures.md names."""

import json
import math
import random

import pytest

from helpers import SMALL, train
from mmjax import cli
from mmjax.config import get_config
from mmjax.models import MODELS

# The runs whose diagnostics test_diagnostics_record_the_layers_the_docs_name reads (--diagnostics: on in
# configs/wavenet.py already, asked of the Transformer), the Transformer with two blocks.
DIAGNOSED = {"wavenet": ["--diagnostics"], "transformer": ["--diagnostics", "--n-layer", 2]}


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


@pytest.fixture(scope="module")
def trained(chain_words, tmp_path_factory):
    """trained(model_type): the work dir of its run, 100 steps then resumed to 200, made once for the file's tests.
    No samples while training (none is read: no sampler compiled for them)."""
    runs = {}

    def run(model_type):
        if model_type not in runs:
            workdir = tmp_path_factory.mktemp(model_type) / "run"
            fast = ["-l", "0.01"] if get_config(model_type).optimizer == "adamw" else []  # SGD's 0.1 is fast already
            train("-i", chain_words, "-o", workdir, "--type", model_type, "--max-steps", 100, "--n-embd2", 16, *SMALL,
                  "--eval-every", 100, "--log-every", 100, "--sample-every", 0, *fast, *DIAGNOSED.get(model_type, []))
            train("-o", workdir, "--resume", "--max-steps", 200, "--no-progress")
            runs[model_type] = workdir
        return runs[model_type]

    return run


def evaluations(workdir):
    return [m for m in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if "test_loss" in m]


@pytest.mark.parametrize("model_type", sorted(MODELS))
def test_every_model_trains_resumes_samples_and_learns(model_type, trained, capsys):
    workdir = trained(model_type)
    losses = [m["test_loss"] for m in evaluations(workdir)]
    assert len(losses) == (1 if model_type == "bigram_counts" else 2)  # counting is one step
    assert losses[-1] < math.log(9) - 0.6 and losses[-1] <= losses[0]  # uniform guesses: ln 9 = 2.2
    capsys.readouterr()
    cli.sample_main(cli.sample_parser().parse_args(["-o", str(workdir), "-n", "20", "--prefix", "a"]))
    out = capsys.readouterr().out
    counts = [int(line.split()[0]) for line in out.splitlines() if "samples that are" in line]
    assert sum(counts) == 20
    assert json.loads((workdir / "config.json").read_text())["type"] == model_type


# docs/lectures.md: the layers are the model's top-level submodules, "WaveNet its three tanh levels; the
# Transformer wte, wpe, the blocks h_0..., ln_f, lm_head"; the params its weight matrices.
LAYERS = {"wavenet": {"wte", "hidden_0", "hidden_1", "hidden_2", "lm_head"},
          "transformer": {"wte", "wpe", "h_0", "h_1", "ln_f", "lm_head"}}
TANH = {"wavenet": {"hidden_0", "hidden_1", "hidden_2"}, "transformer": set()}
MATRICES = {"wavenet": {"wte/embedding", "hidden_0/linear/kernel", "hidden_1/linear/kernel", "hidden_2/linear/kernel",
                        "lm_head/kernel"},
            "transformer": {"wte/embedding", "wpe/embedding", "lm_head/kernel"} | {
                f"h_{i}/{kernel}/kernel" for i in range(2) for kernel in ("attn/c_attn", "attn/c_proj", "mlp/c_fc",
                                                                          "mlp/c_proj")}}


@pytest.mark.parametrize("model_type", sorted(LAYERS))
def test_diagnostics_record_the_layers_the_docs_name(model_type, trained):
    evals = evaluations(trained(model_type))
    assert [m["step"] for m in evals] == [100, 200]  # at every evaluation, the first one before the resume too
    for m in evals:
        assert set(m["layers"]) == LAYERS[model_type] and set(m["params"]) == MATRICES[model_type]
        for name, layer in m["layers"].items():
            assert all(math.isfinite(v) for v in layer.values()), (name, layer)
            assert layer["std"] > 0 and layer["grad_std"] > 0 and 0 <= layer["saturated"] <= 1, (name, layer)
            if name in TANH[model_type]:  # tanh's outputs lie in (-1, 1); the levels are not all saturated
                assert abs(layer["mean"]) < 1 and layer["std"] <= 1 and layer["saturated"] < 1, (name, layer)
        for path, p in m["params"].items():
            assert all(math.isfinite(v) for v in p.values()) and p["grad_data"] > 0, (path, p)
            assert 0 < p["update_data"] < 1, (path, p)
    # the weights change between the evaluations, so the statistics of the same batch do too
    assert all(evals[0]["layers"][name]["std"] != evals[-1]["layers"][name]["std"] for name in LAYERS[model_type])
