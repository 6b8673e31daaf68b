"""Data parallelism over host devices gives the single-device result, checkpoints move between
device counts (subprocesses: the device count is fixed when jax starts), --distributed initialises
jax first, and a process other than 0 neither logs nor prints."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT, write_words
from mmjax import cli, inference, sampling
from mmjax.config import base_config
from mmjax.checkpoints import Checkpoints
from mmjax.input_pipeline import Dataset, read_words
from mmjax.workdir import WorkDir

SMALL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--max-steps", "20", "--eval-every", "10",
         "--log-every", "10"]

# Starts each script below: writes a parameter tree to an .npz file, an array per path.
SAVE_PARAMS = """
import jax, numpy as np
def save_params(path, params):
    params = jax.device_get(params)
    np.savez(path, **{jax.tree_util.keystr(p): a for p, a in jax.tree_util.tree_leaves_with_path(params)})
"""

# Arguments OTHER OUT, then train.py's flags. train.py's main with --distributed, jax.distributed.initialize
# faked: prints whether jax had started its backends when it was called; saves the trained parameters to
# WORK_DIR/trained.npz. Then, once OTHER's run (the other device count's) has saved its own, restores it here
# (RESTORE).
TRAIN_DISTRIBUTED = """
import pathlib, sys, time
from mmjax import cli, train
other, out, *train_argv = sys.argv[1:]
def backends_are_initialized():  # by public means: jax_num_cpu_devices may change only before they start
    devices = jax.config.jax_num_cpu_devices
    try:
        jax.config.update("jax_num_cpu_devices", devices + 2 if devices > 0 else 3)
    except RuntimeError:
        return True
    jax.config.update("jax_num_cpu_devices", devices)
    return False
backends_started, trained = [], []
jax.distributed.initialize = lambda: backends_started.append(backends_are_initialized())
train_and_evaluate = train.train_and_evaluate
train.train_and_evaluate = lambda *args, **kwargs: trained.append(train_and_evaluate(*args, **kwargs))
argv = ["--distributed", *train_argv]
cli.train_main(cli.train_parser().parse_args(argv))
args = cli.train_parser().parse_args(argv)
save_params(pathlib.Path(args.work_dir) / "trained.tmp.npz", trained[0].params)  # whole when the other sees it
pathlib.Path(args.work_dir, "trained.tmp.npz").rename(pathlib.Path(args.work_dir) / "trained.npz")
assert jax.device_count() == len(trained[0].params["lm_head"]["kernel"].sharding.device_set)
print(backends_started, flush=True)
deadline = time.monotonic() + 240
while not pathlib.Path(other, "trained.npz").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
restore(other, out)
"""

# restore(WORK_DIR, OUT): the latest checkpoint of WORK_DIR placed on every device as training places it; its
# parameters to OUT; then samples from it to OUT.samples.npy, 80 rows split over every device.
RESTORE = """
from helpers import fresh_state
from mmjax import sampling, trainees
from mmjax.models import create_model
from mmjax.workdir import WorkDir
def restore(path, out):
    workdir = WorkDir(path)
    config, dataset = workdir.load_config(), workdir.load_dataset()
    state = workdir.checkpoints.restore(fresh_state(config, dataset.vocab))
    state = jax.device_put(state, trainees.data_parallel(config.batch_size)[0])
    assert jax.device_count() == len(state.params["lm_head"]["kernel"].sharding.device_set)
    save_params(out, state.params)
    assert jax.device_count() == 1 or sampling.local_mesh(80, "rows").size == jax.device_count()
    model = create_model(config, dataset.vocab.size, dataset.vocab.block_size)
    np.save(out + ".samples.npy", sampling.sample(model, {"params": state.params}, 3, 400, batch_size=80)[0])
