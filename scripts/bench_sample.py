"""Names per second of mmjax's compiled sampler against makemore's `generate` (PyTorch, full
recompute each step), in the same run, for the default Transformer (vocab 27, block 16).

    python scripts/bench_sample.py [--work-dir out] [--repeats 5] [--json out.json]

mmjax samples from the work dir's trained Transformer (its names end where they should, so the
loop stops early) or, without one, from fresh weights; PyTorch always runs makemore's 15 steps, as
reference.md measured it. All mmjax runs come first: torch's idle OpenMP threads slow whatever runs
next. Compile time is reported apart; rates are medians of --repeats runs.
"""

import argparse
import json
import pathlib
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from mmjax import sampling, train  # noqa: E402
from mmjax.config import base_config  # noqa: E402
from mmjax.models import create_model  # noqa: E402
from mmjax.workdir import WorkDir  # noqa: E402

V, T = 27, 16


def median_rate(fn, names, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return names / statistics.median(times)


def transformer(work_dir):
    if not work_dir:
        model = create_model(base_config(), V, T)
        return model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32))
    run = WorkDir(work_dir)
    config, dataset = run.load_config(), run.load_dataset()
    state = run.restore(train.create_train_state(config, dataset.vocab, jax.random.PRNGKey(config.seed)), which="best")
    return create_model(config, dataset.vocab.size, dataset.vocab.block_size), {"params": state.params}


def bench_mmjax(model, variables, batch, names, repeats):
    run = lambda seed: sampling.sample(model, variables, seed, names, batch_size=batch)
    start = time.perf_counter()
    run(0)
    compile_s = time.perf_counter() - start
    seeds = iter(range(1, 10 ** 6))
    return median_rate(lambda: run(next(seeds)), names, repeats), compile_s


def bench_torch(batch, names, repeats):
    import torch
    from mmjax.torch_models import Transformer

    model = Transformer(V, T).eval()

    @torch.no_grad()
    def generate(idx, max_new_tokens):  # makemore.py's, sampling with temperature 1
        for _ in range(max_new_tokens):
            logits, _ = model(idx if idx.size(1) <= T else idx[:, -T:])
            probs = torch.softmax(logits[:, -1, :], dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, num_samples=1)), dim=1)
        return idx

    def run():
        for _ in range(names // batch):
            generate(torch.zeros((batch, 1), dtype=torch.long), T - 1)

    run()  # warm up
    return median_rate(run, names, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--work-dir", help="a trained transformer run (default: fresh weights)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    model, variables = transformer(args.work_dir)
    rows = []
    for batch, names in ((1, 50), (1000, 2000)):
        rate, compile_s = bench_mmjax(model, variables, batch, names, args.repeats)
        rows.append({"batch": batch, "names": names, "mmjax_names_per_s": rate, "mmjax_compile_s": compile_s})
    try:
        import torch  # noqa: F401
    except ImportError:
        print("torch is not installed: mmjax alone (pip install torch==2.13.0 for the comparison)")
    else:
        for row in rows:
            row["torch_names_per_s"] = bench_torch(row["batch"], row["names"], args.repeats)
            row["speedup"] = row["mmjax_names_per_s"] / row["torch_names_per_s"]
    print(f"{'batch':>6} {'mmjax names/s':>14} {'compile s':>10} {'torch names/s':>14} {'speedup':>8}")
    for r in rows:
        print(f"{r['batch']:>6} {r['mmjax_names_per_s']:>14.0f} {r['mmjax_compile_s']:>10.2f} "
              f"{r.get('torch_names_per_s', float('nan')):>14.1f} {r.get('speedup', float('nan')):>7.1f}x")
    print(json.dumps(rows))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
