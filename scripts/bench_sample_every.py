"""What makemore's samples while training (--sample-every, default 200) cost: the training loop of
`train_and_evaluate` (dispatches of --log-every steps, the losses read back after each) with and without
`train.sample_line` at every multiple of N, on names.txt, alternating rounds so both see the same machine.

    python scripts/bench_sample_every.py -i names.txt [--type transformer] [--rounds 5] [--steps 1000] [--quick]

Prints median ms/step of each, the slowdown (median of the rounds' ratios), the median time of one sample line
measured alone, the steady-state slowdown it implies (one line / (N x ms/step)), the sampler's one-time compile,
and the slowdown of a default 10,000-step run including that compile; then the figures as JSON.
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
from bench_train import names_dataset  # noqa: E402  (scripts/ is on the path when a script runs)
from mmjax import train  # noqa: E402
from mmjax.config import get_config  # noqa: E402
from mmjax.models import create_model  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--input-file", default=str(ROOT.parent / "shared" / "data" / "names.txt"))
    parser.add_argument("--type", default="transformer")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=1000, help="steps per round and variant")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 200 steps")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    rounds, steps = (2, 200) if args.quick else (args.rounds, args.steps)
    dataset = names_dataset(args.input_file)
    config = get_config(args.type)
    vocab = dataset.vocab
    model = create_model(config, vocab.size, vocab.block_size)
    state, (x_nt, y_nt), batch_sharding = train.to_devices(
        train.create_train_state(config, vocab, jax.random.PRNGKey(config.seed)),
        vocab.encode_words(dataset.train_words), config.batch_size)

    def loop(sample_every):
        """`steps` steps as train_and_evaluate runs them (no evaluation): ms/step."""
        nonlocal state
        start = time.perf_counter()
        for first in range(0, steps, config.log_every):
            state, losses = train.train_steps(state, x_nt, y_nt, num_steps=config.log_every,
                                              batch_size=config.batch_size, batch_sharding=batch_sharding)
            jax.device_get(losses).tolist()
            step = first + config.log_every
            if sample_every and step % sample_every == 0:
                train.sample_line(model, state, vocab, config, step)
        return (time.perf_counter() - start) * 1000 / steps

    loop(0)  # compile the steps
    start = time.perf_counter()
    train.sample_line(model, state, vocab, config, 0)
    compile_s = time.perf_counter() - start
    times = {0: [], config.sample_every: []}
    for r in range(rounds):
        for every in (times if r % 2 == 0 else reversed(list(times))):
            times[every].append(loop(every))
    line_ms = []
    for _ in range(10 * rounds):
        start = time.perf_counter()
        train.sample_line(model, state, vocab, config, 0)
        line_ms.append((time.perf_counter() - start) * 1000)
    plain, sampled = (statistics.median(t) for t in times.values())
    every, line = config.sample_every, statistics.median(line_ms)
    implied = line / (every * plain)
    default_run = (10_000 // every * line / 1000 + compile_s) / (10_000 * plain / 1000)
    figures = {"type": args.type, "rounds": rounds, "steps": steps, "sample_every": every,
               "ms_per_step_plain": plain, "ms_per_step_sampled": sampled,
               "slowdown_measured": statistics.median(s / p - 1 for p, s in zip(*times.values())),
               "sample_line_ms": line, "slowdown_implied": implied, "sampler_compile_s": compile_s,
               "slowdown_10k_run_with_compile": default_run}
    print(f"{args.type}: {plain:.3f} ms/step without samples, {sampled:.3f} with one line every {every} steps "
          f"(medians of {rounds} alternating rounds of {steps} steps): slowdown "
          f"{figures['slowdown_measured']:+.2%} (median of the rounds' ratios)")
    print(f"one sample line alone: {line:.2f} ms (median of {len(line_ms)}), {implied:.2%} of {every} steps; "
          f"sampler compiled once in {compile_s:.2f} s; a default 10,000-step run: {default_run:.2%} slower")
    print(json.dumps(figures))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
