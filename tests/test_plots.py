"""The lectures' pictures (mmjax/plots.py) and the diagnostics train.py records for them."""

import json
import sys

import pytest

from conftest import ROOT, write_words
from mmjax import cli, plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PICTURES = ("loss", "bigram_counts", "embeddings", "histograms", "update_ratio")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short mlp_bn run: three evaluations. No samples (none is read: no sampler compiled); the words and the
    config are test_backprop.py's training run's, whose compiled programs a process that ran it reuses."""
    tmp = tmp_path_factory.mktemp("plots")
    out = tmp / "out"
    argv = ["-i", str(write_words(tmp / "words.txt")), "-o", str(out), "--type", "mlp_bn", "--max-steps", "300",
            "--eval-every", "100", "--log-every", "100", "--sample-every", "0", "--no-progress"]
    cli.train_main(cli.train_parser().parse_args(argv))
    return out


def test_evaluations_record_the_diagnostics(run):
    evals = [m for m in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "test_loss" in m]
    assert [m["step"] for m in evals] == [100, 200, 300]
    for m in evals:
        assert list(m["layers"]) == ["hidden_0", "lm_head", "wte"]
        assert 0 < m["layers"]["hidden_0"]["std"] <= 1 and 0 <= m["layers"]["hidden_0"]["saturated"] < 1
        assert set(m["params"]) == {"wte/embedding", "hidden_0/linear/kernel", "lm_head/kernel"}
        assert all(0 < p["update_data"] < 1 for p in m["params"].values())
    # the weights change, so the statistics of the same batch do too
    assert evals[0]["layers"]["lm_head"]["std"] != evals[-1]["layers"]["lm_head"]["std"]


def test_plot_writes_every_picture_as_a_png(run, capsys):
    cli.run(plots.main, plots.parser(), ["-o", str(run)])
    assert capsys.readouterr().out.split() == [str(run / f"{name}.png") for name in PICTURES]
    for name in PICTURES:
        data = (run / f"{name}.png").read_bytes()
        assert data.startswith(PNG_SIGNATURE) and 5_000 < len(data) < 200_000, (name, len(data))


def test_plot_without_matplotlib_is_one_line_exit_2(run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    with pytest.raises(SystemExit) as exit:
        cli.run(plots.main, plots.parser(), ["-o", str(run)])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install -e ".[plot]"' in err
