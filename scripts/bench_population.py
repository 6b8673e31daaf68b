"""Population speed: ms per member-step of K models trained at once (mmjax/steps.py's population_train_steps,
one compiled program) against ms/step of one model trained alone (steps.train_steps), in the same run,
interleaved rounds, medians; makemore's default sizes, batch 32, names.txt.

    python scripts/bench_population.py [--types transformer,gru,mlp,bow] [--sizes 1,8,32] [--rounds 5]
        [--steps 50] [--members vmap,map] [--devices 2] [--budget-s S] [--quick] [--json out.json]

`speedup` = K x (ms/step alone) / (ms/step of the population): the population's throughput against K
sequential runs (each alone on one device, as train.py runs one model). `--members map` runs the members
one after another inside the program (jax.lax.map) instead of vmapping them. `--devices N` emulates N host devices on the CPU (XLA_FLAGS, set before jax
starts); the members are then sharded over the "pop" mesh axis.

`--budget-s S` (scripts/device_check.sh): the sizes one after another, each made, compiled, timed and freed
before the next, growing until one runs out of device memory (that row says so) or S seconds have passed;
each row also has member_steps_per_s, compile_s and, where the device reports its memory (GPUs, TPUs),
bytes_per_member: the device memory its states hold above what was in use before it, over K (the peak
during its steps: peak_bytes_in_use, the process's so far).
"""

import argparse
import json
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--input-file", default=str(ROOT.parent / "shared" / "data" / "names.txt"))
    parser.add_argument("--types", default="transformer,gru,mlp,bow")
    parser.add_argument("--sizes", default="1,8,32", help="population sizes K")
    parser.add_argument("--members", default="vmap", help="vmap and/or map (comma-separated)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds; medians are reported")
    parser.add_argument("--steps", type=int, default=50, help="steps per timed dispatch")
    parser.add_argument("--devices", type=int, default=1, help="emulated CPU devices (XLA_FLAGS)")
    parser.add_argument("--budget-s", type=float,
                        help="sizes one at a time, until out of memory or this many seconds (see above)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps, one round")
    parser.add_argument("--json", help="also write the rows here")
    return parser.parse_args()


def main():
    args = parse_args()
    if args.devices > 1:  # before jax starts
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={args.devices}"
    import jax

    from bench_train import mmjax_timer, names_dataset
    from mmjax import population, sampling
    from mmjax.config import get_config
    from mmjax.steps import population_train_steps

    if args.quick:
        args.rounds, args.steps = 1, 3
    dataset = names_dataset(args.input_file)
    x_nt, y_nt = dataset.vocab.encode_words(dataset.train_words)

    def population_timer(model_type, size, members):
        config = get_config(model_type, population=size)
        states = population.create_states(config, dataset.vocab, population.member_configs(config))
        mesh = sampling.local_mesh(size, "pop")
        sharding = lambda spec: None if mesh is None else jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(*spec))
        states, data = jax.device_put(states, sharding(["pop"])), jax.device_put((x_nt, y_nt), sharding([]))

        def run():
            nonlocal states
            start = time.perf_counter()
            states, losses = population_train_steps(states, *data, num_steps=args.steps, batch_size=config.batch_size,
                                                    spmd_axis=None if mesh is None else "pop", members=members)
            losses.block_until_ready()
            return (time.perf_counter() - start) * 1000 / args.steps

        run.compile_s = run() * args.steps / 1000  # the first dispatch compiles
        return run

    def save():  # after each row: a run stopped from outside keeps the rows it made
        if args.json:
            pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))

    def memory():
        return jax.devices()[0].memory_stats() or {}  # None on the CPU

    def one_at_a_time(model_type, members, alone):
        """--budget-s: each size made, timed and freed before the next, until out of memory or time."""
        deadline = time.perf_counter() + args.budget_s
        for size in map(int, args.sizes.split(",")):
            if time.perf_counter() > deadline:
                print(f"{model_type} K={size}: not run, the budget of {args.budget_s:g} s is spent", flush=True)
                break
            row = {"type": model_type, "members": members, "K": size, "devices": jax.device_count()}
            before = memory().get("bytes_in_use")
            try:
                run = population_timer(model_type, size, members)
                step = statistics.median(run() for _ in range(args.rounds))
            except Exception as e:  # XlaRuntimeError RESOURCE_EXHAUSTED: the largest K is the previous one
                if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
                    raise
                row["error"] = "out of memory: " + str(e).splitlines()[0][:200]
                rows.append(row)
                print(json.dumps(row), flush=True)
                save()
                break
            after = memory()  # the population's states still held: what it keeps on the device
            row.update(ms_per_step=round(step, 3), ms_per_member_step=round(step / size, 4),
                       member_steps_per_s=round(1000 * size / step, 1), compile_s=round(run.compile_s, 2),
                       alone_ms_per_step=round(alone, 3), speedup=round(size * alone / step, 2))
            if before is not None and "bytes_in_use" in after:
                row["bytes_per_member"] = round((after["bytes_in_use"] - before) / size)
                row["peak_bytes_in_use"] = after.get("peak_bytes_in_use")  # the process's so far
                row["bytes_limit"] = after.get("bytes_limit")
            del run  # its states: the next size starts from what this one leaves in use
            rows.append(row)
            print(json.dumps(row), flush=True)
            save()

    print(f"{jax.device_count()} {jax.devices()[0].platform} device(s); medians of {args.rounds} rounds of "
          f"{args.steps} steps", flush=True)
    rows = []
    for model_type in args.types.split(","):
        timers = {("alone", 1): mmjax_timer(model_type, dataset, args.steps, {}, one_device=True)}
        if args.budget_s is not None:
            alone = statistics.median(timers[("alone", 1)]() for _ in range(args.rounds))
            del timers
            for members in args.members.split(","):
                one_at_a_time(model_type, members, alone)
            continue
        for members in args.members.split(","):
            for size in map(int, args.sizes.split(",")):
                timers[(members, size)] = population_timer(model_type, size, members)
        times = {key: [] for key in timers}
        for _ in range(args.rounds):  # interleaved: every variant sees the same machine
            for key, run in timers.items():
                times[key].append(run())
        alone = statistics.median(times[("alone", 1)])
        for (members, size), ms in times.items():
            if members == "alone":
                continue
            step = statistics.median(ms)
            row = {"type": model_type, "members": members, "K": size, "devices": jax.device_count(),
                   "ms_per_step": round(step, 3), "ms_per_member_step": round(step / size, 3),
                   "alone_ms_per_step": round(alone, 3), "speedup": round(size * alone / step, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
