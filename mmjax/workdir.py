"""A run's work dir: config.json, dataset.json, metrics.jsonl, TensorBoard events, orbax checkpoints.

checkpoints/latest holds the newest evaluated state, checkpoints/best the one with the lowest test
loss; each is params, optimizer state, step and the batch-sampling PRNG key. Orbax writes each
checkpoint to a temporary directory and renames it when complete, so a crash never leaves a partial
checkpoint that could be restored (the temporary directory is deleted when the run is resumed).
The process that trains holds train.lock (flock), so that a second one is refused; a failed write (a full
disk) is one UserError that names it, and leaves what was written before it restorable.
"""

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import pathlib
import tempfile
import time
import types

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from mmjax.config import base_config, checked, split_seed
from mmjax.errors import UserError
from mmjax.input_pipeline import Dataset, Vocab, read_words, torch_randperm


CHECKSUMS = "mmjax-sha256.json"  # in each checkpoint: its files' SHA-256
LOCK = "train.lock"  # flock-ed by the process that trains in the work dir
HELD_LOCKS = {}  # work dir path -> the open lock file of this process (flock conflicts between open files)
READ_RETRIES = 20  # a checkpoint read while a run trains can be replaced under the reader: read it again
WORDS = "words.sha256"  # the SHA-256 of the run's words, to recognise them in a file given again with -i


def file_digests(directory):
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and not p.name.startswith(CHECKSUMS)}


def check_files(directory):
    """Raises ValueError if a file of the checkpoint changed since it was saved."""
    digests, checksums = file_digests(directory), directory / CHECKSUMS
    # none if killed between orbax's rename and their writing: nothing to check then
    saved_digests = json.loads(checksums.read_text(encoding="utf-8")) if checksums.exists() else digests
    changed = sorted(f for f in saved_digests.keys() | digests.keys() if saved_digests.get(f) != digests.get(f))
    if changed:
        raise ValueError(f"{changed[0]} changed since it was saved")


def check_shapes(directory, saved_tree, wanted_tree):
    """Raises UserError if the checkpoint's arrays (`saved_tree`, its metadata) are not the shapes that the
    work dir's config and data make."""
    saved, wanted = ocp.tree.to_flat_dict(saved_tree), ocp.tree.to_flat_dict(wanted_tree)
    shape = lambda flat, key: tuple(getattr(flat[key], "shape", ())) if key in flat else "absent"
    misfit = [key for key in sorted(saved.keys() | wanted.keys()) if shape(saved, key) != shape(wanted, key)]
    if misfit:
        key = misfit[0]
        raise UserError(f"checkpoint {directory} does not fit config.json and dataset.json ({'/'.join(key)} is "
                        f"{shape(saved, key)}, they make it {shape(wanted, key)}): the files were changed or "
                        "written by another version; restore them or train again with another -o")


def words_digest(words):
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


def first_difference(words, run_words, lines):
    """How a file's words differ from the run's: the counts, then the first line whose word is not the run's.
    `lines`: the file's lines, stripped (words[k] is the first of them equal to it that words[:k] did not take)."""
    k = next((i for i, (a, b) in enumerate(zip(words, run_words)) if a != b), min(len(words), len(run_words)))
    counts = f"{len(words)} words, the run has {len(run_words)}"
    if k == len(words):
        return f"{counts}; the file ends where the run goes on with {run_words[k]!r}"
    earlier = words[:k].count(words[k])  # 0 if deduplicated: words[k] is then the first line with its text
    line = [n for n, text in enumerate(lines, 1) if text == words[k]][earlier]
    if k == len(run_words):
        return f"{counts}; line {line}, {words[k]!r}, is past the run's last word"
    return f"{counts}; line {line} is {words[k]!r} where the run has {run_words[k]!r}"


