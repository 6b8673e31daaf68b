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
from helpers import SMALL, assert_refused, command, run_command, train
from mmjax import inference
from mmjax.workdir import WorkDir

RUN = [*SMALL, "--max-steps", 60, "--eval-every", 20, "--log-every", 10]

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
    """A run never stopped, and the same run on a disk that fills at each place of DISK_FULL (in parallel)."""
    d = tmp_path_factory.mktemp("disk_full")
    words = write_words(d / "words.txt")
    runs = {case: d / f"run{i}" for i, case in enumerate(DISK_FULL)}
    processes = {case: command("train.py", "-i", words, "-o", runs[case], *RUN, env=faults(ENOSPC_PATH=DISK_FULL[case][0], ENOSPC_AFTER=DISK_FULL[case][1]))
                 for case in DISK_FULL}
    train("-i", words, "-o", d / "whole", *RUN)
    results = {case: (p.wait(timeout=600), p.stdout.read(), p.stderr.read()) for case, p in processes.items()}
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
            assert_refused(run_command("train.py", "-o", run, "--resume", "--no-progress",
                                       env=faults(ENOSPC_PATH="metrics.jsonl.tmp")), f"cannot write {run}/metrics.jsonl")
            assert (run / "metrics.jsonl").read_bytes() == before
        train("-o", run, "--resume", "--no-progress")
    assert_same_run(run, whole)


# a read whose checkpoint is replaced under it is read again (WorkDir.restore); orbax leaves that read's coroutines
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_one_run_per_work_dir_and_sampling_while_it_trains(words_file, tmp_path):
    """A second train.py is refused while the first trains; sampling then always works (a checkpoint replaced
    while it is read is read again); kill -9 leaves no lock behind."""
    run = tmp_path / "run"
    trainer = command("train.py", "-i", words_file, "-o", run, *SMALL, "--max-steps", 10**6, "--eval-every", 10,
                      "--log-every", 10, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not list((run / "checkpoints" / "latest").glob("[0-9]*")):
            assert trainer.poll() is None and time.monotonic() < deadline, trainer.stderr.read()
            time.sleep(0.1)
        assert_refused(run_command("train.py", "-o", run, "--resume", "--no-progress"),
                       f"{run} is in use: another train.py (process {trainer.pid}) trains in it")
        assert_refused(run_command("train.py", "-i", words_file, "-o", run, *SMALL), "already holds a run")
        steps = set()
        for _ in range(30):
            loaded = inference.load(run)
            assert len(inference.sample(loaded, num_samples=5)) == 5
            steps.add(int(loaded.state.step))
        status, out, err = run_command("sample.py", "-o", run, "-n", 5)
        assert status == 0 and "samples that are" in out, err
        assert trainer.poll() is None and len(steps) > 2  # read while the checkpoints were being replaced
    finally:
        trainer.send_signal(signal.SIGKILL)
        trainer.wait()
    latest = int(inference.load(run, which="latest").state.step)
    train("-o", run, "--resume", "--max-steps", latest + 10, "--no-progress")  # no stale lock
    assert int(inference.load(run, which="latest").state.step) == latest + 10
    gc.collect()  # the abandoned reads' coroutines end here, under this test's filter, not in a later test
