"""What makemore's samples while training (--sample-every, default 200) cost, end to end: the wall time
of real `train.py` runs with and without them, alternating rounds so both see the same machine; and one
sample line's own time, measured alone.

    python scripts/bench_sample_every.py -i names.txt [--type transformer] [--rounds 3] [--steps 1000] [--quick]

What a run pays beyond the lines' own time (mostly the sampler's one compilation) is the measured
difference less the lines. Projected onto a default 10,000-step run:
(that fixed cost + 50 lines) / (the plain run + 9,000 more steps at the compiled step's ms/step, measured in
this process). Prints the figures, then JSON.
"""

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import jax

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench_train import mmjax_timer, names_dataset  # noqa: E402  (scripts/ is on the path when a script runs)
from mmjax import train  # noqa: E402
from mmjax.state import create_train_state  # noqa: E402
from mmjax.config import get_config  # noqa: E402
from mmjax.models import create_model  # noqa: E402

DEFAULT_STEPS = 10_000


def run_seconds(args, steps, sample_every, workdir):
    """Wall time of `train.py --max-steps steps --sample-every N`, from the command to its exit."""
    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "-i", args.input_file, "-o", str(workdir), "--type",
                    args.type, "--max-steps", str(steps), "--sample-every", str(sample_every), "--no-progress"],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def line_ms(args, config, dataset, count):
    """The first sample line's time (the sampler's compilation) and the median of the next `count`, in ms."""
    model = create_model(config, dataset.vocab.size, dataset.vocab.block_size)
    state = create_train_state(config, dataset.vocab, jax.random.PRNGKey(config.seed))
    times = []
    for _ in range(count + 1):
        start = time.perf_counter()
        train.sample_line(model, state, config, dataset.vocab, 0)
        times.append((time.perf_counter() - start) * 1000)
    return times[0], statistics.median(times[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--input-file", default=str(ROOT.parent / "shared" / "data" / "names.txt"))
    parser.add_argument("--type", default="transformer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=1000, help="steps of each train.py run")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 200 steps")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    rounds, steps = (1, 200) if args.quick else (args.rounds, args.steps)
    config = get_config(args.type)
    every = config.sample_every
    seconds = {0: [], every: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for n in (seconds if r % 2 == 0 else reversed(list(seconds))):
                seconds[n].append(run_seconds(args, steps, n, pathlib.Path(tmp) / f"{r}_{n}"))
    dataset = names_dataset(args.input_file)
    first, line = line_ms(args, config, dataset, 10 * rounds)
    step_timer = mmjax_timer(args.type, dataset, config.log_every, {})
    step_ms = statistics.median(step_timer() for _ in range(5 * rounds))
    plain, sampled = (statistics.median(s) for s in seconds.values())
    extra = statistics.median(s - p for p, s in zip(*seconds.values()))
    fixed = extra - steps // every * line / 1000  # what the run paid beyond the lines themselves
    default_plain = plain + (DEFAULT_STEPS - steps) * step_ms / 1000
    default_run = (fixed + DEFAULT_STEPS // every * line / 1000) / default_plain
    figures = {"type": args.type, "rounds": rounds, "steps": steps, "sample_every": every,
               "run_s_plain": plain, "run_s_sampled": sampled, "extra_s": extra, "sample_line_ms": line,
               "first_sample_line_ms": first,
               "fixed_extra_s": fixed, "slowdown_measured": extra / plain, "ms_per_step": step_ms,
               "default_run_s_plain": default_plain, "slowdown_default_run": default_run}
    print(f"{args.type}: train.py --max-steps {steps} takes {plain:.2f} s without samples, {sampled:.2f} s with a "
          f"line every {every} steps (medians of {rounds} alternating rounds): {extra:+.2f} s, "
          f"{extra / plain:+.2%}")
    print(f"one sample line alone: {line:.2f} ms (median of {10 * rounds}; the first, compiling: {first:.0f} ms); "
          f"beyond its {steps // every} lines the run paid {fixed:+.2f} s; a default {DEFAULT_STEPS:,}-step run "
          f"({default_plain:.0f} s at {step_ms:.2f} ms/step): "
          f"{default_run:+.2%}")
    print(json.dumps(figures))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
