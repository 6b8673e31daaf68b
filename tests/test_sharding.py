"""Data parallelism over host devices gives the single-device result, checkpoints move between
device counts (subprocesses: the device count is fixed when jax starts), --distributed initialises
jax first, and a process other than 0 neither logs nor prints."""

import os
import subprocess
import sys

import jax
import numpy as np

from conftest import ROOT
from mmjax import cli
from mmjax.config import base_config
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

TRAIN_20_STEPS = """
import sys
from mmjax import train
from helpers import fresh_state, small_config
from mmjax.input_pipeline import Dataset, read_words
dataset = Dataset.from_words(read_words(sys.argv[1]), seed=0)
config = small_config(batch_size=int(sys.argv[3]))
state, (x_nt, y_nt), batch_sharding = train.to_devices(fresh_state(config, dataset.vocab),
                                                      dataset.vocab.encode_words(dataset.train_words), config.batch_size)
state, _ = train.train_steps(state, x_nt, y_nt, num_steps=20, batch_size=config.batch_size,
                             batch_sharding=batch_sharding)
assert jax.device_count() == len(state.params["lm_head"]["kernel"].sharding.device_set)
save_params(sys.argv[2], state.params)
"""

# train.py's main with --distributed, jax.distributed.initialize faked: prints whether jax had started
# its backends when it was called; saves the trained parameters to WORK_DIR/trained.npz.
TRAIN_DISTRIBUTED = """
import pathlib, sys
from jax._src import xla_bridge
from mmjax import cli, train
backends_started, trained = [], []
jax.distributed.initialize = lambda: backends_started.append(xla_bridge.backends_are_initialized())
train_and_evaluate = train.train_and_evaluate
train.train_and_evaluate = lambda *args, **kwargs: trained.append(train_and_evaluate(*args, **kwargs))
args = cli.train_parser().parse_args(["--distributed", *sys.argv[1:]])
cli.train_main(args)
save_params(pathlib.Path(args.work_dir) / "trained.npz", trained[0].params)
print(backends_started)
"""

# The latest checkpoint of WORK_DIR placed on every device as training places it; its parameters to OUT.
RESTORE = """
import sys
from helpers import fresh_state
from mmjax import train
from mmjax.workdir import WorkDir
workdir = WorkDir(sys.argv[1])
config, dataset = workdir.load_config(), workdir.load_dataset()
state = workdir.restore(fresh_state(config, dataset.vocab))
state = train.to_devices(state, (), config.batch_size)[0]
assert jax.device_count() == len(state.params["lm_head"]["kernel"].sharding.device_set)
save_params(sys.argv[2], state.params)
"""


def python_on(devices, script, *argv):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    return subprocess.run([sys.executable, "-c", SAVE_PARAMS + script, *map(str, argv)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)


def train_on(devices, words_file, out, batch_size=32):
    return python_on(devices, TRAIN_20_STEPS, words_file, out, batch_size)


def test_eight_devices_train_as_one(words_file, tmp_path):
    for devices in (1, 8):
        result = train_on(devices, words_file, tmp_path / f"{devices}.npz")
        assert result.returncode == 0, result.stderr
    one, eight = np.load(tmp_path / "1.npz"), np.load(tmp_path / "8.npz")
    assert len(one.files) == len(eight.files) > 5
    for name in one.files:
        got, want = eight[name], one[name]
        if name.endswith("['c_attn']['bias']"):
            # The key bias has no true gradient (it shifts every score of a query equally), so AdamW
            # turns the rounding noise of each reduction order into steps of its own: compare the rest.
            got, want = np.delete(got, slice(16, 32)), np.delete(want, slice(16, 32))
        np.testing.assert_allclose(got, want, atol=1e-5, err_msg=name)


def test_a_batch_that_does_not_divide_is_refused(words_file, tmp_path):
    result = train_on(8, words_file, tmp_path / "x.npz", batch_size=30)
    assert result.returncode != 0
    assert "batch size 30 does not divide over 8 devices: pass a multiple of 8" in result.stderr


def test_checkpoints_move_between_8_and_1_devices(words_file, tmp_path):
    for saved_on, restored_on in ((8, 1), (1, 8)):
        work_dir = tmp_path / f"saved_on_{saved_on}"
        result = python_on(saved_on, TRAIN_DISTRIBUTED, "-i", words_file, "-o", work_dir, *SMALL, "--eval-every", "20",
                           "--no-progress")  # one evaluation and save
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines()[-1] == "[False]"  # --distributed initialised jax once, before its backends
        result = python_on(restored_on, RESTORE, work_dir, tmp_path / "restored.npz")
        assert result.returncode == 0, result.stderr
        trained, restored = np.load(work_dir / "trained.npz"), np.load(tmp_path / "restored.npz")
        assert len(trained.files) == len(restored.files) > 5
        for name in trained.files:
            np.testing.assert_array_equal(restored[name], trained[name], err_msg=name)


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
    monkeypatch.setattr(WorkDir, "save", lambda self, state, score: saved.append(int(state.step)))
    argv = ["-i", str(words_file), "-o", str(tmp_path / "run"), "--type", "bigram", *SMALL]  # bigram: compiles fast
    cli.train_main(cli.train_parser().parse_args(argv))
    assert saved == [10, 20]  # every process saves
    assert not (tmp_path / "run").exists()  # no config, dataset, metrics.jsonl or TensorBoard events
    config = base_config()
    config.type = "bigram"
    monkeypatch.setattr(jax, "process_index", lambda backend=None: 0)  # process 0 writes the shared work dir
    WorkDir(tmp_path / "run").create(config, Dataset.from_words(read_words(words_file), 0))
    monkeypatch.setattr(jax, "process_index", lambda backend=None: 1)
    monkeypatch.setattr(WorkDir, "restore", lambda self, state, which: state)
    assert cli.print_samples(WorkDir(tmp_path / "run"), config) == []
    assert capsys.readouterr() == ("", "")  # no progress bar, evaluations or samples
