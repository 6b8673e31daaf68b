"""A run's work dir: its record (config.json, dataset.json: the config and the split words; words.sha256:
the digest of the words as read), its lock (train.lock: flock-ed by the process that trains in it), its
checkpoints (mmjax/checkpoints.py) and its metrics (mmjax/metrics.py)."""

import fcntl
import functools
import json
import os
import pathlib
import tempfile

import jax
from jax.experimental import multihost_utils

from mmjax import metrics
from mmjax.checkpoints import Checkpoints
from mmjax.config import base_config, checked, split_seed
from mmjax.errors import UserError
from mmjax.files import write_atomically, write_json
from mmjax.input_pipeline import Dataset, first_difference, read_words, words_digest

LOCK = "train.lock"  # flock-ed by the process that trains in the work dir
HELD_LOCKS = {}  # work dir path -> the open lock file of this process (flock conflicts between open files)
WORDS = "words.sha256"  # the SHA-256 of the run's words, to recognise them in a file given again with -i


class WorkDir:
    def __init__(self, path, read_only=False):
        """`read_only`: only load from it (sampling), never create or clean anything."""
        self.path = pathlib.Path(path).resolve()
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"work dir {path} is a file: pass -o with a directory")
        self.read_only = read_only

    @functools.cached_property
    def checkpoints(self):
        return Checkpoints(self.path, self.read_only, self.training_elsewhere)

    def metrics(self):
        return metrics.read(self.path)

    @property
    def has_run(self):
        return (self.path / "config.json").exists()

    def create(self, config, dataset):
        """Record the config and data of a new run; refuses to overwrite another run."""
        if self.has_run:
            raise UserError(f"{self.path} already holds a run: pass --resume to continue it, or another -o")
        multihost_utils.sync_global_devices("mmjax: work dir checked")  # by every process before process 0 writes
        if jax.process_index() != 0:
            return
        try:  # config.json last: it marks a complete run
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock()
            write_json(self.path / "dataset.json", dataset.to_json())
            write_json(self.path / "config.json", json.loads(config.to_json()))
        except OSError as e:
            raise self._unwritable(e) from None

    def record_words(self, words):
        """Writes the digest of a new run's words (as read: stripped, no blank lines, in file order)."""
        if jax.process_index() == 0:
            try:
                write_atomically(self.path / WORDS, words_digest(words) + "\n")
            except OSError as e:
                raise self._unwritable(e) from None

    def run_words(self):
        """The run's words in their file order, from dataset.json."""
        return self.load_dataset().words_in_order(split_seed(self.load_config()))

    def check_input(self, path, encoding="utf-8"):
        """Refuses an input file given with --resume or --sample-only that does not hold the run's words
        (compared with the digest recorded at creation, or, for a run without one, with the stored words)."""
        words = read_words(path, encoding, self.load_config().dedupe)
        digest = self.path / WORDS
        if digest.exists() and digest.read_text(encoding="utf-8").strip() == words_digest(words):
            return
        run_words = self.run_words()
        if words != run_words:
            lines = [line.strip() for line in pathlib.Path(path).read_text(encoding=encoding).splitlines()]
            raise UserError(f"{path} does not hold the run's words ({first_difference(words, run_words, lines)}): "
                            f"drop -i, the run in {self.path} trains and samples on its own words; or pass another -o")

    def check_writable(self):
        """Refuses, before anything is written, a work dir that cannot be written to or that another process
        trains (to resume it); then holds it (`lock`)."""
        try:
            tempfile.TemporaryFile(dir=self.path).close()
        except OSError as e:
            raise self._unwritable(e) from None
        self.lock()

    def lock(self):
        """Holds an OS lock (flock) on the work dir until this process ends, so that no other process trains
        in it at the same time; the kernel releases it when the process dies, kill -9 included. With several
        processes (hosts), process 0 holds it for all."""
        if jax.process_index() != 0:
            return
        path, held = self.path / LOCK, HELD_LOCKS.get(self.path)
        if held is not None and path.exists() and os.stat(path).st_ino == os.fstat(held.fileno()).st_ino:
            return  # this process holds it already
        try:
            lock_file = open(path, "a+", encoding="utf-8")
        except OSError as e:
            raise self._unwritable(e) from None
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            holder = lock_file.read().strip() or "?"
            lock_file.close()
            raise UserError(f"{self.path} is in use: another train.py (process {holder}) trains in it; wait for it "
                            "to end, or pass another -o") from None
        lock_file.truncate(0)
        lock_file.write(str(os.getpid()))
        lock_file.flush()
        HELD_LOCKS[self.path] = lock_file

    def training_elsewhere(self):
        """Whether another process holds the work dir's lock (trains in it) now."""
        try:
            with open(self.path / LOCK, encoding="utf-8") as lock_file:
                fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
        except BlockingIOError:
            return HELD_LOCKS.get(self.path) is None
        except OSError:  # no lock file: no run has trained here
            return False

    def _unwritable(self, e):
        return UserError(f"cannot write to work dir {self.path} ({e.strerror}): pass -o with a writable directory")

    def _read_json(self, name):
        try:
            return json.loads((self.path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"{self.path / name} cannot be read ({e}): the work dir is damaged; "
                            "train again with another -o") from None

    def load_config(self):
        if not self.has_run:
            raise UserError(f"{self.path} holds no run: train one first with train.py -o {self.path}")
        config = base_config()  # fields added since the run was written take their defaults
        config.update(self._read_json("config.json"))
        return checked(config, self.path / "config.json")

    def load_dataset(self):
        return Dataset.from_json(self._read_json("dataset.json"))
