"""A run's work dir: config.json, dataset.json, metrics.jsonl, TensorBoard events, orbax checkpoints.

checkpoints/latest holds the newest evaluated state, checkpoints/best the one with the lowest test
loss; each is params, optimizer state, step and the batch-sampling PRNG key. Orbax writes each
checkpoint to a temporary directory and renames it when complete, so a crash never leaves a partial
checkpoint that could be restored (the temporary directory is deleted when the run is resumed).
"""

import contextlib
import hashlib
import json
import logging
import os
import pathlib
import tempfile
import types

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from mmjax.config import base_config, checked
from mmjax.errors import UserError
from mmjax.input_pipeline import Dataset, Vocab


CHECKSUMS = "mmjax-sha256.json"  # in each checkpoint: its files' SHA-256


def file_digests(directory):
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file() and p.name != CHECKSUMS}


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


def write_json(path, obj):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


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
            write_json(self.path / "dataset.json", {
                "chars": "".join(dataset.vocab.chars), "max_word_length": dataset.vocab.max_word_length,
                "train_words": dataset.train_words, "test_words": dataset.test_words})
            write_json(self.path / "config.json", json.loads(config.to_json()))
        except OSError as e:
            raise self._unwritable(e) from None

    def check_writable(self):
        """Refuses, before anything is written, a work dir that cannot be written to (to resume it)."""
        try:
            tempfile.TemporaryFile(dir=self.path).close()
        except OSError as e:
            raise self._unwritable(e) from None

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
        return Dataset(Vocab(tuple(d["chars"]), d["max_word_length"]), d["train_words"], d["test_words"])

    def _manager(self, which):
        if which not in self._managers:
            best = dict(best_fn=lambda metrics: metrics["score"], best_mode="min") if which == "best" else {}
            # Writing, delete the temporary directories of saves cut short by a crash (never restored anyway).
            access = dict(create=False) if self.read_only else dict(max_to_keep=1, cleanup_tmp_directories=True)
            options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False, **access, **best)
            self._managers[which] = ocp.CheckpointManager(self.path / "checkpoints" / which, options=options,
                                                          item_handlers=ocp.StandardCheckpointHandler())
        return self._managers[which]

    def save(self, state, score):
        """Best, then latest. A run killed between the two resumes from the previous latest, and when it
        reaches this step again orbax skips the save to best (it saves no step at or before its newest).
        Each checkpoint gets the SHA-256 of its files, checked before it is restored."""
        step = int(state.step)
        for which, metrics in (("best", {"score": score}), ("latest", None)):
            manager = self._manager(which)
            manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics)
            directory = self.path / "checkpoints" / which / str(step)
            if directory.exists() and jax.process_index() == 0:  # best keeps only the best step
                write_json(directory / CHECKSUMS, file_digests(directory))

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
        directory = self.path / "checkpoints" / which
        absl = logging.getLogger("absl")  # orbax logs what it tolerates in a damaged checkpoint: one error here
        level = absl.level
        absl.setLevel(logging.CRITICAL)
        try:
            manager = self._manager(which)
            step = manager.latest_step() if which == "latest" else manager.best_step()
            if step is None:
                if which == "latest":
                    return initial_state
                raise UserError(f"{self.path} has no checkpoint yet (the run stopped before its first evaluation): "
                                f"train.py -o {self.path} --resume")
            directory = directory / str(step)
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, initial_state)
            check_files(directory)
            check_shapes(directory, manager.item_metadata(step).tree, abstract)
            return manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except UserError:
            raise
        except Exception as e:  # whatever orbax, tensorstore or json raise on a missing or truncated file
            reason = (str(e).splitlines() or [type(e).__name__])[0][:100]
            raise UserError(f"checkpoint {directory} is damaged ({reason}): delete {self.path / 'checkpoints'} and "
                            f"redo the run with train.py -o {self.path} --resume") from None
        finally:
            absl.setLevel(level)

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
            path.write_text("".join(kept), encoding="utf-8")

    @contextlib.contextmanager
    def logger(self):
        """Appends metrics to metrics.jsonl; evaluation losses also go to TensorBoard as makemore's.
        With several processes, only process 0 writes."""
        from tensorboardX import SummaryWriter

        if jax.process_index() != 0:
            yield types.SimpleNamespace(write=lambda metrics: None)
            return
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as jsonl, \
                SummaryWriter(str(self.path)) as tensorboard:

            class Logger:
                def write(self, metrics):
                    jsonl.write(json.dumps(metrics) + "\n")
                    jsonl.flush()
                    prefix = f"member_{metrics['member']}/" if "member" in metrics else ""  # a population's
                    for name, tag in (("train_loss", "Loss/train"), ("test_loss", "Loss/test"),
                                      ("ensemble_test_loss", "ensemble/Loss/test")):
                        if name in metrics:
                            tensorboard.add_scalar(prefix + tag, metrics[name], metrics["step"])

            yield Logger()
