"""Names per second of mmjax's compiled sampler against makemore's `generate` (PyTorch, full
recompute each step), in the same run, for the default Transformer (vocab 27, block 16).

    python scripts/bench_sample.py [--work-dir out] [--repeats 5] [--command-repeats 3] [--batches 1000,1]
        [--no-torch] [--json out.json]

Measures: the sampler at batch 1000 (20,000 names: 20 per row, so the rows' refilling shows) and at
batch 1 (500 names), compile time apart, on one CPU device per core as sample.py runs it (the rows split
over them), and at batch 1000 on one device too, in alternating rounds; with --work-dir, end to end,
the marginal rate of `sample.py -n 200000 --out F` over `sample.py -n 2000 --out F` (loading,
decoding, the report and the file included; whole commands, interleaved) and the draws per name of
`sample.py -n 1000 --unique --new`; then PyTorch's `generate` at batch 1000 and 1 (makemore's 15 steps, as
reference.md measured it). mmjax runs first: torch's idle OpenMP threads slow whatever runs next.
Rates are medians of --repeats runs (--command-repeats for the commands). `--batches B,...` measures the
sampler at those batches instead (20 names per row; at batch 1, 500 names); `--no-torch` skips PyTorch
(scripts/device_check.sh on a GPU: batches 1,000 to 100,000).
"""

import argparse
import json
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mmjax import devices, inference, sampling  # noqa: E402
from mmjax.config import base_config  # noqa: E402
from mmjax.models import create_model  # noqa: E402

V, T = 27, 16


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def load_model(work_dir):
    """(model, variables): the work dir's best checkpoint, or a fresh default Transformer."""
    if not work_dir:
        model = create_model(base_config(), V, T)
        return model, jax.jit(model.init)(jax.random.PRNGKey(0), jnp.zeros((1, T), jnp.int32))
    run = inference.load(work_dir)
    return run.model, {"params": run.state.params, "batch_stats": run.state.batch_stats}


def bench_mmjax(model, variables, batch, names, repeats):
    """(names/s as sample.py samples, compile seconds, names/s on one device or None), the two interleaved."""
    runs = {"devices": lambda seed: sampling.sample(model, variables, seed, names, batch_size=batch)}
    if sampling.local_mesh(batch, "rows") is not None:
        assert names <= batch * sampling.NAMES_PER_ROW  # one call of the sampler, as sample() makes it
        call = dict(rows=batch, chunk=names, options=sampling.SampleOptions())
        runs["one"] = lambda seed: jax.device_get(sampling.sample_chunk(
            model, variables, sampling.seed_word(seed), 0, names, jnp.zeros((0,), jnp.int32), **call)[0])
    start = time.perf_counter()
    runs["devices"](0)
    compile_s = time.perf_counter() - start
    if "one" in runs:
        runs["one"](0)  # its compile, untimed
    times = {name: [] for name in runs}
    for seed in range(1, repeats + 1):
        for name, run in runs.items():
            start = time.perf_counter()
            run(seed)
            times[name].append(time.perf_counter() - start)
    rates = {name: names / statistics.median(t) for name, t in times.items()}
    return rates["devices"], compile_s, rates.get("one")


def sample_command(work_dir, *flags):
    """Runs sample.py; its wall time in seconds and its stdout."""
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, str(ROOT / "sample.py"), "-o", work_dir, "--out", f"{tmp}/names.txt",
                                 *map(str, flags)], capture_output=True, text=True, check=True)
        return time.perf_counter() - start, result.stdout


def bench_marginal(work_dir, repeats, small=2000, large=200_000):
    """(large - small) / (median wall time of `sample.py -n large` - that of `-n small`), interleaved."""
    times = {small: [], large: []}
    for seed in range(repeats):
        for n in times:
            times[n].append(sample_command(work_dir, "-n", n, "--seed", seed)[0])
    small_s, large_s = statistics.median(times[small]), statistics.median(times[large])
    return {"names_per_s": (large - small) / (large_s - small_s), f"n{small}_s": small_s, f"n{large}_s": large_s}


def bench_new_names(work_dir, n=1000):
    seconds, out = sample_command(work_dir, "-n", n, "--unique", "--new")
    draws = int(re.search(rf"^{n} names from (\d+) draws", out, re.M).group(1))
    return {"names": n, "draws": draws, "draws_per_name": draws / n, "wall_s": seconds}


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
    return names / median_time(run, repeats)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--command-repeats", type=int, default=3, help="runs of each sample.py command")
    parser.add_argument("--work-dir", help="a trained transformer run (default: fresh weights, no end-to-end runs)")
    parser.add_argument("--batches", default="1000,1", help="rows decoded together, each (comma-separated)")
    parser.add_argument("--no-torch", action="store_true", help="mmjax alone")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    devices.one_cpu_device_per_core()  # as sample.py
    model, variables = load_model(args.work_dir)
    rows = []
    batches = [int(b) for b in args.batches.split(",")]
    # names per batch: 20 per row (the rows' refilling shows), 500 at batch 1; torch's: makemore's few
    for batch, names, torch_names in ((b, 20 * b if b > 1 else 500, 2 * b if b > 1 else 50) for b in batches):
        rate, compile_s, one_device = bench_mmjax(model, variables, batch, names, args.repeats)
        rows.append({"batch": batch, "names": names, "mmjax_names_per_s": rate, "mmjax_compile_s": compile_s,
                     "one_device_names_per_s": one_device, "torch_names": torch_names})
        print(json.dumps(rows[-1]), flush=True)
        if args.json:  # after each batch: a run stopped from outside keeps the rows it made
            pathlib.Path(args.json).write_text(json.dumps({"devices": jax.local_device_count(), "sampler": rows}))
    results = {"devices": jax.local_device_count(), "sampler": rows}
    if args.work_dir:
        results["marginal"] = bench_marginal(args.work_dir, args.command_repeats)
        results["unique_new"] = bench_new_names(args.work_dir)
    try:
        if args.no_torch:
            raise ImportError
        import torch  # noqa: F401
    except ImportError:
        print("torch is not timed" if args.no_torch else
              "torch is not installed: mmjax alone (pip install torch==2.13.0 for the comparison)")
    else:
        for row in rows:
            row["torch_names_per_s"] = bench_torch(row["batch"], row["torch_names"], args.repeats)
            row["speedup"] = row["mmjax_names_per_s"] / row["torch_names_per_s"]
    print(f"{results['devices']} {jax.devices()[0].platform} devices")
    print(f"{'batch':>6} {'mmjax names/s':>14} {'one device':>11} {'compile s':>10} {'torch names/s':>14} "
          f"{'speedup':>8}")
    for r in rows:
        print(f"{r['batch']:>6} {r['mmjax_names_per_s']:>14.0f} {r['one_device_names_per_s'] or float('nan'):>11.0f} "
              f"{r['mmjax_compile_s']:>10.2f} {r.get('torch_names_per_s', float('nan')):>14.1f} "
              f"{r.get('speedup', float('nan')):>7.1f}x")
    if "marginal" in results:
        m, u = results["marginal"], results["unique_new"]
        print(f"sample.py -n 200000 minus -n 2000, end to end: {m['names_per_s']:,.0f} names/s "
              f"({m['n200000_s']:.2f} s and {m['n2000_s']:.2f} s)")
        print(f"sample.py -n 1000 --unique --new: {u['draws']} draws, {u['draws_per_name']:.3f} per name, "
              f"{u['wall_s']:.2f} s")
    print(json.dumps(results))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
