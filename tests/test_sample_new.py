"""sample.py --unique/--new: N names the user does not have, in sample order, or a one-line error."""

import json
import os
import re
import subprocess
import sys

import jax
import pytest

import mmjax
from conftest import ROOT, write_words
from mmjax import cli


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A tiny Transformer trained for 20 steps on 300 random words of 2..7 letters a..h."""
    words = write_words(tmp_path_factory.mktemp("data") / "words.txt")
    workdir = tmp_path_factory.mktemp("runs") / "run"
    config = mmjax.get_config("transformer", n_layer=1, n_head=2, n_embd=16, max_steps=20, eval_every=20,
                              log_every=10)
    mmjax.train_and_evaluate(config, workdir, words, progress=False)
    return workdir


def first_kept(words, n, exclude=(), unique=False):
    """The first n words in order that are not empty, not excluded and (unique) not seen before."""
    kept = []
    for word in words:
        if word and word not in exclude and not (unique and word in kept):
            kept.append(word)
    return kept[:n]


def test_unique_new_gives_n_distinct_names_none_in_the_data(run_dir, tmp_path):
    """Through the command (sample.py's one line, then the device count it ran on: one CPU device per core,
    splitting the rows), compared with this process's sampler on one device."""
    out = tmp_path / "names.txt"
    sample_py = ("import atexit, jax; from mmjax import cli; atexit.register(lambda: print(jax.local_device_count())); "
                 "cli.sample_command()")  # the command ends by os._exit, after its exit handlers
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-c", sample_py, "-o", str(run_dir), "-n", "300", "--unique", "--new",
                             "--seed", "3", "--out", str(out)], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) == len(os.sched_getaffinity(0)) and jax.local_device_count() == 1
    names = out.read_text(encoding="utf-8").splitlines()
    dataset = json.loads((run_dir / "dataset.json").read_text())
    data = set(dataset["train_words"] + dataset["test_words"])
    assert len(names) == len(set(names)) == 300 and all(names) and not set(names) & data
    assert "300 samples that are new:" in result.stdout
    draws = int(re.search(r"^300 names from (\d+) draws: [\d.]+ draws per name$", result.stdout, re.M).group(1))
    # they are the first such samples of the plain sampler, the last one being sample number `draws`
    plain = mmjax.sample(run_dir, num_samples=draws, seed=3)
    assert first_kept(plain, 300, data, unique=True) == names and plain[-1] == names[-1]


@pytest.mark.parametrize("unique, new", [(True, False), (False, True)])
def test_unique_alone_and_new_alone(run_dir, unique, new):
    words = mmjax.sample(run_dir, num_samples=400, seed=4, unique=unique, new=new)
    plain = mmjax.sample(run_dir, num_samples=2000, seed=4)
    dataset = json.loads((run_dir / "dataset.json").read_text())
    data = set(dataset["train_words"] + dataset["test_words"]) if new else ()
    assert len(words) == 400 and words == first_kept(plain, 400, data, unique) and not set(words) & set(data)
    assert (len(set(words)) == 400) == unique  # short names repeat unless --unique


def test_too_few_possible_names_is_a_one_line_error(run_dir, capsys):
    """After prefix 'abcdef' (the longest word has 7 letters) at most 9 names can follow."""
    with pytest.raises(SystemExit) as exit_info:
        cli.sample_command(["-o", str(run_dir), "-n", "20", "--unique", "--prefix", "abcdef"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: found only [1-9] distinct names of the 20 asked after 2000 draws \(100 per name "
                        r"asked\): ask for fewer, or raise --temperature\n", err), err
