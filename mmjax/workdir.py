"""A run's work dir: config.json, dataset.json, metrics.jsonl, TensorBoard events, orbax checkpoints.

checkpoints/latest holds the newest evaluated state, checkpoints/best the one with the lowest test
loss; each is params, optimizer state, step and the batch-sampling PRNG key. Orbax writes each
checkpoint to a temporary directory and renames it when complete, so a crash never leaves a partial
checkpoint that could be restored.
"""

import contextlib
import json
import os
import pathlib

import jax
import orbax.checkpoint as ocp

from mmjax.config import base_config
from mmjax.errors import UserError
from mmjax.input_pipeline import Dataset, Vocab


def write_json(path, obj):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


class WorkDir:
    def __init__(self, path):
        self.path = pathlib.Path(path).resolve()
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"work dir {path} is a file: pass -o with a directory")
        self._managers = {}

    @property
    def has_run(self):
        return (self.path / "config.json").exists()

    def create(self, config, dataset):
        """Record the config and data of a new run; refuses to overwrite another run."""
        if self.has_run:
            raise UserError(f"{self.path} already holds a run: pass --resume to continue it, or another -o")
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.path / "config.json", json.loads(config.to_json()))
        except OSError as e:
            raise UserError(f"cannot write to work dir {self.path} ({e.strerror}): pass -o with a writable directory")
        write_json(self.path / "dataset.json", {
            "chars": "".join(dataset.vocab.chars), "max_word_length": dataset.vocab.max_word_length,
            "train_words": dataset.train_words, "test_words": dataset.test_words})

    def load_config(self):
        if not self.has_run:
            raise UserError(f"{self.path} holds no run: train one first with train.py -o {self.path}")
        config = base_config()  # fields added since the run was written take their defaults
        config.update(json.loads((self.path / "config.json").read_text(encoding="utf-8")))
        return config

    def load_dataset(self):
        d = json.loads((self.path / "dataset.json").read_text(encoding="utf-8"))
        return Dataset(Vocab(tuple(d["chars"]), d["max_word_length"]), d["train_words"], d["test_words"])

    def _manager(self, which):
        if which not in self._managers:
            best = dict(best_fn=lambda metrics: metrics["score"], best_mode="min") if which == "best" else {}
            options = ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False, **best)
            self._managers[which] = ocp.CheckpointManager(self.path / "checkpoints" / which, options=options)
        return self._managers[which]

    def save(self, state, score):
        step = int(state.step)
        self._manager("latest").save(step, args=ocp.args.StandardSave(state))
        self._manager("best").save(step, args=ocp.args.StandardSave(state), metrics={"score": score})

    def restore(self, initial_state, which="latest"):
        """The saved state of the same structure as `initial_state` ('latest' or 'best')."""
        manager = self._manager(which)
        step = manager.latest_step() if which == "latest" else manager.best_step()
        if step is None:
            raise UserError(f"{self.path} has no checkpoint yet: train longer than one evaluation (--eval-every)")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, initial_state)
        return manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def drop_metrics_after(self, step):
        """Forget metrics logged after `step` (by a run that died before its next checkpoint)."""
        path = self.path / "metrics.jsonl"
        if path.exists():
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
            path.write_text("".join(l for l in lines if json.loads(l)["step"] <= step), encoding="utf-8")

    @contextlib.contextmanager
    def logger(self):
        """Appends metrics to metrics.jsonl; evaluation losses also go to TensorBoard as makemore's."""
        from tensorboardX import SummaryWriter

        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as jsonl, \
                SummaryWriter(str(self.path)) as tensorboard:

            class Logger:
                def write(self, metrics):
                    jsonl.write(json.dumps(metrics) + "\n")
                    jsonl.flush()
                    for name, tag in (("train_loss", "Loss/train"), ("test_loss", "Loss/test")):
                        if name in metrics:
                            tensorboard.add_scalar(tag, metrics[name], metrics["step"])

            yield Logger()
