"""Where a training step's time goes: a jax.profiler trace of the compiled `train_steps`, its XLA
operations grouped by what they compute (from the HLO's op_name metadata), per step.

    python scripts/profile_train.py [--type transformer] [--steps 50] [--hlo step.hlo] [--json out.json]

Times are summed over XLA's CPU threads; `--hlo` also writes the optimised HLO (the XLA dump).
"""

import argparse
import collections
import glob
import json
import pathlib
import re
import statistics
import sys
import tempfile
import time

import jax
from jax.profiler import ProfileData

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench_train import names_dataset  # noqa: E402  (scripts/ is on the path when a script runs)
from mmjax.state import create_train_state  # noqa: E402
from mmjax.steps import train_steps  # noqa: E402
from mmjax.config import get_config  # noqa: E402


def op_names(hlo_text):
    """HLO instruction name -> (opcode, op_name metadata: the jax operation it came from)."""
    ops = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%([\w.\-]+) = \S+ ([\w\-]+)\(", line)
        if m:
            op_name = re.search(r'op_name="([^"]+)"', line)
            ops[m.group(1)] = (m.group(2), op_name.group(1) if op_name else "")
    return ops


def category(name, opcode, op_name):
    """What an XLA operation of a train step computes, from the jax operation it came from."""
    is_matmul = opcode == "dot" or ("ynn_fusion" in name and "dot_general" in op_name)
    if "randint" in op_name or "threefry" in op_name or op_name.endswith("/gather"):
        return "batch sampling (PRNG, gather)"
    if "jvp(" not in op_name:
        return "optimiser (AdamW)" if "closed_call" in op_name else "loop and copies"
    part = ("attention core" if re.search(r"/attn/(?!c_attn|c_proj)", op_name) else
            "layer norm" if "/ln_" in op_name else
            "embeddings" if "/wte/" in op_name or "/wpe/" in op_name else
            "dense layers" if is_matmul else
            "activations, residuals" if "/h_" in op_name or "/mlp" in op_name else "loss")
    kind = "matmul" if is_matmul else "elementwise"
    return f"{'backward' if 'transpose(' in op_name else 'forward'}: {part} ({kind})"


def time_by_category(run, hlo, category):
    """Runs run() under jax.profiler.trace; the operation time (ns, summed over XLA's CPU threads) of each
    category(name, opcode, op_name) of the HLO's operations, and the number of operations run."""
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            run()
        profile = ProfileData.from_file(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)[0])
    ops, ns, count = op_names(hlo), collections.Counter(), 0
    for plane in profile.planes:
        for line in plane.lines:
            # XLA's CPU threads: its Eigen pool, and its client's, which runs some operations inline (more of
            # them on a loaded machine)
            if not line.name.startswith("tf_XLA"):
                continue
            for event in line.events:
                if event.name in ops:
                    ns[category(event.name, *ops[event.name])] += event.duration_ns
                    count += 1
    return ns, count


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-i", "--input-file", default=str(ROOT.parent / "shared" / "data" / "names.txt"))
    parser.add_argument("--type", default="transformer")
    parser.add_argument("--steps", type=int, default=50, help="train steps in the profiled dispatch")
    parser.add_argument("--hlo", help="also write the optimised HLO of train_steps here")
    parser.add_argument("--json", help="also write the table here")
    args = parser.parse_args()
    dataset = names_dataset(args.input_file)
    config = get_config(args.type)
    x_nt, y_nt = jax.device_put(dataset.vocab.encode_words(dataset.train_words))
    state = create_train_state(config, dataset.vocab, jax.random.PRNGKey(config.seed))
    run = lambda state: train_steps(state, x_nt, y_nt, num_steps=args.steps, batch_size=config.batch_size)
    hlo = train_steps.lower(state, x_nt, y_nt, num_steps=args.steps,
                                  batch_size=config.batch_size).compile().as_text()
    if args.hlo:
        pathlib.Path(args.hlo).write_text(hlo)
    times_ms = []
    for _ in range(6):  # the first compiles
        start = time.perf_counter()
        state, losses = run(state)
        losses.block_until_ready()
        times_ms.append((time.perf_counter() - start) * 1000 / args.steps)
    wall_ms = statistics.median(times_ms[1:])
    ns, count = time_by_category(lambda: run(state)[1].block_until_ready(), hlo, category)
    total_ms = sum(ns.values()) / 1e6 / args.steps
    rows = [{"what": what, "ms": t / 1e6 / args.steps, "share": t / sum(ns.values())} for what, t in ns.most_common()]
    print(f"{args.type}: {wall_ms:.2f} ms/step unprofiled (median of 5); {count // args.steps} XLA operations and "
          f"{total_ms:.2f} ms of operation time per step (summed over threads)\n")
    print("| what | ms/step | share |\n|---|---|---|")
    for row in rows:
        print(f"| {row['what']} | {row['ms']:.3f} | {100 * row['share']:.0f}% |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"wall_ms": wall_ms, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
