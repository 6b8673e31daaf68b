"""The record's table (issue 15, docs/record.md): every configuration a run tried,
chosen on its validation set, with the test loss read where validation chose.

    python scripts/record_table.py WORKDIR [WORKDIR ...] [--csv docs/record/runs.csv]

Each work dir gives one row per model (a single run, or each member of a population): the evaluation with
the lowest val_loss, and that evaluation's val_loss and test_loss. A population adds its ensemble: the
mixture of every member's best-by-validation checkpoint (what `sample.py --ensemble` samples), scored here
on the validation and test words. Steps: those trained (fewer than max_steps for a run stopped early);
minutes: from config.json's time to the last checkpoint's. Prints the rows; with --csv, appends them (the
header once).
"""

import csv
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from mmjax import population, steps, train  # noqa: E402
from mmjax.errors import Parser, UserError, run  # noqa: E402
from mmjax.workdir import WorkDir  # noqa: E402

SETTINGS = ["type", "n_layer", "n_head", "n_embd", "batch_size", "learning_rate", "dropout", "weight_decay",
            "ema_decay", "lr_schedule", "warmup_steps", "lr_decay_factor", "max_steps", "seed"]
FIELDS = ["run", "member", *SETTINGS, "steps", "best_step", "val_loss", "test_loss", "minutes"]


def minutes(workdir):
    checkpoints = [p for p in (workdir.path / "checkpoints").glob("*/*") if p.name.isdigit()]
    end = max(p.stat().st_mtime for p in checkpoints)
    return (end - (workdir.path / "config.json").stat().st_mtime) / 60


def chosen(evaluations):
    """The evaluation validation picks: the lowest val_loss (the first, on a tie)."""
    return min(evaluations, key=lambda m: m["val_loss"])


def ensemble_of_best(workdir, config):
    """(val_loss, test_loss) of the mixture of the members' best-by-validation checkpoints."""
    dataset, configs = workdir.load_dataset(), population.member_configs(config)
    best = workdir.checkpoints.restore(population.abstract_checkpoint(config, dataset.vocab))["best"]
    states = population.create_states(config, dataset.vocab, configs)
    states = states.replace(params=best["params"], batch_stats=best["batch_stats"])
    sets = train.evaluation_sets(dataset, config)
    return tuple(float(steps.evaluate(states, *sets[name], config.eval_batch_size, step=steps.population_eval_step)[-1])
                 for name in ("val_loss", "test_loss"))


def rows(path):
    workdir = WorkDir(path, read_only=True)
    config, metrics = workdir.load_config(), workdir.metrics()
    if "val_loss" not in next((m for m in metrics if "test_loss" in m), {}):
        raise UserError(f"{path} has no validation set, so nothing was chosen on one: train with --val-size")
    # steps: those trained (below max_steps for a run stopped early)
    common = dict(run=workdir.path.name, steps=metrics[-1]["step"], minutes=f"{minutes(workdir):.1f}")
    if not population.is_population(config):
        pick = chosen([m for m in metrics if "val_loss" in m])
        yield {**common, "member": "", **{k: config[k] for k in SETTINGS}, "best_step": pick["step"],
               "val_loss": f"{pick['val_loss']:.4f}", "test_loss": f"{pick['test_loss']:.4f}"}
        return
    for i, member in enumerate(population.member_configs(config)):
        pick = chosen([m for m in metrics if m.get("member") == i and "val_loss" in m])
        yield {**common, "member": i, **{k: member[k] for k in SETTINGS}, "best_step": pick["step"],
               "val_loss": f"{pick['val_loss']:.4f}", "test_loss": f"{pick['test_loss']:.4f}"}
    val, test = ensemble_of_best(workdir, config)
    members = population.member_configs(config)
    shared = {k: members[0][k] if all(m[k] == members[0][k] for m in members) else "all" for k in SETTINGS}
    yield {**common, "member": "ensemble", **shared, "best_step": "each best",
           "val_loss": f"{val:.4f}", "test_loss": f"{test:.4f}"}


def main(args):
    table = [row for path in args.work_dirs for row in rows(path)]
    writer = csv.DictWriter(sys.stdout, FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(table)
    if args.csv:
        path = pathlib.Path(args.csv)
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, FIELDS, lineterminator="\n")
            if new:
                writer.writeheader()
            writer.writerows(table)


if __name__ == "__main__":
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dirs", nargs="+")
    parser.add_argument("--csv", help="append the rows to this CSV file")
    run(main, parser)
