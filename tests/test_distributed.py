"""Several hosts for real: train.py processes on loopback addresses, one CPU device each, joined with
--distributed --coordinator --num-processes --process-id. They train as one process with their devices
does, stop together on a signal to any one, resume exactly, exit with one line when one of them dies, and
refuse a bad address, a port in use, absent peers and disagreeing flags with one line each."""

import json
import signal
import socket
import time

import jax
import numpy as np
import pytest

from conftest import ROOT, write_words
from helpers import command
from mmjax import devices, inference
from mmjax.errors import UserError

RUN = ["--type", "bigram", "--max-steps", 40, "--eval-every", 20, "--log-every", 10, "--no-progress",
       "--sample-every", 0]
ONE_DEVICE = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
# train.py's runs, one after the other in one process (one jax start), their flags separated by --then; with
# --distributed, the later runs keep the first's connection to the other processes (jax joins them once a process).
# Each run that returns leaves PROCESS_ID.returned in its work dir. With --signal NAME STEP P first, process P sends
# itself that signal as its last run's dispatch from STEP starts.
RUNS = """
import os, pathlib, signal, sys
import numpy as np
from mmjax import cli, devices, steps
argv, signal_at = sys.argv[1:], None
if argv[0] == "--signal":
    signal_at, argv = (getattr(signal, argv[1]), int(argv[2]), int(argv[3])), argv[4:]
runs = [[]]
for arg in argv:
    runs.append([]) if arg == "--then" else runs[-1].append(arg)
process = int(argv[argv.index("--process-id") + 1]) if "--process-id" in argv else 0
for name in ("train_steps", "population_train_steps"):
    def signalling(state, *args, original=getattr(steps, name), **kwargs):
        if armed and int(np.asarray(state.step).ravel()[0]) == signal_at[1] and process == signal_at[2]:
            os.kill(os.getpid(), signal_at[0])
        return original(state, *args, **kwargs)
    setattr(steps, name, signalling)
for i, run in enumerate(runs):
    armed = signal_at is not None and i == len(runs) - 1
    cli.train_command(run)
    pathlib.Path(run[run.index("-o") + 1], f"{process}.returned").touch()
    devices.join = lambda *peers: None
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def hosts(d, words, *runs, signal_at=(), processes=2):
    """`processes` processes started together (Popen each), each training `runs` (a work dir's name in d and its
    flags) one after the other (RUNS); with `signal_at` (NAME, STEP, PROCESS), that process signals its last run."""
    peers = ["--distributed", "--coordinator", f"127.0.0.1:{free_port()}", "--num-processes", processes]

    def argv(i):  # the runs' train.py flags for process i
        return [arg for k, (name, *flags) in enumerate(runs) for arg in (
            *(["--then"] if k else []), "-i", words, "-o", d / name, *RUN, *flags, *peers, "--process-id", i)]

    return [command(str(d / "runs.py"), *(["--signal", *signal_at] if signal_at else []), *argv(i), env=ONE_DEVICE)
            for i in range(processes)]


def finish(processes, timeout=240):
    return [(p.wait(timeout=timeout), p.stderr.read()) for p in processes]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two-process runs: one stopped by SIGTERM to process 1; then, in two other processes, it resumed, an
    uninterrupted run, a population of 4, and one killed (-9) in process 1; and one process with two devices of
    the same run and population."""
    d = tmp_path_factory.mktemp("distributed")
    words = write_words(d / "words.txt")
    (d / "runs.py").write_text(RUNS)
    population = ["--population", 4]  # of bigrams (RUN's): the fastest to compile
    results = {}
    # a run of two processes at a time (and the one-process runs beside the first): on a machine of few cores more
    # at once only take turns, and their threads spin waiting
    alone = command(str(d / "runs.py"), "-i", words, "-o", d / "alone", *RUN, "--then", "-i", words, "-o",
                    d / "population_alone", *RUN, *population,
                    env={**ONE_DEVICE, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    results["stopped"] = finish(hosts(d, words, ("stopped",), signal_at=("SIGTERM", 10, 1)))
    # the stopped run resumed, the uninterrupted run, the population, then the run killed in process 1: the
    # processes end with that kill (the runs that returned leave their marks: `returned`)
    results["resumed"] = results["whole"] = results["population"] = results["killed"] = finish(hosts(
        d, words, ("stopped", "--resume"), ("whole",), ("population", *population), ("killed",),
        signal_at=("SIGKILL", 30, 1)))
    results["alone"] = results["population_alone"] = finish([alone])  # both runs' process
    return d, results


def returned(d, name, processes=2):
    """Whether the run in d / name returned in each of its processes (RUNS marks it)."""
    return all((d / name / f"{i}.returned").exists() for i in range(processes))


def leaves(path, which="latest"):
    return [np.asarray(a) for a in jax.tree.leaves(inference.load(path, which=which).state)]


def test_two_processes_train_as_one_process_with_two_devices(runs):
    d, results = runs
    assert returned(d, "whole") and returned(d, "alone", processes=1), results["whole"]
    assert [status for status, _ in results["alone"]] == [0], results["alone"]
    for ours, theirs in zip(leaves(d / "whole"), leaves(d / "alone"), strict=True):
        np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0)
    # their checkpoints, written by both processes into one work dir, restore in this single process
    assert int(inference.load(d / "whole").state.step) in (20, 40)
    losses = lambda path: [m["test_loss"] for m in map(json.loads, (path / "metrics.jsonl").read_text().splitlines())
                           if "test_loss" in m]
    assert np.allclose(losses(d / "whole"), losses(d / "alone"), atol=1e-6) and len(losses(d / "whole")) == 2


def test_sigterm_to_one_process_stops_both_at_the_same_step_and_resume_continues_exactly(runs):
    d, results = runs
    (status_0, err_0), (status_1, err_1) = results["stopped"]
    assert status_0 == status_1 == 143, results["stopped"]
    assert err_0.startswith("stopped at step 20: continue with ") and err_0.count("\n") == 1 and err_1 == ""
    assert returned(d, "stopped"), results["resumed"]  # the resumed run, in both processes
    assert (d / "stopped" / "metrics.jsonl").read_bytes() == (d / "whole" / "metrics.jsonl").read_bytes()
    for which in ("latest", "best"):
        for ours, theirs in zip(leaves(d / "stopped", which), leaves(d / "whole", which), strict=True):
            np.testing.assert_array_equal(ours, theirs)


def test_a_process_killed_makes_the_other_exit_with_one_line_and_the_checkpoint_restores(runs):
    d, results = runs
    (status_0, err_0), (status_1, _) = results["killed"]
    assert status_1 == -signal.SIGKILL and status_0 == 1, results["killed"]
    assert err_0.count("\n") == 1 and err_0.startswith("error: another process of the run stopped answering ("), err_0
    assert f"its checkpoint of step 20 is kept; train.py -o {d / 'killed'} --resume on every host" in err_0
    assert int(inference.load(d / "killed", which="latest").state.step) == 20


def test_a_population_over_two_processes_is_the_population_in_one(runs):
    d, results = runs
    assert returned(d, "population") and results["population_alone"][0][0] == 0
    evaluations = lambda path: [m for m in map(json.loads, (path / "metrics.jsonl").read_text().splitlines())
                                if "test_loss" in m or "ensemble_test_loss" in m]
    ours, theirs = evaluations(d / "population"), evaluations(d / "population_alone")
    assert len(ours) == len(theirs) == 2 * 5
    for a, b in zip(ours, theirs):
        assert a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-6 for k in a if k.endswith("loss")), (a, b)


