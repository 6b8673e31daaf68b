"""Time to start: whole commands as a user types them, mmjax against the repo's PyTorch reference
(makemore's loop of scripts/bench_train.py, and makemore's 50-sample `--sample-only`), in the same run,
interleaved rounds, medians. The default Transformer on the embedded names.

    python scripts/bench_startup.py [--rounds 3] [--steps 100] [--json out.json]

Each round: makemore.py's `--max-steps 100` (torch, makemore's DataLoader with 4 workers, the same words);
`train.py -o NEW --max-steps 100` cold (a fresh MMJAX_CACHE: no compilation cache, no derived names) and
warm (the same cache, another new work dir); `sample.py -o RUN -n 10` first after that training and again;
makemore's `--sample-only` (its model.pt, 50 samples, batch 50, the whole prefix recomputed per token).
`sample.py -o RUN -n 10` first after a run that printed samples (`--sample-every` its last step; the training
not timed, a fresh cache), which compiled the sampler sample.py then reads back. `python -c "import jax"`,
what every command pays first. The JSON names the versions of jax, ml_dtypes (0.7.0's import is most of jax's),
numpy and torch.
`--makemore train|sample DIR` is one such PyTorch process (what the rounds start).

Then, untimed, where a training command's time goes (what no change of mmjax's Python removes): the same
`train.py` cold and warm once more, jax.monitoring summing its XLA compilation, tracing, lowering and cache reads
(`--breakdown DIR` is such a process), and the 100 steps' own compute (the compiled dispatch, timed after a warm-up).
"""

import argparse
import importlib.metadata
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def makemore_train(workdir, steps):
    """makemore.py's training as a process does it: torch, the words, the model, AdamW, `steps` steps of
    DataLoader batches (no evaluation or samples before step 200, as makemore), then model.pt."""
    import torch

    from mmjax import input_pipeline, torch_models

    words = input_pipeline.read_words(workdir / "words.txt")
    dataset = input_pipeline.Dataset.from_words(words, 3407)
    torch.manual_seed(3407)
    model = torch_models.create("transformer", dataset.vocab.size, dataset.vocab.block_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.01)
    batches = torch_models.batches(dataset)
    for _ in range(steps):
        _, loss = model(*next(batches))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.save(model.state_dict(), workdir / "model.pt")


def makemore_sample(workdir, num_samples=50):
    """makemore.py --sample-only: model.pt loaded, `num_samples` names generated together, each token from
    the model run over the whole prefix (makemore's `generate`, top-k off, temperature 1)."""
    import torch

    from mmjax import input_pipeline, torch_models

    words = input_pipeline.read_words(workdir / "words.txt")
    vocab = input_pipeline.Vocab.from_words(words)
    model = torch_models.create("transformer", vocab.size, vocab.block_size)
    model.load_state_dict(torch.load(workdir / "model.pt", weights_only=True))
    idx = torch.zeros(num_samples, 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(vocab.block_size - 1):
            logits, _ = model(idx)
            idx = torch.cat([idx, torch.multinomial(torch.softmax(logits[:, -1, :], dim=-1), 1)], dim=1)
    print("\n".join(vocab.decode(row[1:].tolist()) for row in idx))


def command(argv, env=None):
    """Seconds the whole command took, and its stdout; a failure stops the benchmark with its stderr."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *map(str, argv)], capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if result.returncode:
        sys.exit(f"{' '.join(map(str, argv))} failed ({result.returncode}):\n{result.stderr}")
    return seconds, result.stdout


def timed(argv, env=None):
    return command(argv, env)[0]


def last_line_json(stdout, tag):
    """The JSON of the stdout line that starts with `tag`."""
    return json.loads([line for line in stdout.splitlines() if line.startswith(tag + " ")][-1].split(" ", 1)[1])


# jax.monitoring's durations that a command spends making its programs: seconds per kind, printed at its exit
EVENTS = {"/jax/core/compile/backend_compile_duration": "compile", "/jax/core/compile/jaxpr_trace_duration": "trace",
          "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
          "/jax/compilation_cache/cache_retrieval_time_sec": "cache_read"}


def breakdown(argv):
    """train.py's command in this process, printing (at its exit) the seconds it spent per EVENTS kind. A program
    read from the cache is also timed as a backend compilation: compile counts XLA's own work only (less reads)."""
    import atexit
    import collections

    import jax.monitoring

    seconds = collections.Counter()
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, duration, **kwargs: seconds.update({EVENTS[event]: duration}) if event in EVENTS else None)

    def report():
        seconds["compile"] -= seconds["cache_read"]
        print("breakdown " + json.dumps({kind: round(seconds[kind], 3) for kind in EVENTS.values()}))

    atexit.register(report)  # the command ends by os._exit, after the exit handlers
    from mmjax import cli

    sys.argv = ["train.py", *argv]
    cli.train_command()  # as train.py runs it: the whole process, with the compilation cache


