"""The commands' persistent compilation cache (mmjax/compile_cache.py): a second run reads its programs
back instead of compiling them, with the same results, bit for bit, as a run without the cache; a damaged
entry, a cache directory that cannot be made, and a full disk each cost a compilation and one line of
warning, never the run."""

import jax
import numpy as np
import pytest

from conftest import write_words
from helpers import command
from mmjax import inference

# train.py (or sample.py: `driver.py sample ...`) counting the compilation cache's hits and the programs it
# compiled (jax.monitoring's events: a program read from the cache is also timed as a backend compilation)
DRIVER = """
import atexit, jax.monitoring, sys
counts = {"hits": 0, "compiled": 0}
events = {"/jax/compilation_cache/cache_hits": "hits", "/jax/core/compile/backend_compile_duration": "compiled"}
count = lambda event, *args, **kwargs: counts.__setitem__(events[event], counts[events[event]] + 1) if event in events else None
jax.monitoring.register_event_listener(count)
jax.monitoring.register_event_duration_secs_listener(count)
atexit.register(lambda: print("counts", counts["hits"], counts["compiled"] - counts["hits"]))  # the command ends by
# os._exit, after these
from mmjax import cli
(cli.sample_command if sys.argv[1:2] == ["sample"] and sys.argv.pop(1) else cli.train_command)()
"""
# samples printed at step 10 and 20 (the program sample.py -n 10 runs)
RUN = ["--type", "bigram", "--max-steps", 20, "--eval-every", 10, "--log-every", 10, "--sample-every", 10,
       "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, faults):
    """The same training, as commands with the cache's environment: cold, warm (the same cache), without
    the cache, on a damaged cache, with a cache directory that cannot be made, and on a full disk."""
    d = tmp_path_factory.mktemp("compile_cache")
    words, driver = write_words(d / "words.txt"), d / "driver.py"
    driver.write_text(DRIVER)
    (d / "a_file").write_text("")
    # the tests' own cache is the session's (conftest.py); these commands use the one mmjax makes
    base = {"JAX_COMPILATION_CACHE_DIR": "", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}  # the bigram's
    # programs compile in milliseconds

    def start(name, *argv, **env):
        return command(str(driver), *(argv or ["-i", words, "-o", d / name, *RUN]), env={**base, **env})

    def finish(process):
        out, err = process.communicate(timeout=300)
        hits, compiled = map(int, out.split("counts ")[-1].split())
        return process.returncode, hits, compiled, err

    # two at a time (a machine of few cores runs more only in turns): each of cold, warm and damaged, which read
    # the cache one after the other, beside one that has a cache of its own or none
    results = {}
    cold, off = start("cold", MMJAX_CACHE=str(d / "cache")), start("off", MMJAX_CACHE=str(d / "unused"),
                                                                     MMJAX_COMPILE_CACHE="0")
    results["cold"], results["off"] = finish(cold), finish(off)
    warm, unmakeable = start("warm", MMJAX_CACHE=str(d / "cache")), start("unmakeable",
                                                                          MMJAX_CACHE=str(d / "a_file" / "cache"))
    sample = start("sample", "sample", "-o", d / "cold", "-n", 10, MMJAX_CACHE=str(d / "cache"))  # brief: a third
    results["warm"], results["unmakeable"], results["sample"] = finish(warm), finish(unmakeable), finish(sample)
    entries = sorted((d / "cache" / "xla").glob("*-cache"))
    for entry in entries:  # cut short, where the next run reads them (the keys depend on the cache's path)
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    damaged = start("damaged", MMJAX_CACHE=str(d / "cache"))
    disk_full = start("disk_full", MMJAX_CACHE=str(d / "full"), **faults(ENOSPC_PATH=str(d / "full" / "xla")))
    results["damaged"], results["disk_full"] = finish(damaged), finish(disk_full)
    return d, results, entries


def same_run(d, name):
    """metrics.jsonl byte for byte, and the best and latest checkpoints' arrays, as the cold run's."""
    if (d / name / "metrics.jsonl").read_bytes() != (d / "cold" / "metrics.jsonl").read_bytes():
        return False
    for which in ("best", "latest"):
        ours, theirs = (inference.load(d / run, which=which).state for run in (name, "cold"))
        if not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True)):
            return False
    return True


def test_a_second_run_reads_its_programs_back(runs):
    d, results, entries = runs
    status, hits, compiled, err = results["cold"]
    assert status == 0 and hits == 0 and compiled >= 3 and err == "", err
    assert len(entries) == compiled and {p.name.split("-")[0] for p in entries} >= {
        "jit_create", "jit_train_steps", "jit_eval_step"}
    status, hits, compiled, err = results["warm"]
    assert status == 0 and err == "" and hits == len(entries) and compiled == results["cold"][2] - len(entries)
    assert same_run(d, "warm")


def test_sample_py_after_training_reads_back_the_sampler_that_printed_its_samples(runs):
    """Up to 64 rows, sample.py runs one device (not a CPU device per core, which the cache's keys count): the
    program the run compiled for its samples, read back, and nothing compiled."""
    _, results, _ = runs
    status, hits, compiled, err = results["sample"]
    assert status == 0 and err == "" and hits >= 1 and compiled == 0, results["sample"]


def test_without_the_cache_the_same_run_compiles_everything(runs):
    d, results, _ = runs
    status, hits, compiled, err = results["off"]
    assert status == 0 and err == "" and hits == 0 and compiled == results["cold"][2]
    assert not (d / "unused" / "xla").exists() and same_run(d, "off")


@pytest.mark.parametrize("case, says", [
    ("damaged", "warning: the compilation cache in {d}/cache/xla failed (error: Error -5 while decompressing data"),
    ("unmakeable", "warning: no compilation cache in {d}/a_file/cache/xla (Not a directory): every run compiles "
                   "its programs again; set MMJAX_CACHE to a writable directory, or MMJAX_COMPILE_CACHE=0"),
    ("disk_full", "warning: the compilation cache in {d}/full/xla failed ("),
])
def test_a_cache_that_fails_costs_a_compilation_and_one_line(runs, case, says):
    d, results, _ = runs
    status, hits, compiled, err = results[case]
    assert status == 0 and hits == 0 and compiled == results["cold"][2], err
    assert err.count("\n") == 1 and err.startswith(says.format(d=d)), err
    assert same_run(d, case)
