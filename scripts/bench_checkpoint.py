"""Checkpoint cost: the milliseconds of one evaluation's save (best, then latest) and of a restore of a model's
train state, as train.py and sample.py do them, medians of several rounds; and, in the same run, orbax saving
the same state's jax.Arrays (and restoring those), which mmjax did before it handed orbax numpy copies
(checkpoints.host_copies).

    python scripts/bench_checkpoint.py [--type transformer] [--rounds 9] [--json out.json]

The state is the config's at names.txt's vocabulary (27 tokens, block size 16), freshly initialised: its
values do not change what a save costs.
"""

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time
from unittest import mock

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import jax  # noqa: E402

from mmjax import checkpoints as checkpoints_module  # noqa: E402
from mmjax.config import get_config  # noqa: E402
from mmjax.input_pipeline import Vocab  # noqa: E402
from mmjax.state import abstract_train_state, create_train_state  # noqa: E402
from mmjax.workdir import WorkDir  # noqa: E402

NAMES_VOCAB = Vocab(tuple("abcdefghijklmnopqrstuvwxyz"), 15)


def median_ms(run, rounds):
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        run(i + 1)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--type", default="transformer")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    config = get_config(args.type)
    state = create_train_state(config, NAMES_VOCAB, jax.random.PRNGKey(config.seed))
    abstract = abstract_train_state(config, NAMES_VOCAB)  # what sample.py restores into
    with tempfile.TemporaryDirectory() as tmp:
        checkpoints = WorkDir(pathlib.Path(tmp) / "run").checkpoints
        save = lambda step: checkpoints.save(step, latest=state, best=state, score=1.0 / (step + 1))
        save(0)  # orbax's first save makes its directories
        save_ms = median_ms(save, args.rounds)
        restore_ms = median_ms(lambda _: WorkDir(pathlib.Path(tmp) / "run", read_only=True).checkpoints.restore(abstract),
                               args.rounds)
        before = WorkDir(pathlib.Path(tmp) / "jax").checkpoints
        jax_save = lambda step: before.save(step, latest=state, best=state, score=1.0 / (step + 1))
        with mock.patch.object(checkpoints_module, "host_copies", lambda tree: tree):  # orbax given the jax.Arrays
            jax_save(0)
            jax_arrays_save_ms = median_ms(jax_save, args.rounds)
        jax_arrays_restore_ms = median_ms(
            lambda _: WorkDir(pathlib.Path(tmp) / "jax", read_only=True).checkpoints.restore(abstract), args.rounds)
    figures = {"type": args.type, "leaves": len(jax.tree.leaves(state)), "rounds": args.rounds,
               "save_ms": save_ms, "restore_ms": restore_ms, "jax_arrays_save_ms": jax_arrays_save_ms,
               "jax_arrays_restore_ms": jax_arrays_restore_ms}
    print(f"{args.type} ({figures['leaves']} arrays), medians of {args.rounds}: an evaluation's save {save_ms:.0f} ms, "
          f"a restore {restore_ms:.0f} ms; orbax given the jax.Arrays: {jax_arrays_save_ms:.0f} ms, its restore "
          f"{jax_arrays_restore_ms:.0f} ms")
    print(json.dumps(figures))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
