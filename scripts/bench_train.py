"""Training speed: median ms/step of mmjax and of PyTorch (mmjax/torch_models.py with
torch.optim.AdamW, eager, and torch.compile for the transformer) at makemore's defaults, batch 32,
on names.txt, in the same run, alternating rounds so both sides see the same machine.

    python scripts/bench_train.py [--types transformer,gru] [--rounds 5] [--steps 200] [--compute-dtypes float32,tf32]
        [--no-torch] [--quick] [--json out.json]

mmjax runs its compiled `train_steps` (K steps per dispatch, state donated). PyTorch runs makemore's
loop (next batch, forward, backward, step) twice: with makemore.py's DataLoader (CharDataset encoding
each word in Python, 4 workers), the workload reference.md timed, and on pre-encoded tensors, a
stricter baseline. `--quick` is a smoke run for CI (tiny models, 10 steps). `--compute-dtypes` also times
mmjax at the other compute dtypes (mmjax_tf32_ms, ...; mmjax/precision.py); `--no-torch` times mmjax alone
(scripts/device_check.sh on a GPU). Each mmjax timer's first dispatch, its compilation, is mmjax*_compile_s.
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mmjax import input_pipeline, trainees  # noqa: E402
from mmjax.steps import train_steps  # noqa: E402
from mmjax.state import create_train_state  # noqa: E402
from mmjax.config import get_config  # noqa: E402

TYPES = ("bigram", "mlp", "rnn", "gru", "bow", "transformer")
# the project's goals: mmjax's ms/step over makemore.py's (eager) in the same run
GOALS = {"bigram": 1 / 4, "mlp": 1 / 4, "rnn": 1 / 4, "gru": 1 / 5, "bow": 1 / 4, "transformer": 1 / 3}


def names_dataset(input_file):
    """names.txt under makemore's split (seed 3407); a missing file is the usual one-line error."""
    path = pathlib.Path(input_file)
    if not path.exists():
        print(f"error: {path} does not exist: pass -i with makemore's names.txt", file=sys.stderr)
        sys.exit(2)
    return input_pipeline.Dataset.from_words(input_pipeline.read_words(path), seed=3407)


def mmjax_timer(model_type, dataset, steps, sizes, one_device=False, dropout=None):
    """A function that runs `steps` compiled train steps and returns ms/step; on every device as train.py
    runs (data parallel), or `one_device`: on the first alone; with `dropout`, at that rate. `sizes`: config
    fields (compute_dtype too). Its `compile_s`: the seconds of the first dispatch, which compiles."""
    config = get_config(model_type, **sizes)
    state = create_train_state(config, dataset.vocab, jax.random.PRNGKey(config.seed))
    words = dataset.vocab.encode_words(dataset.train_words)
    if one_device:
        (state, (x_nt, y_nt)), batch_sharding = jax.device_put((state, words), jax.devices()[0]), None
    else:
        replicated, batch_sharding = trainees.data_parallel(config.batch_size)
        state, (x_nt, y_nt) = jax.device_put(jax.device_get((state, words)), replicated)
    rate = None if dropout is None else jax.numpy.float32(dropout)

    def run():
        nonlocal state
        start = time.perf_counter()
        state, losses = train_steps(state, x_nt, y_nt, rate, num_steps=steps, batch_size=config.batch_size,
                                    compute_dtype=config.compute_dtype, batch_sharding=batch_sharding)
        losses.block_until_ready()
        return (time.perf_counter() - start) * 1000 / steps

    run.compile_s = run() * steps / 1000  # the first dispatch compiles
    return run


