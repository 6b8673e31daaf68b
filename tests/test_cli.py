"""train.py and sample.py as a user runs them: in subprocesses, and, where a process adds nothing to what is
checked, their command lines in this process."""

import cProfile
import json
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

import mmjax
from conftest import ROOT, write_words
from helpers import SMALL, assert_refused, command, run_command, train
from mmjax import cli, errors, input_pipeline
from mmjax.workdir import WorkDir

# the other files' dispatch of 10 steps (the same compiled programs); no samples while training (none are read)
TRAINED = [*SMALL, "--max-steps", 200, "--eval-every", 100, "--log-every", 10, "--sample-every", 0]


def run(script, *argv, env=None):
    return subprocess.run([sys.executable, str(ROOT / script), *map(str, argv)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def in_process(capsys, command, *argv):
    """cli's train_command or sample_command, as the script runs it, in this process: its stdout."""
    capsys.readouterr()
    command([str(a) for a in argv])
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run trained in this process, then the same run by train.py (which reads the programs this process
    compiled back from the tests' compilation cache)."""
    words = write_words(tmp_path_factory.mktemp("data") / "words.txt")
    runs = tmp_path_factory.mktemp("runs")
    train("-i", words, "-o", runs / "again", *TRAINED)
    result = run("train.py", "-i", words, "-o", runs / "run", *TRAINED)
    assert result.returncode == 0, result.stderr
    return words, runs / "run", result


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


def test_sample_is_reproducible_and_reports_three_groups(trained, capsys):
    _, workdir, _ = trained
    first = run("sample.py", "-o", workdir, "-n", 30, "--seed", 7)
    assert first.returncode == 0, first.stderr
    # the same seed in another process (this one), the same lines; another seed, others
    assert first.stdout == in_process(capsys, cli.sample_command, "-o", workdir, "-n", 30, "--seed", 7)
    assert first.stdout != in_process(capsys, cli.sample_command, "-o", workdir, "-n", 30, "--seed", 8)
    counts = [int(line.split()[0]) for line in first.stdout.splitlines() if "samples that are" in line]
    assert len(counts) == 3 and sum(counts) == 30


def test_a_command_ends_without_teardown_as_an_exit_would(trained):
    """The commands end with os._exit once done (errors.exit_now): the process's threads still finish, its exit
    handlers run and its buffered output comes out, in that order, with the command's exit status."""
    _, workdir, _ = trained
    code = ("import atexit, sys, threading, time; from mmjax import cli; "
            "atexit.register(lambda: print('exit handler ran')); sys.stdout.write('buffered; '); "
            "threading.Thread(target=lambda: (time.sleep(0.5), print('thread done'))).start(); cli.sample_command()")
    result = subprocess.run([sys.executable, "-c", code, "-o", str(workdir), "-n", "0"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 2
    assert result.stderr == "error: sampling num_samples must be 1 or more, got 0: pass a value in that range\n"
    assert result.stdout == "buffered; thread done\nexit handler ran\n"


def test_a_profiled_command_returns_to_its_profiler(monkeypatch, capsys):
    """Under cProfile (which writes its file after the script) the command exits as Python does, by SystemExit,
    not by errors.exit_now's os._exit."""
    monkeypatch.setattr(sys, "argv", ["sample.py", "--no-such-flag"])
    monkeypatch.setattr(errors, "exit_now", lambda status: pytest.fail(f"exit_now({status}) under a profiler"))
    profile = cProfile.Profile()
    profile.enable()
    try:
        with pytest.raises(SystemExit) as exit:
            cli.sample_command()
    finally:
        profile.disable()
    assert exit.value.code == 2 and capsys.readouterr().err.startswith("error: unrecognized arguments: --no-such-flag")


def test_sample_only_uses_the_work_dir(trained, capsys):
    _, workdir, _ = trained
    out = in_process(capsys, cli.train_command, "-o", workdir, "--sample-only", "-n", 5)
    assert sum(int(l.split()[0]) for l in out.splitlines() if "samples that are" in l) == 5


def test_default_dataset_trains_and_samples(tmp_path, capsys, monkeypatch):
    """No -i: the embedded names (the bigram: the dataset is what is checked, and its programs compile fastest)."""
    monkeypatch.setenv("MMJAX_CACHE", str(tmp_path / "cache"))
    out = in_process(capsys, cli.train_command, "-o", tmp_path / "run", "--type", "bigram", "--no-progress",
                     "--max-steps", 20, "--eval-every", 10, "--log-every", 10)
    assert "32469 words from" in out and "babynames-2017.txt" in out
    assert "1000 test" in out
    out = in_process(capsys, cli.sample_command, "-o", tmp_path / "run", "-n", 3)
    assert sum(int(l.split()[0]) for l in out.splitlines() if "samples that are" in l) == 3


def scalars(workdir):
    """(tag, step, value) of every scalar in the work dir's TensorBoard event files (TFRecords: length, its
    CRC, an Event, its CRC)."""
    from tensorboardX.proto.event_pb2 import Event

    found = []
    for path in sorted(workdir.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (n,) = struct.unpack("<Q", data[i:i + 8])
            event = Event.FromString(data[i + 12:i + 12 + n])
            found += [(v.tag, event.step, v.simple_value) for v in event.summary.value]
            i += 16 + n
    return found


def test_tensorboard_holds_makemores_tags(trained):
    _, workdir, _ = trained
    evals = [m for m in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if "test_loss" in m]
    want = [(tag, m["step"], float(np.float32(m[name]))) for m in evals
            for name, tag in (("train_loss", "Loss/train"), ("test_loss", "Loss/test"))]
    assert sorted(scalars(workdir)) == sorted(want) and len(want) == 4


def test_another_process_trains_the_same_bytes(trained):
    _, workdir, _ = trained  # train.py's run, and the same trained in this process
    assert (workdir.parent / "again" / "metrics.jsonl").read_bytes() == (workdir / "metrics.jsonl").read_bytes()


def test_sampling_flags_through_the_command(trained, tmp_path, capsys):
    _, workdir, _ = trained
    flags = {"greedy": ["--temperature", 0, "-n", 3, "--seed", 1], "top-k 1": ["--top-k", 1, "-n", 3, "--seed", 2],
             "top-p 1e-6": ["--top-p", 1e-6, "-n", 3, "--seed", 3],
             "batches of 7": ["--batch-size", 7, "-n", 20, "--seed", 5]}
    process = command("sample.py", "-o", workdir, *flags["batches of 7"], "--out", tmp_path / "batches of 7")
    for name in ("greedy", "top-k 1", "top-p 1e-6"):  # the others' command lines in this process meanwhile
        in_process(capsys, cli.sample_command, "-o", workdir, *flags[name], "--out", tmp_path / name)
    assert process.wait(timeout=300) == 0, process.stderr.read()
    words = {name: (tmp_path / name).read_text().splitlines() for name in flags}
    # greedy: one name, whatever the seed; keeping the likeliest token only (k 1, or p tiny) is greedy
    assert len(set(words["greedy"])) == 1 and words["top-k 1"] == words["top-p 1e-6"] == words["greedy"]
    # the same names as batches of 1,000 in this process
    assert words["batches of 7"] == mmjax.sample(workdir, num_samples=20, seed=5)
    assert len(set(words["batches of 7"])) > 10


def test_dedupe_and_another_encoding(tmp_path):
    (tmp_path / "words.txt").write_bytes("j\u00f6rg\nana\nj\u00f6rg\nbob\nana\n".encode("latin-1"))
    for name, flags in (("all", []), ("deduped", ["--dedupe"])):
        train("-i", tmp_path / "words.txt", "-o", tmp_path / name, "--encoding", "latin-1", "--type", "bigram",
              "--max-steps", 1, "--eval-every", 1, "--log-every", 1, "--no-progress", *flags)
    read = lambda name: WorkDir(tmp_path / name).load_dataset()
    assert sorted(read("all").train_words) == ["ana", "ana", "bob", "j\u00f6rg", "j\u00f6rg"]
    assert sorted(read("deduped").train_words) == ["ana", "bob", "j\u00f6rg"]
    assert read("deduped").vocab.chars == tuple("abgjnor\u00f6")


def test_a_batch_that_does_not_divide_over_the_devices_is_refused_before_writing(words_file, tmp_path):
    result = run_command("train.py", "-i", words_file, "-o", tmp_path / "run", *SMALL, "-b", 3,
                         env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert_refused(result, "batch size 3 does not divide over 2 devices: pass a multiple of 2")
    assert not (tmp_path / "run").exists()


def test_the_default_dataset_is_cached_under_xdg_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv("MMJAX_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = input_pipeline.default_words_path()
    assert path == tmp_path / "mmjax" / "babynames-2017.txt"
    assert len(path.read_text().splitlines()) == 32_469
