"""Bad input: one line on stderr, `error: <problem>: <fix>`, exit status 2, and the work dir untouched."""

import contextlib
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import ROOT, write_words
from helpers import run_command
from mmjax import cli
from mmjax.config import base_config
from mmjax.input_pipeline import Dataset
from mmjax.workdir import WorkDir

SMALL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--no-progress"]
TRAIN = cli.train_main


def tree_digest(path):
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def fails(capsys, argv, sample=False):
    """Runs train.py's (or sample.py's) main as the command does: the exit status and stderr."""
    main, parser = (cli.sample_main, cli.sample_parser()) if sample else (TRAIN, cli.train_parser())
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit:
        cli.run(main, parser, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert exit.value.code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    return err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A trained run and input files of every kind."""
    d = tmp_path_factory.mktemp("bad")
    words = write_words(d / "words.txt")
    TRAIN(cli.train_parser().parse_args(["-i", str(words), "-o", str(d / "run"), *SMALL, "--max-steps", "20",
                                         "--eval-every", "20", "--log-every", "10"]))  # the other files' dispatch
    (d / "empty.txt").write_text("")
    (d / "blank.txt").write_text("\n  \n\t\n")
    (d / "latin1.txt").write_bytes("ana\nj\u00f6rg\n".encode("latin-1"))
    (d / "long.txt").write_text("ab\nabc\nabcdefg\nabcdef\n")
    (d / "file").write_text("")
    return d


@pytest.mark.parametrize("argv, message", [
    (["-o", "{run}"], "already holds a run: pass --resume to continue it, or another -o"),
    (["-o", "{run}", "--resume", "--n-layer", "2"], "holds a n_layer=1 run, not n_layer=2: drop the flag"),
    (["-o", "{run}", "--resume", "--type", "gru"], "holds a type=transformer run, not type=gru: drop the flag"),
    (["-o", "{run}", "--sample-only", "--n-embd", "32"], "holds a n_embd=16 run, not n_embd=32"),
    (["-o", "{run}", "--resume", "-i", "{d}/long.txt"], "long.txt does not hold the run's words (4 words, the run has "
     "300; line 1 is 'ab' where the run has "),
    (["-o", "{new}", "--resume"], "holds no run: train one first"),
    (["-i", "{d}/missing.txt"], "missing.txt does not exist: check the -i path"),
    (["-i", "{d}"], "is a directory: pass -i with a text file, one item per line"),
    (["-i", "{d}/empty.txt"], "empty.txt is empty: give a file with one item per line"),
    (["-i", "{d}/blank.txt"], "blank.txt has only blank lines: give a file with one item per line"),
    (["-i", "{d}/latin1.txt"], "latin1.txt is not valid utf-8 (byte 5): pass --encoding, e.g. --encoding latin-1"),
    (["-i", "{d}/words.txt", "--encoding", "nope"], "unknown encoding 'nope': pass --encoding with a Python codec"),
    (["-i", "{d}/long.txt", "--max-word-length", "5"],
     "long.txt has 2 lines longer than --max-word-length 5 (the first, line 3, has 7 characters): shorten or drop"),
    (["-i", "{d}/long.txt", "--max-word-length", "0"], "--max-word-length must be positive, got 0"),
    (["-i", "{d}/words.txt", "--n-embd", "30", "--n-head", "4"], "n_embd 30 is not divisible by n_head 4: change one"),
    (["-i", "{d}/words.txt", "-l", "0"], "learning_rate must be positive, got 0.0: pass a value above 0"),
    (["-i", "{d}/words.txt", "-l", "-0.1"], "learning_rate must be positive, got -0.1"),
    (["-i", "{d}/words.txt", "-b", "0"], "batch_size must be positive, got 0"),
    (["-i", "{d}/words.txt", "--max-steps", "0"], "max_steps must be positive, or -1 to train until stopped, got 0: pass a value above 0, or -1"),
    (["-i", "{d}/words.txt", "-b", "-32"], "batch_size must be positive, got -32"),
    (["-i", "{d}/words.txt", "--grad-clip", "-1"], "grad_clip must not be negative, got -1.0: pass 0 or more"),
    (["-i", "{d}/words.txt", "--type", "nope"], "no config for model type 'nope': pass --config FILE or --type with one of: bigram, "),
    (["-i", "{d}/words.txt", "--max-steps", "ten"], "argument --max-steps: invalid int value: 'ten': see "),
    (["-i", "{d}/words.txt", "-o", "{d}/file"], "is a file: pass -o with a directory"),
    (["-i", "{d}/words.txt", "-o", "{d}/file/run"], "(Not a directory): pass -o with a writable directory"),
])
def test_train_refuses(files, capsys, argv, message):
    before = tree_digest(files)
    argv = [a.format(d=files, run=files / "run", new=files / "new") for a in argv]
    err = fails(capsys, [*SMALL, *argv] + ([] if "-o" in argv else ["-o", files / "new"]))
    assert message in err
    assert tree_digest(files) == before and not (files / "new").exists()


@contextlib.contextmanager
def copy_of_run(files):
    """A copy of the trained run, in a directory any user may enter."""
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o755)
        shutil.copytree(files / "run", f"{d}/run")
        yield WorkDir(f"{d}/run").path


def edit_json(path, **changes):
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def truncate(path):
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


@pytest.mark.parametrize("damage, message", [
    (lambda run: truncate(run / "checkpoints/best/20/default/_METADATA"),
     "best/20 is damaged (default/_METADATA changed since it was saved): delete {run}/checkpoints and redo the run "
     "with train.py -o {run} --resume"),
    (lambda run: truncate(run / "checkpoints/best/20/default/manifest.ocdbt"), "best/20 is damaged (default/manifest"),
    (lambda run: truncate(max((run / "checkpoints/best/20/default/ocdbt.process_0/d").iterdir(),
                              key=lambda p: p.stat().st_size)), "best/20 is damaged (default/ocdbt.process_0/d/"),
    (lambda run: truncate(run / "checkpoints/best/20/metrics/metrics"), "best is damaged (Expecting"),
    (lambda run: shutil.rmtree(run / "checkpoints/best/20/default"), "best/20 is damaged (default/_METADATA changed"),
    (lambda run: edit_json(run / "config.json", n_embd=32),
     "does not fit config.json and dataset.json (opt_state/0/inner_state/1/0/mu/h_0/attn/c_attn/bias is (48,), they make it (96,))"
     ": the files were changed or written by another version; restore them or train again with another -o"),
    (lambda run: edit_json(run / "dataset.json", chars="abcdefghz"), "does not fit config.json and dataset.json"),
    (lambda run: truncate(run / "dataset.json"), "dataset.json cannot be read ("),
])
def test_sample_refuses_a_damaged_or_mismatched_work_dir(files, capsys, damage, message):
    with copy_of_run(files) as run:
        damage(run)
        before = tree_digest(run)
        assert message.format(run=run) in fails(capsys, ["-o", run], sample=True)
        assert tree_digest(run) == before


def test_the_sample_command_refuses_a_misfit_in_one_line_to_its_exit(files):
    """As a process: nothing follows the line at exit (a restore that orbax began and abandoned would print
    its unfinished reads' tracebacks as the interpreter ends, which the in-process test above cannot see)."""
    with copy_of_run(files) as run:
        edit_json(run / "config.json", n_embd=32)
        status, out, err = run_command("sample.py", "-o", run)
        assert status == 2 and out == "" and err.count("\n") == 1, err
        assert err.startswith(f"error: checkpoint {run}/checkpoints/best/20 does not fit config.json"), err


def test_resume_refuses_a_damaged_latest_checkpoint(files, capsys):
    with copy_of_run(files) as run:
        truncate(run / "checkpoints/latest/20/default/_METADATA")
        before = tree_digest(run)
        assert "latest/20 is damaged" in fails(capsys, ["-o", run, "--resume", "--max-steps", 40])
        assert tree_digest(run) == before


def test_sample_refuses(files, tmp_path, capsys):
    run = files / "run"
    before = tree_digest(run)
    assert "prefix has characters 'xz' that are not in the vocabulary: use only 'abcdefgh'" in fails(
        capsys, ["-o", run, "--prefix", "axz"], sample=True)
    assert "sampling temperature must be 0 (greedy) or more, got -1.0" in fails(capsys, ["-o", run, "--temperature", "-1"], sample=True)
    assert "holds no run: train one first with train.py -o" in fails(capsys, ["-o", tmp_path], sample=True)
    assert f"cannot write --out {tmp_path}/no/such.txt (No such file or directory): pass a writable path" in fails(
        capsys, ["-o", run, "-n", 2, "--out", tmp_path / "no/such.txt"], sample=True)
    assert tree_digest(run) == before
    started = tmp_path / "started"  # killed before its first evaluation: config and data, no checkpoint
    WorkDir(started).create(base_config(), Dataset.from_words(["ab", "ba"], seed=0))
    assert f"{started} has no checkpoint yet (the run stopped before its first evaluation): " \
           f"train.py -o {started} --resume" in fails(capsys, ["-o", started], sample=True)
    assert not (started / "checkpoints").exists()


@contextlib.contextmanager
def as_nobody():
    """File permissions as an ordinary user sees them (root writes everywhere)."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)


def test_an_unwritable_work_dir_is_refused(files, capsys):
    with copy_of_run(files) as run:
        shutil.copy(files / "words.txt", run.parent)
        os.chmod(run, 0o555)
        os.chmod(run.parent, 0o555)
        before = tree_digest(run)
        with as_nobody():
            resumed = fails(capsys, ["-o", run, "--resume", "--max-steps", 40])
            new = fails(capsys, ["-i", run.parent / "words.txt", "-o", run.parent / "new", *SMALL])
        assert tree_digest(run) == before
    assert f"cannot write to work dir {run} (Permission denied): pass -o with a writable directory" in resumed
    assert f"cannot write to work dir {run.parent / 'new'} (Permission denied)" in new


def test_one_word_of_70_characters_trains_with_warnings(tmp_path, capsys):
    """No test set: the best checkpoint is the lowest training loss, here neither the first evaluation's nor
    the last's (a learning rate so high that the loss rises again)."""
    (tmp_path / "one.txt").write_text("ab" * 35 + "\n")
    TRAIN(cli.train_parser().parse_args(["-i", str(tmp_path / "one.txt"), "-o", str(tmp_path / "run"), "--type",
                                         "bigram", "--max-steps", "12", "--eval-every", "2", "--log-every", "2",
                                         "-l", "1", "--no-progress"]))
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "warning: no test set (it takes at least 10 words, the input has 1): training on all of them; "
        "the best checkpoint is the one with the lowest training loss",
        "warning: the longest word has 70 characters and every step computes that many positions: "
        "pass --max-word-length to refuse lines over 64"]
    dataset = WorkDir(tmp_path / "run").load_dataset()
    assert dataset.train_words == ["ab" * 35] and dataset.test_words == []
    evaluations = {m["step"]: m["train_loss"] for m in WorkDir(tmp_path / "run").metrics() if "train_loss" in m}
    assert list(evaluations) == [2, 4, 6, 8, 10, 12] and not any("test_loss" in m for m in WorkDir(tmp_path / "run").metrics())
    lowest = min(evaluations, key=evaluations.get)
    assert lowest not in (2, 12), evaluations
    assert [p.name for p in (tmp_path / "run/checkpoints/best").iterdir()] == [str(lowest)]


def test_the_commands_print_one_line_and_exit_2(files):
    """As processes: no traceback, and no orbax or tensorstore noise around a damaged checkpoint."""
    with copy_of_run(files) as run:
        truncate(run / "checkpoints/best/20/default/ocdbt.process_0/manifest.ocdbt")
        commands = [[ROOT / "train.py", "-i", files / "blank.txt", "-o", files / "new"],
                    [ROOT / "sample.py", "-o", run]]
        processes = [subprocess.Popen([sys.executable, *map(str, argv)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for argv in commands]
        results = [(p.wait(timeout=120), p.stderr.read()) for p in processes]
    assert results[0] == (2, f"error: input file {files / 'blank.txt'} has only blank lines: "
                             "give a file with one item per line\n")
    assert results[1][0] == 2 and results[1][1].count("\n") == 1
    assert results[1][1].startswith(f"error: checkpoint {run}/checkpoints/best/20 is damaged (default/ocdbt.process_0")
