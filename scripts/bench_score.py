"""Names per second of mmjax.score, the time of mmjax.most_likely's top 100, and the acceptance rates of a
few sampling constraints, for the default Transformer (vocab 27, block 16) on names.txt.

    python scripts/bench_score.py [--work-dir out] [--steps 1000] [--repeats 5] [--json out.json]

Without --work-dir it first trains the default Transformer for --steps steps (1,000: about 20 s; the
published figures say how many) in a temporary dir. On one CPU device per core, as mmjax-score runs.
Measures, compile apart, as medians of --repeats runs: scoring the run's 1,000 test words; the 29,494
distinct words of names.txt; 100,000 names sampled from the model (repeats are scored once); and the
same 100,000 as arrays alone (scoring.surprisals, without building the dicts). The dense layers' work
bounds the rate: 2 x 204,544 FLOP per position computed, so "GFLOP/s" is what the scoring sustained.
Then most_likely(n=100) cold (its compiles included, as a first command pays them) and warm, and the
acceptance rate of each constraint over the draws that gave 200 names.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench_sample import median_time  # noqa: E402  (scripts/ is on the path when a script runs)
from mmjax import devices  # noqa: E402

PARAMS = 204_544  # the default Transformer's
CONSTRAINTS = [dict(suffix="lyn"), dict(prefix="ma"), dict(contains="ri"), dict(min_length=5, max_length=7),
               dict(regex="[^aeiou]*[aeiou][^aeiou]*"), dict(suffix="x")]


def positions(scoring, run, names):
    """Positions the scoring computes for these names: each distinct one at its width, in full batches."""
    import numpy as np

    widths = scoring.widths(run.dataset.vocab.block_size)
    length_n = np.array([len(w) for w in set(names)])
    count_w = np.bincount(np.searchsorted(widths, length_n + 1), minlength=len(widths))
    return int(sum(-(-c // scoring.SCORE_ROWS) * scoring.SCORE_ROWS * w for c, w in zip(count_w, widths)))


def bench_scores(scoring, run, names, repeats):
    """names/s of score() on `names` (the run's test words included in each call, as score() does)."""
    scoring.score(run, names)  # compiles
    seconds = median_time(lambda: scoring.score(run, names), repeats)
    arrays_s = median_time(lambda: scoring.surprisals(run, names + run.dataset.test_words), repeats)
    computed = positions(scoring, run, names + run.dataset.test_words)
    return {"names": len(names), "distinct": len(set(names)), "seconds": seconds, "names_per_s": len(names) / seconds,
            "arrays_names_per_s": len(names) / arrays_s, "positions": computed,
            "gflop_per_s": 2 * PARAMS * computed / arrays_s / 1e9}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", help="a trained default Transformer run (default: train one for --steps)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--input", default=str(ROOT.parent / "shared" / "data" / "names.txt"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    devices.one_cpu_device_per_core()  # as mmjax-score and sample.py
    import jax

    from mmjax import inference, scoring
    with tempfile.TemporaryDirectory() as tmp:
        work_dir = args.work_dir
        if not work_dir:
            work_dir = f"{tmp}/run"
            subprocess.run([sys.executable, str(ROOT / "train.py"), "-i", args.input, "-o", work_dir, "--max-steps",
                            str(args.steps), "--no-progress", "--sample-every", "0"], check=True, capture_output=True)
        run = scoring.load(work_dir)
        data = run.dataset
        results = {"devices": jax.local_device_count(), "steps": int(run.state.step), "score": {}}
        samples = inference.sample(run, num_samples=100_000, seed=0)
        distinct_words = sorted(set(data.train_words + data.val_words + data.test_words))
        for label, names in (("test_words", list(data.test_words)), ("distinct_words", distinct_words),
                             ("samples_100k", samples)):
            results["score"][label] = bench_scores(scoring, run, names, args.repeats)
        cold_start = time.perf_counter()
        scoring.search(run, 100)
        cold_s = time.perf_counter() - cold_start
        found, expanded = scoring.search(run, 100)
        warm_s = median_time(lambda: scoring.search(run, 100), args.repeats)
        results["most_likely"] = {"n": 100, "cold_s": cold_s, "warm_s": warm_s, "expanded": expanded,
                                  "top20": [[w, p] for w, p in found[:20]]}
        results["constraints"] = []
        for constraint in CONSTRAINTS:
            start = time.perf_counter()
            try:
                words, draws = inference.draw(run, num_samples=200, seed=0, **constraint)
                rate = len(words) / draws
            except Exception as e:  # a UserError: too rare
                words, draws, rate = [], None, str(e)
            results["constraints"].append({"constraint": constraint, "draws": draws, "acceptance": rate,
                                           "seconds": time.perf_counter() - start})
    print(f"{results['devices']} CPU devices, the default Transformer after {results['steps']} steps")
    for label, r in results["score"].items():
        print(f"score {label}: {r['names']:,} names ({r['distinct']:,} distinct) {r['names_per_s']:,.0f} names/s "
              f"(arrays alone {r['arrays_names_per_s']:,.0f}; {r['positions']:,} positions, {r['gflop_per_s']:.0f} GFLOP/s)")
    m = results["most_likely"]
    print(f"most_likely top 100: {m['cold_s']:.2f} s cold, {m['warm_s']:.2f} s warm, {m['expanded']:,} prefixes expanded")
    print("top 20: " + ", ".join(f"{w} {p:.3%}" for w, p in m["top20"]))
    for c in results["constraints"]:
        rate = f"{c['acceptance']:.2%} ({c['draws']:,} draws for 200)" if c["draws"] else c["acceptance"]
        flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in c["constraint"].items())
        print(f"{flags}: {rate}")
    print(json.dumps(results))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