def dispatch_seconds(steps):
    """The compiled dispatch of `steps` default-Transformer steps on the embedded names: its median of 3 runs
    after a warm-up (the compute a `--max-steps` run of that many steps cannot avoid)."""
    import jax

    from mmjax import config as config_lib
    from mmjax import input_pipeline, state
    from mmjax import steps as mmjax_steps

    config = config_lib.get_config("transformer")
    words = input_pipeline.read_words(input_pipeline.default_words_path())
    dataset = input_pipeline.Dataset.from_words(words, config_lib.split_seed(config), config.val_size)
    x_nt, y_nt = jax.device_put(dataset.vocab.encode_words(dataset.train_words))
    train_state = state.create_train_state(config, dataset.vocab, jax.random.PRNGKey(config.seed))
    seconds = []
    for _ in range(4):
        start = time.perf_counter()
        train_state, losses = mmjax_steps.train_steps(train_state, x_nt, y_nt, num_steps=steps,
                                                      batch_size=config.batch_size)
        jax.block_until_ready(losses)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--makemore", nargs=2, metavar=("train|sample", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--breakdown", metavar="DIR", help=argparse.SUPPRESS)
    parser.add_argument("--dispatch", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.breakdown:
        return breakdown(["-o", args.breakdown, "--max-steps", str(args.steps), "--no-progress"])
    if args.dispatch:
        return print(f"dispatch {json.dumps(dispatch_seconds(args.steps))}")
    if args.makemore:
        what, workdir = args.makemore[0], pathlib.Path(args.makemore[1])
        return makemore_train(workdir, args.steps) if what == "train" else makemore_sample(workdir)
    from mmjax import input_pipeline

    tmp = pathlib.Path(tempfile.mkdtemp(prefix="mmjax-startup-"))
    names = input_pipeline.default_words_path(tmp / "names")  # the embedded names, for makemore too
    me, steps = pathlib.Path(__file__), ["--max-steps", args.steps, "--no-progress"]
    times = {}

    def sample_after_sampling(r):
        cache = {"MMJAX_CACHE": str(tmp / f"sampled_cache{r}")}
        timed(["train.py", "-o", tmp / f"sampled{r}", *steps, "--sample-every", args.steps], cache)  # not timed
        return timed(["sample.py", "-o", tmp / f"sampled{r}", "-n", 10], cache)

    clean = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_COMPILATION_CACHE", "MMJAX"))}
    os.environ.clear()
    os.environ.update(clean)
    try:
        for r in range(args.rounds):
            reference = tmp / f"makemore{r}"
            reference.mkdir()
            shutil.copy(names, reference / "words.txt")
            cache = {"MMJAX_CACHE": str(tmp / f"cache{r}")}  # empty: cold
            figures = {
                "makemore_train": lambda: timed([me, "--makemore", "train", reference, "--steps", args.steps]),
                "mmjax_train_cold": lambda: timed(["train.py", "-o", tmp / f"cold{r}", *steps], cache),
                "mmjax_train_warm": lambda: timed(["train.py", "-o", tmp / f"warm{r}", *steps], cache),
                "mmjax_sample_first": lambda: timed(["sample.py", "-o", tmp / f"warm{r}", "-n", 10], cache),
                "mmjax_sample_again": lambda: timed(["sample.py", "-o", tmp / f"warm{r}", "-n", 10], cache),
                "makemore_sample": lambda: timed([me, "--makemore", "sample", reference]),
                "mmjax_sample_first_after_samples": lambda: sample_after_sampling(r),
                "import_jax": lambda: timed(["-c", "import jax"]),  # what every command pays first
            }
            for name, run in figures.items():
                times.setdefault(name, []).append(run())
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
        # untimed: where the training command's time goes, cold (a fresh cache) then warm
        cache = {"MMJAX_CACHE": str(tmp / "breakdown_cache")}
        parts = {when: last_line_json(command([me, "--breakdown", tmp / f"breakdown_{when}", "--steps", args.steps],
                                              cache)[1], "breakdown") for when in ("cold", "warm")}
        parts["dispatch"] = last_line_json(command([me, "--dispatch", "--steps", args.steps])[1], "dispatch")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    medians = {name: statistics.median(values) for name, values in times.items()}
    print(f"\n{'command':<22} median s   (of {args.rounds})")
    for name, value in medians.items():
        print(f"{name:<22} {value:8.2f}")
    for when in ("cold", "warm"):
        print(f"train {when}: " + ", ".join(f"{kind} {seconds:.2f} s" for kind, seconds in parts[when].items()))
    print(f"the {args.steps} steps' compiled dispatch: {parts['dispatch']:.2f} s")
    goals = {"train cold <= makemore's": medians["mmjax_train_cold"] <= medians["makemore_train"],
             "train warm <= half of makemore's": medians["mmjax_train_warm"] <= medians["makemore_train"] / 2,
             "sample first <= makemore's --sample-only": medians["mmjax_sample_first"] <= medians["makemore_sample"],
             "sample again <= 2.0 s": medians["mmjax_sample_again"] <= 2.0}
    for goal, met in goals.items():
        print(f"{goal}: {'met' if met else 'missed'}")
    versions = {name: importlib.metadata.version(name) for name in ("jax", "ml_dtypes", "numpy", "torch")}
    print("versions: " + ", ".join(f"{name} {version}" for name, version in versions.items()))
    report = {"steps": args.steps, "rounds": args.rounds, "seconds": times, "medians": medians, "goals": goals,
              "breakdown": parts, "versions": versions}
    print(json.dumps(report))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
