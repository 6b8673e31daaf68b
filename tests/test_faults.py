"""Faults a user meets: a second train.py on a work dir in use, sample.py while a run trains there, a kill -9,
and a full disk at each place that writes. Real processes: the disk fills through an LD_PRELOAD shim
(tests/faults.c) whose write(2) fails with ENOSPC on the chosen files, as a full disk makes it fail."""

import gc
import signal
import subprocess
import time

import jax
import numpy as np
import pytest

from conftest import write_words
from helpers import assert_refused, command, run_command, train
from mmjax import checkpoints, cli, inference
from mmjax.workdir import WorkDir
from support import in_turn

# the bigram: where the disk fills and who holds the work dir do not depend on the model, and its programs
# compile fastest (those of the run never stopped, compiled first, are read back by every command from the
# tests' compilation cache)
TINY = ["--type", "bigram", "--no-progress", "--sample-every", 0]
RUN = [*TINY, "--max-steps", 60, "--eval-every", 20, "--log-every", 10]

# where the disk fills: (the files whose writes fail, how many of those writes succeed first, the error)
DISK_FULL = {
    "metrics line": ("metrics.jsonl", 3, "cannot write {run}/metrics.jsonl"),  # step 30's line
    "TensorBoard": ("events.out.tfevents", 1, "cannot write TensorBoard events in {run}"),  # evaluation 40's
    "best checkpoint": ("best/40.", 0, "cannot write checkpoint {run}/checkpoints/best/40"),
    "latest checkpoint": ("latest/40.", 0, "cannot write checkpoint {run}/checkpoints/latest/40"),
    "checksums": ("mmjax-sha256.json", 2, "cannot write checkpoint {run}/checkpoints/best/40"),  # best/40's
    "config.json": ("config.json", 0, "cannot write to work dir {run}"),  # the run is not created
}


@pytest.fixture(scope="module")
def disk_full(faults, tmp_path_factory):
    """A run never stopped, and then the same run on a disk that fills at each place of DISK_FULL (processes,
    two at a time)."""
    d = tmp_path_factory.mktemp("disk_full")
    words = write_words(d / "words.txt")
    runs = {case: d / f"run{i}" for i, case in enumerate(DISK_FULL)}
    train("-i", words, "-o", d / "whole", *RUN)
    ended = in_turn({case: lambda case=case: command(
        "train.py", "-i", words, "-o", runs[case], *RUN,
        env=faults(ENOSPC_PATH=DISK_FULL[case][0], ENOSPC_AFTER=DISK_FULL[case][1])) for case in DISK_FULL})
    results = {case: (process.returncode, out, err) for case, (process, out, err) in ended.items()}
    return words, d / "whole", runs, results


def assert_same_run(run, whole):
    """Bit for bit: both checkpoints' states, and metrics.jsonl."""
    for which in ("latest", "best"):
        ours, theirs = (inference.load(r, which=which).state for r in (run, whole))
        for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
            np.testing.assert_array_equal(a, b)
    assert (run / "metrics.jsonl").read_bytes() == (whole / "metrics.jsonl").read_bytes()


@pytest.mark.parametrize("case", DISK_FULL)
def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes(disk_full, case, faults):
    words, whole, runs, results = disk_full
    run = runs[case]
    assert_refused(results[case], DISK_FULL[case][2].format(run=run) + " (No space left on device)")
    if case == "config.json":  # no run was recorded: the same command starts it again
        assert not WorkDir(run).has_run
        train("-i", words, "-o", run, *RUN)
    else:  # what was saved before the disk filled restores, and the metrics up to it read
        assert int(inference.load(run, which="latest").state.step) == 20
        assert [m["step"] for m in WorkDir(run).metrics()][:3] == [10, 20, 20]
        if case == "metrics line":  # dropping the metrics after the checkpoint fails too: the file stays whole
            before = (run / "metrics.jsonl").read_bytes()
            assert_refused(run_command("train.py", "-o", run, "--resume", *TINY,
                                       env=faults(ENOSPC_PATH="metrics.jsonl.tmp")), f"cannot write {run}/metrics.jsonl")
            assert (run / "metrics.jsonl").read_bytes() == before
        train("-o", run, "--resume", *TINY)
    assert_same_run(run, whole)