"""


def python_on(devices, script, *argv, wait=True):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    process = subprocess.Popen([sys.executable, "-c", SAVE_PARAMS + script, *map(str, argv)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    if not wait:
        return process
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def trained_on(tmp_path_factory):
    """train.py's main with --distributed on 1 and on 8 devices, side by side: each work dir, with its trained
    parameters in trained.npz (one evaluation and save, at step 20); then each process restores the other's
    checkpoint (in d: SAVED_ON.npz, the parameters restored on the other device count, and their samples)."""
    d = tmp_path_factory.mktemp("devices")
    words = write_words(d / "words.txt")
    other = {1: 8, 8: 1}
    processes = {devices: python_on(devices, RESTORE + TRAIN_DISTRIBUTED, d / f"on_{other[devices]}",
                                    d / f"{other[devices]}.npz", "-i", words, "-o", d / f"on_{devices}", *SMALL,
                                    "--eval-every", "20", "--no-progress", wait=False) for devices in (1, 8)}
    for process in processes.values():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
        assert stdout.splitlines()[-1] == "[False]"  # --distributed initialised jax once, before its backends
    return {devices: d / f"on_{devices}" for devices in processes}


def test_eight_devices_train_as_one(trained_on):
    one, eight = (np.load(trained_on[devices] / "trained.npz") for devices in (1, 8))
    assert len(one.files) == len(eight.files) > 5
    for name in one.files:
        got, want = eight[name], one[name]
        if name.endswith("['c_attn']['bias']"):
            # The key bias has no true gradient (it shifts every score of a query equally), so AdamW
            # turns the rounding noise of each reduction order into steps of its own: compare the rest.
            got, want = np.delete(got, slice(16, 32)), np.delete(want, slice(16, 32))
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)


def test_checkpoints_move_between_8_and_1_devices_and_sample_there_as_here(trained_on):
    """Restored on the other device count, the same parameters; and the samples drawn there (on 8 devices,
    10 rows on each) are those of this process's one device."""
    for saved_on in (8, 1):
        restored_at = trained_on[saved_on].parent / f"{saved_on}.npz"
        trained, restored = np.load(trained_on[saved_on] / "trained.npz"), np.load(restored_at)
        assert len(trained.files) == len(restored.files) > 5
        for name in trained.files:
            np.testing.assert_array_equal(restored[name], trained[name], err_msg=name)
        run = inference.load(trained_on[saved_on], which="latest")
        here = sampling.sample(run.model, {"params": run.state.params}, 3, 400, batch_size=80)[0]
        np.testing.assert_array_equal(np.load(f"{restored_at}.samples.npy"), here)


def test_distributed_outside_a_cluster_is_a_clear_error(words_file, tmp_path):
    result = subprocess.run([sys.executable, ROOT / "train.py", "--distributed", "-i", words_file, "-o", tmp_path],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.startswith("error: --distributed found no cluster to join (coordinator_address should "
                                    "be defined): run train.py once per host")
    assert len(result.stderr.splitlines()) == 1


def test_only_process_0_logs_prints_and_samples(words_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(jax, "process_index", lambda backend=None: 1)
    # Orbax coordinates the processes' saves: it would wait here for a process 0 that does not exist.
    saved = []
    monkeypatch.setattr(Checkpoints, "save", lambda self, step, latest, best=None, score=None: saved.append(step))
    argv = ["-i", str(words_file), "-o", str(tmp_path / "run"), "--type", "bigram", *SMALL]  # bigram: compiles fast
    cli.train_main(cli.train_parser().parse_args(argv))
    assert saved == [10, 20]  # every process saves
    assert not (tmp_path / "run").exists()  # no config, dataset, metrics.jsonl or TensorBoard events
    config = base_config()
    config.type = "bigram"
    monkeypatch.setattr(jax, "process_index", lambda backend=None: 0)  # process 0 writes the shared work dir
    WorkDir(tmp_path / "run").create(config, Dataset.from_words(read_words(words_file), 0))
    monkeypatch.setattr(jax, "process_index", lambda backend=None: 1)
    monkeypatch.setattr(Checkpoints, "restore", lambda self, abstract, which="latest": abstract)
    assert cli.print_samples(WorkDir(tmp_path / "run")) == []
    assert capsys.readouterr() == ("", "")  # no progress bar, evaluations or samples