def with_sharding(leaf):
    """The leaf's shape, dtype and sharding to restore into; a bare shape (from `jax.eval_shape`) goes to this
    process's first device, whatever the topology the checkpoint was saved on."""
    struct = ocp.utils.to_shape_dtype_struct(leaf)
    if isinstance(struct, jax.ShapeDtypeStruct) and struct.sharding is None:
        struct = jax.ShapeDtypeStruct(struct.shape, struct.dtype,
                                      sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    return struct


def write_atomically(path, text):
    """The whole text or, if writing fails (a full disk), the file as it was."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, obj):
    write_atomically(path, json.dumps(obj, indent=1, ensure_ascii=False))


class WorkDir:
    def __init__(self, path, read_only=False):
        """`read_only`: only load from it (sampling), never create or clean anything."""
        self.path = pathlib.Path(path).resolve()
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"work dir {path} is a file: pass -o with a directory")
        self.read_only = read_only
        self._managers = {}

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
            write_json(self.path / "dataset.json", {
                "chars": "".join(dataset.vocab.chars), "max_word_length": dataset.vocab.max_word_length,
                "train_words": dataset.train_words, "test_words": dataset.test_words, "val_words": dataset.val_words})
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
        """The run's words in their file order, from dataset.json: the train, validation and test words are
        the words permuted by makemore's seeded permutation, which is undone here."""
        dataset = self.load_dataset()
        permuted = dataset.train_words + dataset.val_words + dataset.test_words
        words = [None] * len(permuted)
        for i, j in enumerate(torch_randperm(len(permuted), split_seed(self.load_config()))):
            words[j] = permuted[i]
        return words

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

    def _disk_full(self, what, e):
        """A write that failed (a full disk, a quota): what is kept, and how to go on."""
        reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0][:100]
        return UserError(f"cannot write {what} ({reason}), so training stopped (the checkpoints and metrics "
                         f"before it are kept): free space on the disk, then train.py -o {self.path} --resume")

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
        d = self._read_json("dataset.json")
        # a work dir written before the validation set existed has none
        return Dataset(Vocab(tuple(d["chars"]), d["max_word_length"]), d["train_words"], d["test_words"],
                       d.get("val_words", []))

    def _manager(self, which):
        if which not in self._managers:
            best = dict(best_fn=lambda metrics: metrics["score"], best_mode="min") if which == "best" else {}
            # Writing, delete the temporary directories of saves cut short by a crash (never restored anyway).
            access = dict(create=False) if self.read_only else dict(max_to_keep=1, cleanup_tmp_directories=True)
            options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False, **access, **best)
            self._managers[which] = ocp.CheckpointManager(self.path / "checkpoints" / which, options=options,
                                                          item_handlers=ocp.StandardCheckpointHandler())
        return self._managers[which]

    def save(self, state, score, best=None):
        """`best` (default: `state`, the same step) to best, then `state` to latest. A run killed between the
        two resumes from the previous latest, and when it reaches this step again orbax skips the save to
        best (it saves no step at or before its newest). Each checkpoint gets the SHA-256 of its files,
        checked before it is restored."""
        step = int(state.step)
        for which, metrics, saved in (("best", {"score": score}, state if best is None else best),
                                      ("latest", None, state)):
            manager = self._manager(which)
            directory = self.path / "checkpoints" / which / str(step)
            try:  # a save cut short stays a temporary directory, never restored
                manager.save(step, args=ocp.args.StandardSave(saved), metrics=metrics)
                if directory.exists() and jax.process_index() == 0:  # best keeps only the best step
                    write_json(directory / CHECKSUMS, file_digests(directory))
            except Exception as e:  # OSError, or what orbax and tensorstore make of one
                raise self._disk_full(f"checkpoint {directory}", e) from None

    def save_population(self, tree, step):
        """A population's checkpoint in checkpoints/latest: `tree` holds the stacked state and each member's
        best parameters, step and score, so one atomic save keeps them consistent."""
        self._manager("latest").save(step, args=ocp.args.StandardSave(tree))
        if jax.process_index() == 0:
            directory = self.path / "checkpoints" / "latest" / str(step)
            write_json(directory / CHECKSUMS, file_digests(directory))

    def restore(self, initial_state, which="latest"):
        """The saved state of the same structure as `initial_state`: 'latest' (`initial_state` itself if the
        run stopped before its first checkpoint, so that resuming starts it over), or 'best'."""
        absl = logging.getLogger("absl")  # orbax logs what it tolerates in a damaged checkpoint: one error here
        level = absl.level
        absl.setLevel(logging.CRITICAL)
        try:
            for attempt in range(READ_RETRIES):
                try:
                    return self._restore(initial_state, which)
                except Exception:
                    # A run training here replaces its checkpoints under the reader (for a moment its best
                    # step may be listed nowhere): read the new one. Then a UserError is what it says.
                    if attempt + 1 == READ_RETRIES or not self.training_elsewhere():
                        raise
                    self._managers.pop(which, None)  # forget the steps it listed
                    time.sleep(0.2)
        except UserError:
            raise
        except Exception as e:  # whatever orbax, tensorstore or json raise on a missing or truncated file
            reason = (str(e).splitlines() or [type(e).__name__])[0][:100]
            raise UserError(f"checkpoint {self._restoring} is damaged ({reason}): delete {self.path / 'checkpoints'} "
                            f"and redo the run with train.py -o {self.path} --resume") from None
        finally:
            absl.setLevel(level)

    def _restore(self, initial_state, which):
        self._restoring = self.path / "checkpoints" / which  # named by the error if this fails
        manager = self._manager(which)
        step = manager.latest_step() if which == "latest" else manager.best_step()
        if step is None:
            if which == "latest":
                return initial_state
            raise UserError(f"{self.path} has no checkpoint yet (the run stopped before its first evaluation): "
                            f"train.py -o {self.path} --resume")
        self._restoring = directory = self.path / "checkpoints" / which / str(step)
        abstract = jax.tree.map(with_sharding, initial_state)
        check_files(directory)
        check_shapes(directory, manager.item_metadata(step).tree, abstract)
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def metrics(self):
        """metrics.jsonl's lines as dicts ([] before the first is written)."""
        path = self.path / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []

    def drop_metrics_after(self, step):
        """Forget metrics logged after `step` (by a run that died before its next checkpoint), and a last
        line cut short by a kill (it has no newline)."""
        path = self.path / "metrics.jsonl"
        if path.exists() and jax.process_index() == 0:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            kept = [l for l in lines if l.endswith("\n") and json.loads(l)["step"] <= step]
            try:  # a kill or a full disk leaves the old file whole
                write_atomically(path, "".join(kept))
            except OSError as e:
                raise self._disk_full(path, e) from None

    @contextlib.contextmanager
    def logger(self):
        """Appends metrics to metrics.jsonl; evaluation losses also go to TensorBoard as makemore's. Both are
        written through at once (a failed write is an error here, not in a writer thread). With several
        processes, only process 0 writes."""
        from tensorboardX.event_file_writer import EventsWriter
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        if jax.process_index() != 0:
            yield types.SimpleNamespace(write=lambda metrics: None)
            return
        path = self.path / "metrics.jsonl"
        try:  # unbuffered: nothing of a failed write is left to write again at close
            jsonl, events = open(path, "ab", buffering=0), EventsWriter(str(self.path / "events"))
        except OSError as e:
            raise self._disk_full(path, e) from None

        def write(metrics):
            try:
                jsonl.write((json.dumps(metrics) + "\n").encode())
            except OSError as e:
                raise self._disk_full(path, e) from None
            prefix = f"member_{metrics['member']}/" if "member" in metrics else ""  # a population's member
            scalars = [(prefix + tag, metrics[name]) for name, tag in (
                ("train_loss", "Loss/train"), ("val_loss", "Loss/val"), ("test_loss", "Loss/test"),
                ("ensemble_test_loss", "ensemble/Loss/test"))
                if name in metrics]
            try:
                for tag, value in scalars:
                    events.write_event(Event(wall_time=time.time(), step=metrics["step"], summary=scalar(tag, value)))
                if scalars:
                    events.flush()
            except OSError as e:
                raise self._disk_full(f"TensorBoard events in {self.path}", e) from None

        try:
            yield types.SimpleNamespace(write=write)
        finally:
            jsonl.close()
            with contextlib.suppress(OSError):  # every event was flushed already, or reported
                events.close()
