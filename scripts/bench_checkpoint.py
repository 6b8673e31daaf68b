"""Checkpoint cost: the milliseconds of one evaluation's save (best, then latest) and of a restore of a model's
train state, as train.py and sample.py do them, medians of several rounds; and, in the same run, orbax saving
the same state's jax.Arrays and restoring those, as mmjax did before it passed numpy arrays to and from orbax
(checkpoints.through_host), and does in a run of several processes.

    python scripts/bench_checkpoint.py [--type transformer] [--rounds 9] [--json out.json]

The state is the config's at names.txt's vocabulary (27 tokens, block size 16), freshly initialised: its
values do not change what a save costs.
"""

import argparse
import itertools
import json
import pathlib
import sys
import tempfile
from unittest import mock

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import jax  # noqa: E402

from bench_sample import median_time  # noqa: E402  (scripts/ is on the path when a script runs)
from mmjax import checkpoints as checkpoints_module  # noqa: E402
from mmjax.config import get_config  # noqa: E402
from mmjax.input_pipeline import Vocab  # noqa: E402
from mmjax.state import abstract_train_state, create_train_state  # noqa: E402
from mmjax.workdir import WorkDir  # noqa: E402

NAMES_VOCAB = Vocab(tuple("abcdefghijklmnopqrstuvwxyz"), 15)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--type", default="transformer")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    config = get_config(args.type)
    state = create_train_state(config, NAMES_VOCAB, jax.random.PRNGKey(config.seed))
    abstract = abstract_train_state(config, NAMES_VOCAB)  # what sample.py restores into
    ms = lambda fn: 1000 * median_time(fn, args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        runs = pathlib.Path(tmp)

        def saver(checkpoints):
            """One evaluation's save, each at the next step, with a better score (best keeps each one)."""
            steps = itertools.count()
            return lambda: (step := next(steps), checkpoints.save(step, latest=state, best=state, score=1 / (step + 1)))

        save = saver(WorkDir(runs / "run").checkpoints)
        save()  # orbax's first save makes its directories
        save_ms = ms(save)
        restore_ms = ms(lambda: WorkDir(runs / "run", read_only=True).checkpoints.restore(abstract))
        with mock.patch.object(checkpoints_module, "through_host", lambda: False):  # orbax given the jax.Arrays
            jax_save = saver(WorkDir(runs / "jax").checkpoints)
            jax_save()
            jax_arrays_save_ms = ms(jax_save)
            jax_arrays_restore_ms = ms(lambda: WorkDir(runs / "jax", read_only=True).checkpoints.restore(abstract))
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
