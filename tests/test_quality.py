"""The long quality runs on names.txt (pytest -m slow; CI runs the fast versions in test_zoo_cli.py,
test_train.py and test_regularisation.py). Targets from the issues; makemore.py's own figures in reference.md."""

import csv
import io
import json

import pytest

from conftest import ROOT
from helpers import run_command
from mmjax import cli

# Test loss at the end of each config's run. mlp: makemore's 2.0531 was a lucky seed (docs/models.md);
# mmjax and PyTorch both average 2.0615 over seeds, so the bound is 2.065 rather than the 2.06.
TARGETS = {"transformer": 1.985, "mlp": 2.065, "gru": 2.045, "rnn": 2.095, "bow": 2.195, "lstm": 2.05,
           "wavenet": 2.00, "mlp_bn": 2.08}


def final_test_loss(model_type, names_file, workdir):
    cli.train_main(cli.train_parser().parse_args(["-i", str(names_file), "-o", str(workdir), "--type", model_type,
                                                  "--no-progress"]))
    return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if "test_loss" in l][-1]


@pytest.mark.slow
@pytest.mark.parametrize("model_type", TARGETS)
def test_model_reaches_its_target_on_names(model_type, names_file, tmp_path):
    assert final_test_loss(model_type, names_file, tmp_path / model_type)["test_loss"] <= TARGETS[model_type]


@pytest.mark.slow
def test_neural_bigram_lands_within_0_01_of_the_counted_one(names_file, tmp_path):
    counted = final_test_loss("bigram_counts", names_file, tmp_path / "counts")["test_loss"]
    neural = final_test_loss("bigram", names_file, tmp_path / "neural")["test_loss"]
    assert abs(neural - counted) < 0.01


# configs/names_best.py's figure in docs/record.md: the test loss where validation chose (issue 15's protocol)
NAMES_BEST = 1.8776


@pytest.mark.slow
def test_names_best_reproduces_its_figure(names_file, tmp_path):
    cli.train_main(cli.train_parser().parse_args(["-i", str(names_file), "-o", str(tmp_path / "best"), "--config",
                                                  str(ROOT / "configs" / "names_best.py"), "--no-progress"]))
    evaluations = [json.loads(l) for l in (tmp_path / "best" / "metrics.jsonl").read_text().splitlines() if "val_loss" in l]
    chosen = min(evaluations, key=lambda m: m["val_loss"])
    assert abs(chosen["test_loss"] - NAMES_BEST) <= 0.005


# docs/record/sweep_lr_long.py's ensemble in docs/record.md: the mixture of its 6 members' best-by-validation
# checkpoints, as scripts/record_table.py scores it (issue 15's second goal: <= 1.85 in <= 60 minutes)
ENSEMBLE_BEST = 1.8480


@pytest.mark.slow
def test_the_record_ensemble_reproduces_its_figure(names_file, tmp_path):
    run = tmp_path / "ensemble"
    cli.train_main(cli.train_parser().parse_args(["-i", str(names_file), "-o", str(run), "--config",
                                                  str(ROOT / "docs" / "record" / "sweep_lr_long.py"), "--no-progress"]))
    status, table, err = run_command("scripts/record_table.py", run, timeout=600)
    assert status == 0, err
    [ensemble] = [row for row in csv.DictReader(io.StringIO(table)) if row["member"] == "ensemble"]
    assert float(ensemble["test_loss"]) <= 1.85 and abs(float(ensemble["test_loss"]) - ENSEMBLE_BEST) <= 0.005