def torch_timer(model_type, dataset, steps, loader, sizes, workers=4, compile_backend=None):
    import torch

    from mmjax import torch_models

    torch.manual_seed(0)
    model = torch_models.create(model_type, dataset.vocab.size, dataset.vocab.block_size, **sizes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    batches = torch_models.batches(dataset, loader, workers)

    def step(x_bt, y_bt):
        _, loss = model(x_bt, y_bt)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    if compile_backend:
        step = torch.compile(step, backend=compile_backend)

    def run():
        start = time.perf_counter()
        for _ in range(steps):
            step(*next(batches))
        return (time.perf_counter() - start) * 1000 / steps

    run()  # warm up (and compile)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--input-file", default=str(ROOT.parent / "shared" / "data" / "names.txt"))
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--rounds", type=int, default=5, help="alternating timing rounds; medians are reported")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: few steps, one round, tiny models, no DataLoader workers, torch.compile "
                             "through dynamo's eager backend (inductor's first build of the kernels takes 40 s)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    parser.add_argument("--dropout", type=float,
                        help="also time mmjax at this dropout rate (mmjax_dropout_ms, and its cost over none)")
    parser.add_argument("--steps", type=int, default=200, help="steps per timed dispatch (--quick: 10)")
    parser.add_argument("--compute-dtypes", default="float32",
                        help="mmjax at each of these (comma-separated): the first is mmjax_ms, others mmjax_DTYPE_ms")
    parser.add_argument("--no-torch", action="store_true", help="time mmjax alone")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    dataset = names_dataset(args.input_file)
    steps, rounds = (10, 1) if args.quick else (args.steps, args.rounds)
    sizes = dict(n_layer=1, n_head=2, n_embd=16, n_embd2=16) if args.quick else {}
    dtypes = args.compute_dtypes.split(",")
    have_torch = False
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(2)
            have_torch = True
        except ImportError:
            print("torch is not installed: mmjax alone (pip install torch==2.13.0 for the comparison)")
    rows = []
    for model_type in args.types.split(","):
        timers = {"mmjax" if i == 0 else f"mmjax_{dtype}": mmjax_timer(model_type, dataset, steps,
                                                                       {**sizes, "compute_dtype": dtype})
                  for i, dtype in enumerate(dtypes)}
        if args.dropout is not None:
            timers["mmjax_dropout"] = mmjax_timer(model_type, dataset, steps, sizes, dropout=args.dropout)
        if have_torch:
            workers = 0 if args.quick else 4  # --quick: no worker processes (each one spawned imports jax again)
            for loader in ("makemore", "tensors"):
                timers[f"torch_{loader}"] = torch_timer(model_type, dataset, steps, loader, sizes, workers)
            if model_type == "transformer" and not args.no_compile:
                timers["torch_compile"] = torch_timer(model_type, dataset, steps, "makemore", sizes, workers,
                                                      compile_backend="eager" if args.quick else "inductor")
        times = {name: [] for name in timers}
        for _ in range(rounds):
            for name, run in timers.items():
                times[name].append(run())
        row = {"type": model_type, "device": str(jax.devices()[0]), "devices": jax.device_count(),
               "steps_per_dispatch": steps, "compute_dtype": dtypes[0],
               **{f"{name}_ms": statistics.median(t) for name, t in times.items()},
               **{f"{name}_compile_s": run.compile_s for name, run in timers.items() if name.startswith("mmjax")}}
        for name in timers:
            if name.startswith("torch"):
                row[f"ratio_vs_{name}"] = row["mmjax_ms"] / row[f"{name}_ms"]
        if args.dropout is not None:
            row["dropout"], row["dropout_cost"] = args.dropout, row["mmjax_dropout_ms"] / row["mmjax_ms"] - 1
            print(f"{model_type}: dropout {args.dropout:g} costs {100 * row['dropout_cost']:+.1f}% per step "
                  f"({row['mmjax_dropout_ms']:.3f} against {row['mmjax_ms']:.3f} ms)")
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.json:  # after each type: a run stopped from outside keeps the rows it made
            pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    print("\n| model | mmjax ms/step | makemore loop, eager | ratio (goal) | makemore loop, torch.compile | ratio "
          "| pre-encoded tensors, eager | ratio |\n|---|---|---|---|---|---|---|---|")
    fmt = lambda row, key: f"{row[key]:.2f}" if key in row else "–"
    for r in rows:
        ratio = fmt(r, "ratio_vs_torch_makemore")
        if "ratio_vs_torch_makemore" in r:
            ratio += f" (≤ {GOALS[r['type']]:.2f} {'✓' if r['ratio_vs_torch_makemore'] <= GOALS[r['type']] else '✗'})"
        print(f"| {r['type']} | {r['mmjax_ms']:.3f} | {fmt(r, 'torch_makemore_ms')} | {ratio} | "
              f"{fmt(r, 'torch_compile_ms')} | {fmt(r, 'ratio_vs_torch_compile')} | {fmt(r, 'torch_tensors_ms')} | "
              f"{fmt(r, 'ratio_vs_torch_tensors')} |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
