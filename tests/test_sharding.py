"""Data parallelism over host devices gives the single-device result (subprocesses: the device count
is fixed when jax starts)."""

import os
import subprocess
import sys

import numpy as np

from conftest import ROOT

TRAIN_20_STEPS = """
import sys, jax, jax.numpy as jnp, numpy as np
from mmjax import train
from mmjax.config import base_config
from mmjax.input_pipeline import Dataset, read_words
dataset = Dataset.from_words(read_words(sys.argv[1]), seed=0)
config = base_config()
config.update(n_layer=1, n_head=2, n_embd=16, batch_size=int(sys.argv[3]))
state, (x_nt, y_nt), batch_sharding = train.to_devices(train.create_train_state(config, dataset.vocab),
                                                      dataset.vocab.encode_words(dataset.train_words), config.batch_size)
state, _ = train.train_steps(state, x_nt, y_nt, num_steps=20, batch_size=config.batch_size,
                             batch_sharding=batch_sharding)
assert jax.device_count() == len(state.params["lm_head"]["kernel"].sharding.device_set)
params = jax.device_get(state.params)
np.savez(sys.argv[2], **{jax.tree_util.keystr(p): a for p, a in jax.tree_util.tree_leaves_with_path(params)})
"""


def train_on(devices, words_file, out, batch_size=32):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
           "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", TRAIN_20_STEPS, str(words_file), str(out), str(batch_size)],
                          capture_output=True, text=True, timeout=300, env=env)


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
