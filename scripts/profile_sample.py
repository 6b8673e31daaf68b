"""Where a decode step's time goes: a jax.profiler trace of the compiled sampler (`sample_chunk`), its
XLA operations grouped by what they compute (profile_train.py's way), per decode step.

    python scripts/profile_sample.py [--work-dir out] [--batch 1000] [--names 20000] [--hlo s.hlo] [--json out.json]

Samples from the work dir's trained model (without one: a fresh default Transformer, whose names
mostly run the full 15 steps). Times are summed over XLA's CPU threads.
"""

import argparse
import json
import pathlib
import re
import statistics
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from bench_sample import load_model  # noqa: E402  (scripts/ is on the path when a script runs)
from profile_train import time_by_category  # noqa: E402
from mmjax import sampling  # noqa: E402


def category(name, opcode, op_name):
    """What an XLA operation of a decode step computes, from the jax operation it came from."""
    is_matmul = opcode == "dot" or ("ynn_fusion" in name and "dot_general" in op_name)
    if opcode == "dot" and not op_name:  # XLA drops the metadata of the attention's batched products
        return "attention core"
    if "decode_step" not in op_name:
        return ("sampling: random numbers" if "threefry" in op_name or "_uniform" in op_name or "gumbel" in op_name
                else "sampling: choice, refill, output" if "/body/" in op_name else "loop and copies")
    if re.search(r"/attn/(?!c_attn|c_proj)", op_name):
        return "attention: cache update (scatter)" if "scatter" in op_name else "attention core"
    return ("dense layers (matmul)" if is_matmul else
            "layer norm" if "/ln_" in op_name else
            "embeddings" if "/wte/" in op_name or "/wpe/" in op_name else
            "dense layers: bias, activations, residuals")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", help="a trained run (default: a fresh default Transformer)")
    parser.add_argument("--batch", type=int, default=1000, help="rows decoded together")
    parser.add_argument("--names", type=int, default=20_000, help="samples in the profiled call")
    parser.add_argument("--hlo", help="also write the optimised HLO of the sampler here")
    parser.add_argument("--json", help="also write the table here")
    args = parser.parse_args()
    model, variables = load_model(args.work_dir)
    options = sampling.SampleOptions()
    call = dict(rows=args.batch, chunk=args.names, options=options)
    arguments = (model, variables, sampling.seed_word(0), 0, args.names, jnp.zeros((0,), jnp.int32))
    hlo = sampling.sample_chunk.lower(*arguments, **call).compile().as_text()
    if args.hlo:
        pathlib.Path(args.hlo).write_text(hlo)
    times_s = []
    for _ in range(6):  # the first compiles
        start = time.perf_counter()
        steps = int(sampling.sample_chunk(*arguments, **call)[1])
        times_s.append(time.perf_counter() - start)
    wall_s = statistics.median(times_s[1:])
    ns, count = time_by_category(lambda: sampling.sample_chunk(*arguments, **call)[0].block_until_ready(), hlo,
                                 category)
    rows = [{"what": what, "ms": t / 1e6 / steps, "share": t / sum(ns.values())} for what, t in ns.most_common()]
    print(f"batch {args.batch}: {args.names / wall_s:,.0f} names/s, {steps} decode steps of {1000 * wall_s / steps:.3f} "
          f"ms (unprofiled, median of 5); {count // steps} XLA operations and {sum(ns.values()) / 1e6 / steps:.3f} "
          "ms of operation time per step (summed over threads)\n")
    print("| what | ms/step | share |\n|---|---|---|")
    for row in rows:
        print(f"| {row['what']} | {row['ms']:.3f} | {100 * row['share']:.0f}% |")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"names_per_s": args.names / wall_s, "steps": steps,
                                                       "step_ms": 1000 * wall_s / steps, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
