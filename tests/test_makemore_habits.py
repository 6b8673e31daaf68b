"""makemore.py's commands and flags as its users type them: -i with --resume and --sample-only, --num-workers,
--device, --max-steps -1 (tests/test_stopping.py runs one until SIGTERM), samples while training."""

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import ROOT
from helpers import compiled_count
from mmjax import cli, inference, sampling
from mmjax.input_pipeline import first_difference
from support import in_turn
from test_bad_input import fails, tree_digest

TINY = ["--type", "bigram", "--no-progress"]


def train_py(*argv, cwd):
    """train.py's command line, run in this process in directory `cwd`: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(cwd), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            cli.train_command([str(a) for a in argv], prog="train.py")
            status = 0
        except SystemExit as e:
            status = e.code
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def names(tmp_path_factory):
    """makemore's README, verbatim in a directory of its own: train, sample, resume (with -i each time); its
    commands in this process (tests/test_cli.py runs train.py and sample.py as processes)."""
    d = tmp_path_factory.mktemp("makemore")
    words = ["emma", "olivia", "ava", "isabella", "sophia", "mia", "amelia", "harper", "evelyn", "abigail", "emily",
             "ella", "elizabeth", "camila", "luna", "sofia", "avery", "mila", "aria", "scarlett"]
    (d / "names.txt").write_text("\n".join(words) + "\n")
    results = {"train": train_py("-i", "names.txt", "-o", "names", *TINY, "--max-steps", 20, "--eval-every", 10,
                                 "--log-every", 10, cwd=d)}
    results["sample"] = train_py("-i", "names.txt", "-o", "names", "--sample-only", cwd=d)
    run = inference.load(d / "names")  # what --sample-only must print: the best checkpoint's samples
    expected = sampling.report(inference.sample(run), run.dataset)
    results["resume"] = train_py("-i", "names.txt", "-o", "names", "--resume", "--max-steps", 40, "--num-workers", 4,
                                 "--device", "cpu", cwd=d)
    return d, words, results, expected


def test_makemores_commands_train_sample_and_resume(names):
    d, words, results, expected = names
    for status, _, err in results.values():
        assert status == 0 and "Traceback" not in err, err
    assert "20 words from names.txt" in results["train"][1]
    assert (d / "names" / "words.sha256").read_text() == hashlib.sha256("\n".join(words).encode()).hexdigest() + "\n"
    assert expected in results["sample"][1]
    latest = sorted(p.name for p in (d / "names" / "checkpoints" / "latest").iterdir())
    assert latest == ["40"] and int(inference.load(d / "names", which="latest").state.step) == 40


@pytest.fixture
def run_copy(names, tmp_path):
    shutil.copytree(names[0] / "names", tmp_path / "run")
    return tmp_path / "run", names[1]


@pytest.mark.parametrize("flag", ["--resume", "--sample-only"])
@pytest.mark.parametrize("digest", [True, False], ids=["digest", "made-before-digests"])
def test_other_words_are_refused_and_change_nothing(run_copy, capsys, flag, digest):
    run, words = run_copy
    if not digest:  # a work dir written before words.sha256: compared with dataset.json's words
        (run / "words.sha256").unlink()
    other = run.parent / "other.txt"
    other.write_text("\n".join(words[:6] + ["", "zoe"] + words[6:]) + "\n")  # a blank line, then a new word
    before = tree_digest(run)
    err = fails(capsys, ["-i", other, "-o", run, flag])
    assert err == (f"error: {other} does not hold the run's words (21 words, the run has 20; line 8 is 'zoe' where the "
                   f"run has 'amelia'): drop -i, the run in {run} trains and samples on its own words; or pass "
                   "another -o\n")
    assert tree_digest(run) == before


def test_the_runs_words_are_accepted_without_a_digest(run_copy, capsys):
    run, words = run_copy
    (run / "words.sha256").unlink()
    (run.parent / "same.txt").write_text("\n\n".join(words))  # blank lines are not words
    cli.train_command(["-i", str(run.parent / "same.txt"), "-o", str(run), "--sample-only", "-n", "3"])
    assert "samples that are" in capsys.readouterr().out


def test_first_difference_says_counts_and_line():
    assert first_difference(["a", "b"], ["a", "b", "c"], ["a", "b"]) == (
        "2 words, the run has 3; the file ends where the run goes on with 'c'")
    assert first_difference(["a", "b", "c"], ["a", "b"], ["a", "", "b", "c"]) == (
        "3 words, the run has 2; line 4, 'c', is past the run's last word")
    # the second 'a' (line 3) is the first that differs
    assert first_difference(["a", "b", "a"], ["a", "b", "c"], ["a", "b", "a"]) == (
        "3 words, the run has 3; line 3 is 'a' where the run has 'c'")


def test_help_lists_makemores_flags():
    text = " ".join(cli.train_parser("train.py").format_help().split())
    for flag in ("--input-file", "--work-dir", "--resume", "--sample-only", "--num-workers", "--max-steps", "--device",
                 "--seed", "--top-k", "--type", "--n-layer", "--n-head", "--n-embd", "--n-embd2", "--batch-size",
                 "--learning-rate", "--weight-decay", "--sample-every"):
        assert flag in text
    assert "accepted, and no effect (the words live on the device" in text
    assert "-1: until stopped (makemore's default; mmjax's is 10000)" in text


ABSENT = {"tpu": ("tpu", "tpu"), "cuda:1": ("cuda", "cuda"), "mps": ("METAL", "mps")}  # --device: platform, name


@pytest.fixture(scope="module")
def absent_devices(tmp_path_factory):
    """train.py --device D for each of ABSENT, as processes (the platform is chosen before jax starts), two at
    a time: D -> (exit status, stdout, stderr, the work dir)."""
    d = tmp_path_factory.mktemp("devices")
    ended = in_turn({device: lambda i=i, device=device: subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "--device", device, "-o", str(d / f"run{i}")], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True) for i, device in enumerate(ABSENT)})
    return {device: (p.returncode, out, err, d / f"run{i}") for i, (device, (p, out, err)) in enumerate(ended.items())}


@pytest.mark.parametrize("device", ABSENT)
def test_an_absent_device_names_the_platforms_jax_sees(absent_devices, device):
    status, out, err, run = absent_devices[device]
    platform, name = ABSENT[device]
    assert status == 2 and out == ""
    assert err == (f"error: --device {device}: jax sees no {platform} device here, only cpu: pass --device "
                   f"cpu, or install jax for {name} (docs/devices.md)\n")
    assert not run.exists()


@pytest.mark.parametrize("argv, message", [
    (["--max-steps", "-2"], "max_steps must be positive, or -1 to train until stopped, got -2: pass a value above 0"),
    (["--max-steps", "0"], "max_steps must be positive, or -1 to train until stopped, got 0"),
    (["--sample-every", "-1"], "sample_every must not be negative, got -1: pass 0 or more"),
    (["--device", "cuda:x"], "argument --device: unknown device 'cuda:x': choose cpu, cuda, cuda:N, gpu, mps or tpu"),
    (["--max-steps", "-1", "--config", "{d}/cosine.py"], "the warmup_cosine schedule decays over max_steps, so"),
])
def test_flag_refusals(tmp_path, capsys, argv, message):
    (tmp_path / "w.txt").write_text("ab\ncd\n")
    (tmp_path / "cosine.py").write_text("from mmjax.config import get_config as g\n"
                                        "def get_config():\n    return g('bigram', lr_schedule='warmup_cosine')\n")
    argv = [a.format(d=tmp_path) for a in argv]
    assert message in fails(capsys, ["-i", tmp_path / "w.txt", "-o", tmp_path / "run", *TINY, *argv])
    assert not (tmp_path / "run").exists()


def train_in_process(words, run, *argv):
    cli.train_command(["-i", str(words), "-o", str(run), *TINY, "--max-steps", "60", "--log-every", "10",
                       "--eval-every", "30", *argv])
    return inference.load(run, which="latest").state


def test_samples_while_training_at_the_end_of_each_dispatch_that_passes_a_multiple(tmp_path, capsys):
    words = tmp_path / "w.txt"
    words.write_text("".join(f"{a}{b}{c}\n" for a in "abc" for b in "abcd" for c in "ab"))
    before = compiled_count(sampling.sample_chunk)
    sampled = train_in_process(words, tmp_path / "sampled", "--sample-every", "15")  # shapes no other test has
    lines = [l for l in capsys.readouterr().out.splitlines() if "samples:" in l]
    assert compiled_count(sampling.sample_chunk) == before + 1  # compiled once for four lines
    # sample.py after training (-n up to 64): the program that printed the lines, nothing compiled
    cli.sample_command(["-o", str(tmp_path / "sampled"), "-n", "10"])
    assert compiled_count(sampling.sample_chunk) == before + 1 and capsys.readouterr().out.count("\n") > 10
    # dispatches end at 10, 20, ...: 15 is passed at 20, 30 at 30, 45 at 50, 60 at 60
    assert [l.split(" | ")[0] for l in lines] == ["step 20", "step 30", "step 50", "step 60"]
    vocab = set("abcd")
    for line in lines:
        samples = line.split("samples: ")[1].split(", ")
        assert len(samples) == 10 and all(set(s) <= vocab for s in samples)
    plain = train_in_process(words, tmp_path / "plain", "--sample-every", "0")
    assert "samples:" not in capsys.readouterr().out
    for a, b in zip(jax.tree.leaves((sampled.params, sampled.opt_state, sampled.rng)),
                    jax.tree.leaves((plain.params, plain.opt_state, plain.rng))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # sampling draws on a key of its own
    metrics = [(tmp_path / r / "metrics.jsonl").read_text() for r in ("sampled", "plain")]
    assert metrics[0] == metrics[1] and json.loads(metrics[0].splitlines()[-1])["step"] == 60
