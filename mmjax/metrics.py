"""A run's metrics: metrics.jsonl, one JSON object a line, and the evaluation losses as TensorBoard events.

The schema, the same for one model and a population (whose lines name their `member`; an ensemble's
have none):
- after each dispatch: {"step", "loss"}: the training loss of its last step (a population: a line per member);
- at each evaluation: {"step", "train_loss", "test_loss", ["val_loss"]}, per-character NLL of the first
  eval_train_size training words, the test and the validation words; with the lecture diagnostics also
  "layers" and "params" (mmjax/diagnostics.py); a population's member lines also hold its seed and
  hyper-parameters, and one line {"step", "ensemble_train_loss", "ensemble_test_loss", ...} the ensemble's.
Work dirs written before this schema hold a population's training losses as {"step", "losses": [...]}.
"""

import contextlib
import functools
import json
import socket
import struct
import time
import types

import jax

from mmjax.files import disk_full, write_atomically

NAME = "metrics.jsonl"
TENSORBOARD = {"train_loss": "Loss/train", "val_loss": "Loss/val", "test_loss": "Loss/test",
               "ensemble_test_loss": "ensemble/Loss/test"}
# a member's hyper-parameters at each evaluation (population-based training changes them), as hparams/NAME
HYPERPARAMS = ("learning_rate", "weight_decay", "b1", "b2", "grad_clip", "dropout")


def read(workdir_path):
    """metrics.jsonl's lines as dicts ([] before the first is written)."""
    path = workdir_path / NAME
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def drop_after(workdir_path, step):
    """Forget metrics logged after `step` (by a run that died before its next checkpoint), and a last
    line cut short by a kill (it has no newline)."""
    path = workdir_path / NAME
    if path.exists() and jax.process_index() == 0:
        lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        kept = [l for l in lines if l.endswith("\n") and json.loads(l)["step"] <= step]
        try:  # a kill or a full disk leaves the old file whole
            write_atomically(path, "".join(kept))
        except OSError as e:
            raise disk_full(path, e, workdir_path) from None


def crc32c(data):
    """CRC-32C (Castagnoli), as TFRecord files check their records."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


CRC32C_TABLE = [functools.reduce(lambda c, _: (c >> 1) ^ (0x82F63B78 if c & 1 else 0), range(8), n) for n in range(256)]


def tfrecord(data):
    """A TFRecord: the length, its masked CRC, the data, its masked CRC."""
    masked = lambda crc: (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked(crc32c(length))) + data + struct.pack("<I", masked(crc32c(data)))


def event(wall_time, step=0, file_version="", scalars=()):
    """A TensorBoard Event protobuf: wall_time (1: double), step (2: int64), file_version (3: string) and a
    summary (5) of simple values (Summary.value 1: tag 1, simple_value 2: float); defaults are left out, as
    protobuf leaves them. Encoded here: tensorboardX's package imports torch where it is installed (seconds
    at every start)."""
    varint = lambda n: bytes([(n >> 7 * i & 0x7F) | (0x80 if n >> 7 * (i + 1) else 0) for i in range(max(1, (n.bit_length() + 6) // 7))])
    field = lambda number, data: varint(number << 3 | 2) + varint(len(data)) + data  # length-delimited
    values = b"".join(field(1, field(1, tag.encode()) + b"\x15" + struct.pack("<f", value)) for tag, value in scalars)
    return (b"\x09" + struct.pack("<d", wall_time) + (b"\x10" + varint(step) if step else b"")
            + (field(3, file_version.encode()) if file_version else b"") + (field(5, values) if values else b""))


@contextlib.contextmanager
def writer(workdir_path):
    """`.write(metrics)` appends a line to metrics.jsonl and its losses to TensorBoard, makemore's tags (a
    member's under member_I/). Both are written through at once (a failed write is an error here, not in a
    writer thread). With several processes, only process 0 writes."""
    if jax.process_index() != 0:
        yield types.SimpleNamespace(write=lambda metrics: None)
        return
    path = workdir_path / NAME
    events_path = workdir_path / f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
    try:  # unbuffered: nothing of a failed write is left to write again at close
        jsonl, events = open(path, "ab", buffering=0), open(events_path, "ab", buffering=0)
    except OSError as e:
        raise disk_full(path, e, workdir_path) from None
    pending = [tfrecord(event(time.time(), file_version="brain.Event:2"))]  # an event file's first record

    def write(metrics):
        try:
            jsonl.write((json.dumps(metrics) + "\n").encode())
        except OSError as e:
            raise disk_full(path, e, workdir_path) from None
        prefix = f"member_{metrics['member']}/" if "member" in metrics else ""
        scalars = [(prefix + tag, metrics[name]) for name, tag in TENSORBOARD.items() if name in metrics]
        if prefix and any(name in metrics for name in TENSORBOARD):
            scalars += [(f"{prefix}hparams/{name}", metrics[name]) for name in HYPERPARAMS if name in metrics]
        if not scalars:
            return
        try:  # an event a scalar, as tensorboardX writes them; a line's in one write
            events.write(b"".join([*pending, *(tfrecord(event(time.time(), metrics["step"], scalars=[scalar]))
                                              for scalar in scalars)]))
        except OSError as e:
            raise disk_full(f"TensorBoard events in {workdir_path}", e, workdir_path) from None
        pending.clear()

    try:
        yield types.SimpleNamespace(write=write)
    finally:
        jsonl.close()
        with contextlib.suppress(OSError):  # every event was written already, or reported
            events.close()