def refused(capsys, argv):
    """(status, stdout, stderr) of train.py's command run in this process, as assert_refused takes them."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        cli.train_command([str(a) for a in argv])
    return (exit.value.code, *capsys.readouterr())


# a read whose checkpoint is replaced under it is read again (WorkDir.restore); orbax leaves that read's coroutines
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_one_run_per_work_dir_and_sampling_while_it_trains(words_file, tmp_path, capsys, monkeypatch):
    """A second train.py is refused while the first trains; sampling then always works (a checkpoint replaced
    while it is read is read again: made to happen once, then left to chance); kill -9 leaves no lock behind."""
    run = tmp_path / "run"
    trainer = command("train.py", "-i", words_file, "-o", run, *TINY, "--max-steps", 10**6, "--eval-every", 10,
                      "--log-every", 10, stdout=subprocess.DEVNULL)
    failed_reads = []  # each read of a checkpoint that raised (then read again)
    read = checkpoints.Checkpoints._restore

    def counted_read(self, abstract, which):
        try:
            return read(self, abstract, which)
        except Exception as e:
            failed_reads.append((which, type(e).__name__))
            raise
    monkeypatch.setattr(checkpoints.Checkpoints, "_restore", counted_read)
    try:
        deadline = time.monotonic() + 300
        # a complete checkpoint: its directory named by its step alone (orbax writes it under another name first)
        while not any(p.name.isdigit() for p in (run / "checkpoints" / "latest").glob("*")):
            assert trainer.poll() is None and time.monotonic() < deadline, trainer.stderr.read()
            time.sleep(0.1)
        sampler = command("sample.py", "-o", run, "-n", 5)  # a real sample.py meanwhile
        assert_refused(refused(capsys, ["-o", run, "--resume", "--no-progress"]),
                       f"{run} is in use: another train.py (process {trainer.pid}) trains in it")
        assert_refused(refused(capsys, ["-i", words_file, "-o", run, *TINY]), "already holds a run")
        # The race made to happen: the first read waits, after listing its step and reading its metadata,
        # until the trainer has replaced that checkpoint (latest keeps one), then reads its arrays.
        shapes, waited = checkpoints.check_shapes, []

        def replaced_meanwhile(directory, *args):
            if not waited:
                step = int(directory.name)
                while directory.exists():
                    assert trainer.poll() is None and time.monotonic() < deadline
                    time.sleep(0.01)
                waited.append(step)
            return shapes(directory, *args)
        monkeypatch.setattr(checkpoints, "check_shapes", replaced_meanwhile)
        failed_reads.clear()
        raced = inference.load(run, which="latest")
        monkeypatch.setattr(checkpoints, "check_shapes", shapes)
        assert failed_reads and {which for which, _ in failed_reads} == {"latest"}, failed_reads  # read again
        assert int(raced.state.step) > waited[0]  # the checkpoint that replaced it
        steps = set()
        for _ in range(30):
            loaded = inference.load(run)
            assert len(inference.sample(loaded, num_samples=5)) == 5
            steps.add(int(loaded.state.step))
        out, err = sampler.communicate(timeout=300)
        assert sampler.returncode == 0 and "samples that are" in out, err
        assert trainer.poll() is None and len(steps) > 2  # read while the checkpoints were being replaced
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    latest = int(inference.load(run, which="latest").state.step)
    train("-o", run, "--resume", "--max-steps", latest + 10, *TINY)  # no stale lock
    assert int(inference.load(run, which="latest").state.step) == latest + 10
    gc.collect()  # the abandoned reads' coroutines end here, under this test's filter, not in a later test
