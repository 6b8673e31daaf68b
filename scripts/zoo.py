"""Regenerates the model table of docs/models.md: every model trained on names.txt under makemore's protocol.

    python scripts/zoo.py [-i ../shared/data/names.txt] [--types mlp,gru] [--max-steps N] [--json zoo.json]

Each model trains with its own config (configs/TYPE.py: 10,000 steps for makemore's models, the
lectures' SGD for mlp_bn, 200,000 steps, and wavenet, 30,000) into WORKDIR/TYPE; the table gives its
parameters, the test loss at the end and the best one, and the median ms/step of compiled training
(500-step dispatches after a warm-up, timed apart from the run).
"""

import argparse
import json
import math
import pathlib
import statistics
import sys
import time

import jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mmjax import cli  # noqa: E402
from mmjax.state import create_train_state  # noqa: E402
from mmjax.steps import train_steps  # noqa: E402
from mmjax.models import MODELS, create_model  # noqa: E402
from mmjax.workdir import WorkDir  # noqa: E402


def ms_per_step(config, dataset, steps=500, repeats=3):
    state = create_train_state(config, dataset.vocab, jax.random.PRNGKey(config.seed))
    x_nt, y_nt = map(jax.numpy.asarray, dataset.vocab.encode_words(dataset.train_words))
    run = lambda s: train_steps(s, x_nt, y_nt, num_steps=steps, batch_size=config.batch_size)
    state, losses = run(state)
    losses.block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        state, losses = run(state)
        losses.block_until_ready()
        times.append((time.perf_counter() - start) * 1000 / steps)
    return statistics.median(times)


def zoo_row(model_type, input_file, workdir, max_steps):
    argv = ["-i", input_file, "-o", str(workdir), "--type", model_type, "--no-progress"]
    if max_steps:
        argv += ["--max-steps", str(max_steps)]
    start = time.perf_counter()
    cli.train_main(cli.train_parser().parse_args(argv))
    wall_s = time.perf_counter() - start
    run = WorkDir(workdir)
    config, dataset = run.load_config(), run.load_dataset()
    evals = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines() if "test_loss" in l]
    state = run.checkpoints.restore(create_train_state(config, dataset.vocab, jax.random.PRNGKey(config.seed)))
    row = {"type": model_type, "params": sum(math.prod(x.shape) for x in jax.tree.leaves(state.params)),
           "steps": evals[-1]["step"], "test_loss": evals[-1]["test_loss"],
           "best_test_loss": min(e["test_loss"] for e in evals), "wall_s": wall_s}
    if not hasattr(create_model(config, dataset.vocab.size, dataset.vocab.block_size), "fit"):
        row["ms_per_step"] = ms_per_step(config, dataset)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--input-file", default=str(ROOT.parent / "shared" / "data" / "names.txt"))
    parser.add_argument("-o", "--work-dir", default="zoo_runs", help="one sub-directory per model")
    parser.add_argument("--types", default=",".join(MODELS), help="comma-separated model types")
    parser.add_argument("--max-steps", type=int, help="override every config's step count")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    rows = []
    for model_type in args.types.split(","):
        workdir = pathlib.Path(args.work_dir) / model_type
        if WorkDir(workdir).has_run:
            print(f"error: {workdir} already holds a run: remove it or pass another -o", file=sys.stderr)
            sys.exit(2)
        rows.append(zoo_row(model_type, args.input_file, workdir, args.max_steps))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| model | parameters | steps | test loss | best test loss | ms/step |\n|---|---|---|---|---|---|")
    for r in rows:
        ms = f"{r['ms_per_step']:.2f}" if "ms_per_step" in r else "–"
        print(f"| {r['type']} | {r['params']:,} | {r['steps']:,} | {r['test_loss']:.4f} | "
              f"{r['best_test_loss']:.4f} | {ms} |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