def test_join_refuses_a_bad_address_a_port_in_use_and_an_absent_coordinator():
    with pytest.raises(UserError, match=r"--coordinator nohost.invalid:1234: no such host \(.*\): give process 0's"):
        devices.join("nohost.invalid:1234", 2, 1)
    with pytest.raises(UserError, match="--coordinator '127.0.0.1' is not HOST:PORT"):
        devices.join("127.0.0.1", 2, 0)
    with pytest.raises(UserError, match=r"--process-id 2 is not one of 0..1 \(--num-processes 2\)"):
        devices.join("127.0.0.1:1234", 2, 2)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UserError, match=f"port {port} of --coordinator 127.0.0.1:{port} is in use on this host"):
            devices.join(f"127.0.0.1:{port}", 2, 0)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"no coordinator answered at 127.0.0.1:\d+ within 1 s: start process 0"):
        devices.join(f"127.0.0.1:{free_port()}", 2, 1, timeout=1)
    assert time.monotonic() - start < 5 and not jax.distributed.is_initialized()


def test_absent_peers_and_disagreeing_flags_are_one_line_errors_in_bounded_time(tmp_path, words_file):
    start = time.monotonic()
    lonely = command("train.py", "-i", words_file, "-o", tmp_path / "lonely", *RUN, "--distributed", "--coordinator",
                     f"127.0.0.1:{free_port()}", "--num-processes", 2, "--process-id", 0, "--join-timeout", 5,
                     env=ONE_DEVICE)
    disagree = [command("train.py", "-i", words_file, "-o", tmp_path / "disagree", *RUN, "--max-steps", steps,
                        "--distributed", "--coordinator", f"127.0.0.1:{port}", "--num-processes", 2, "--process-id", i,
                        env=ONE_DEVICE) for port in [free_port()] for i, steps in enumerate((40, 50))]
    (status, err), = finish([lonely], timeout=60)
    assert status == 2 and err == ("error: not all 2 processes joined at 127.0.0.1:" + err.split(":")[2].split()[0]
                                   + " within 5 s: give every process the same --coordinator and --num-processes, a "
                                   "free port, and ids 0..1 once each\n"), err
    assert time.monotonic() - start < 60
    for status, err in finish(disagree, timeout=120):
        assert status == 2 and err.count("\n") == 1, err
        assert err.startswith("error: the processes disagree on the config (the flags and the config file): process "
                              "1's differs from process 0's; give every process the same flags and input file"), err
    assert not (tmp_path / "disagree" / "checkpoints").exists()
