"""The benchmark and table scripts still run (smoke runs on names.txt; skipped without it)."""

import json
import subprocess
import sys

from conftest import ROOT


def run_script(*argv):
    result = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_bench_train_quick(names_file, tmp_path):
    run_script("scripts/bench_train.py", "-i", names_file, "--quick", "--types", "bigram,gru", "--no-compile",
               "--json", tmp_path / "bench.json")
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert [r["type"] for r in rows] == ["bigram", "gru"] and all(r["mmjax_ms"] > 0 for r in rows)


def test_zoo_table(names_file, tmp_path):
    out = run_script("scripts/zoo.py", "-i", names_file, "-o", tmp_path / "runs", "--types", "bigram_counts,rnn",
                     "--max-steps", 100, "--json", tmp_path / "zoo.json")
    rows = json.loads((tmp_path / "zoo.json").read_text())
    assert [r["params"] for r in rows] == [729, 11_803] and rows[0]["test_loss"] < rows[1]["test_loss"]
    assert "| rnn | 11,803 | 100 |" in out


def test_profile_train(names_file, tmp_path):
    run_script("scripts/profile_train.py", "-i", names_file, "--type", "bow", "--steps", 5, "--json", tmp_path / "p.json")
    profile = json.loads((tmp_path / "p.json").read_text())
    shares = {row["what"]: row["share"] for row in profile["rows"]}
    assert profile["wall_ms"] > 0 and abs(sum(shares.values()) - 1) < 1e-6
    assert shares["backward: dense layers (matmul)"] > 0 and shares["optimiser (AdamW)"] > 0


def test_bench_sample_every_quick(names_file, tmp_path):
    run_script("scripts/bench_sample_every.py", "-i", names_file, "--type", "bigram", "--quick",
               "--json", tmp_path / "b.json")
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["sample_every"] == 200 and figures["sample_line_ms"] > 0 and figures["ms_per_step_plain"] > 0
