"""A work dir's orbax checkpoints: checkpoints/latest, the newest evaluated state, and for one model
checkpoints/best, the state of the lowest score (a population's latest holds each member's best instead).
Orbax writes each checkpoint to a temporary directory and renames it when complete, so a crash never leaves
a partial checkpoint that could be restored; each one also gets the SHA-256 of its files, checked before it
is restored."""

import hashlib
import json
import logging
import time

import jax
import numpy as np
import orbax.checkpoint as ocp

from mmjax.errors import UserError
from mmjax.files import disk_full, write_json

CHECKSUMS = "mmjax-sha256.json"  # in each checkpoint: its files' SHA-256
READ_RETRIES = 20  # a checkpoint read while a run trains can be replaced under the reader: read it again


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


def through_host():
    """Whether checkpoints go through numpy arrays: in a run of one process, orbax saves and restores those in
    half the time of jax.Arrays (the default Transformer's state: an evaluation's save 246 against 561 ms, a
    restore 168 against 304; scripts/bench_checkpoint.py), which the restore then puts on the devices. A run of
    several processes saves and restores jax.Arrays, each process its part."""
    return jax.process_count() == 1


def with_sharding(leaf):
    """The leaf's shape, dtype and sharding to restore into; a bare shape (from `jax.eval_shape`) goes to this
    process's first device, whatever the topology the checkpoint was saved on."""
    struct = ocp.utils.to_shape_dtype_struct(leaf)
    if isinstance(struct, jax.ShapeDtypeStruct) and struct.sharding is None:
        struct = jax.ShapeDtypeStruct(struct.shape, struct.dtype,
                                      sharding=jax.sharding.SingleDeviceSharding(jax.local_devices()[0]))
    return struct


class Checkpoints:
    def __init__(self, workdir_path, read_only=False, training_elsewhere=lambda: False):
        """`training_elsewhere()`: whether another process trains in the work dir (its checkpoints may be
        replaced under a read)."""
        self.workdir_path, self.read_only, self.training_elsewhere = workdir_path, read_only, training_elsewhere
        self._managers = {}

    def _manager(self, which):
        if which not in self._managers:
            best = dict(best_fn=lambda metrics: metrics["score"], best_mode="min") if which == "best" else {}
            # Writing, delete the temporary directories of saves cut short by a crash (never restored anyway).
            access = dict(create=False) if self.read_only else dict(max_to_keep=1, cleanup_tmp_directories=True)
            options = ocp.CheckpointManagerOptions(enable_async_checkpointing=False, **access, **best)
            self._managers[which] = ocp.CheckpointManager(self.workdir_path / "checkpoints" / which, options=options,
                                                          item_handlers=ocp.StandardCheckpointHandler())
        return self._managers[which]

    def save(self, step, latest, best=None, score=None):
        """`best` (with its `score`) to best, then `latest` to latest; without `best`, latest alone. A run
        killed between the two resumes from the previous latest, and when it reaches this step again orbax
        skips the save to best (it saves no step at or before its newest)."""
        if through_host():  # host copies: one when best is latest (no parameter average)
            host = lambda tree: jax.tree.map(np.asarray, tree)
            same, latest = best is latest, host(latest)
            best = latest if same else best if best is None else host(best)
        saves = ([("best", {"score": score}, best)] if best is not None else []) + [("latest", None, latest)]
        for which, metrics, tree in saves:
            directory = self.workdir_path / "checkpoints" / which / str(step)
            try:  # a save cut short stays a temporary directory, never restored
                self._manager(which).save(step, args=ocp.args.StandardSave(tree), metrics=metrics)
                if directory.exists() and jax.process_index() == 0:  # best keeps only the best step
                    write_json(directory / CHECKSUMS, file_digests(directory))
            except Exception as e:  # OSError, or what orbax and tensorstore make of one
                raise disk_full(f"checkpoint {directory}", e, self.workdir_path) from None

    def restore(self, abstract, which="latest"):
        """The saved tree of `abstract`'s structure (its leaves' shapes and dtypes: arrays or
        jax.eval_shape's), from 'latest' or 'best'; None if there is no checkpoint yet."""
        absl = logging.getLogger("absl")  # orbax logs what it tolerates in a damaged checkpoint: one error here
        level = absl.level
        absl.setLevel(logging.CRITICAL)
        try:
            for attempt in range(READ_RETRIES):
                # A run training here replaces its checkpoints under the reader (for a moment its step may
                # be listed nowhere, or its files half gone): read the new one. Then an error is what it says.
                last_try = lambda: attempt + 1 == READ_RETRIES or not self.training_elsewhere()
                try:
                    restored = self._restore(abstract, which)
                except Exception:
                    if last_try():
                        raise
                else:
                    if restored is not None or last_try():
                        return restored
                self._managers.pop(which, None)  # forget the steps it listed
                time.sleep(0.2)
        except UserError:
            raise
        except Exception as e:  # whatever orbax, tensorstore or json raise on a missing or truncated file
            reason = (str(e).splitlines() or [type(e).__name__])[0][:100]
            raise UserError(f"checkpoint {self._restoring} is damaged ({reason}): delete "
                            f"{self.workdir_path / 'checkpoints'} and redo the run with train.py -o "
                            f"{self.workdir_path} --resume") from None
        finally:
            absl.setLevel(level)

    def _restore(self, abstract, which):
        self._restoring = self.workdir_path / "checkpoints" / which  # named by the error if this fails
        manager = self._manager(which)
        step = manager.latest_step() if which == "latest" else manager.best_step()
        if step is None:
            return None
        self._restoring = directory = self.workdir_path / "checkpoints" / which / str(step)
        abstract = jax.tree.map(with_sharding, abstract)
        check_files(directory)
        check_shapes(directory, manager.item_metadata(step).tree, abstract)
        if not through_host():
            return manager.restore(step, args=ocp.args.StandardRestore(abstract))
        host = manager.restore(step, args=ocp.args.StandardRestore(
            jax.tree.map(lambda leaf: np.empty(leaf.shape, leaf.dtype), abstract)))
        return jax.device_put(host, jax.tree.map(lambda leaf: leaf.sharding, abstract))
