"""The command lines: `mmjax-train` (train.py, `python -m mmjax train`) and `mmjax-sample` (sample.py,
`python -m mmjax sample`) parse their flags into a config and call the Python API."""

import pathlib

import jax

from mmjax import backprop, diagnostics, inference, losses, population, sampling, train
from mmjax import config as config_lib
from mmjax.errors import Parser, UserError, run
from mmjax.workdir import WorkDir

# makemore.py's flags (and a few more) that override fields of the config file.
CONFIG_FLAGS = [
    (("--type",), str, "model type: the config file configs/TYPE.py"),
    (("--max-steps",), int, "number of optimisation steps"),
    (("--batch-size", "-b"), int, "batch size"),
    (("--learning-rate", "-l"), float, "AdamW learning rate"),
    (("--weight-decay", "-w"), float, "AdamW weight decay"),
    (("--grad-clip",), float, "scale gradients down to at most this global norm (0: off)"),
    (("--n-layer",), int, "number of layers"),
    (("--n-head",), int, "number of attention heads"),
    (("--n-embd",), int, "embedding channels"),
    (("--n-embd2",), int, "hidden channels"),
    (("--seed",), int, "seed of the split, the initialisation and the batches"),
    (("--split-seed",), int, "seed of the train/test split alone (default: --seed)"),
    (("--population",), int, "train this many models at once, seeds seed, seed+1, ... (see README)"),
    (("--eval-every",), int, "steps between evaluations and checkpoints"),
    (("--log-every",), int, "steps per compiled dispatch; the loss is logged after each"),
    (("--compute-dtype",), str, "float32, or bfloat16 for mixed precision on GPU/TPU"),
    (("--top-k",), int, "sample from the k most likely tokens only (-1: all)"),
    (("--top-p",), float, "sample from the smallest set of tokens whose mass reaches this"),
    (("--temperature",), float, "sampling temperature"),
    (("--num-samples", "-n"), int, "number of samples to print"),
]


def train_parser(prog=None):
    parser = Parser(prog=prog, description="Train a character-level model on a file of words.")
    parser.add_argument("--input-file", "-i", help="one item per line (default: US baby names, see README)")
    parser.add_argument("--work-dir", "-o", default="out", help="where config, checkpoints and logs go")
    parser.add_argument("--config", help="a configs/*.py file (default: configs/TYPE.py)")
    parser.add_argument("--resume", action="store_true", help="continue the run in the work dir")
    parser.add_argument("--sample-only", action="store_true", help="only sample from the work dir's model")
    parser.add_argument("--encoding", default="utf-8", help="text encoding of the input file")
    parser.add_argument("--max-word-length", type=int, help="refuse input lines longer than this (default: no limit)")
    parser.add_argument("--dedupe", action="store_true", default=None, help="drop repeated lines before the split")
    parser.add_argument("--manual-grad", action="store_true", default=None,
                        help="mlp_bn: gradients by lecture 4's manual backward pass (mmjax/backprop.py)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--distributed", action="store_true",
                        help="one of several processes (hosts): jax.distributed.initialize() first; see README")
    for flags, kind, text in CONFIG_FLAGS:
        parser.add_argument(*flags, type=kind, default=None, help=text)
    parser.add_argument("--sweep", action="append", metavar="FIELD=V1,V2",
                        help="train the population for each of these values (repeatable: the grid); fields: "
                             + ", ".join(population.SWEEPABLE))
    return parser


def overrides(args):
    fields = [flags[0][2:].replace("-", "_") for flags, _, _ in CONFIG_FLAGS] + ["dedupe", "manual_grad"]
    changes = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    if getattr(args, "sweep", None):
        changes["sweep"] = ";".join(args.sweep)
    return changes


def resolve_config(args):
    """The config file's fields (--config FILE, or configs/TYPE.py), overridden by the flags given."""
    changes = overrides(args)
    if args.config:
        return config_lib.load_config(args.config, **changes)
    return config_lib.get_config(changes.pop("type", "transformer"), **changes)


def resumed_config(workdir, args):
    """The run's config, overridden by the flags given; none may change the model's shape."""
    saved, changes = workdir.load_config(), overrides(args)
    config = config_lib.override(saved.copy_and_resolve_references(), changes)
    field = train.mismatched_field(saved, config)
    if field:
        raise UserError(f"{workdir.path} holds a {field}={saved[field]} run, not {field}={changes[field]}: "
                        "drop the flag or pass another -o")
    return config


def train_main(args):
    if args.distributed:  # before anything touches the devices; finds the others on TPU pods, SLURM, ...
        try:
            jax.distributed.initialize()
        except ValueError as e:
            raise UserError(f"--distributed found no cluster to join ({str(e).rstrip('.')}): run train.py once "
                            "per host on a TPU pod or under SLURM or Open MPI, or drop --distributed") from None
    if args.max_word_length is not None and args.max_word_length < 1:
        raise UserError(f"--max-word-length must be positive, got {args.max_word_length}: pass 1 or more")
    if args.population is not None and args.population < 1:
        raise UserError(f"--population must be at least 1, got {args.population}: pass the number of models "
                        "to train at once")
    workdir = WorkDir(args.work_dir, read_only=args.sample_only)
    if args.resume or args.sample_only:
        if args.input_file:
            raise UserError("--resume and --sample-only use the work dir's own words: drop -i, or pass another -o")
        config = resumed_config(workdir, args)
        if args.sample_only:
            return print_samples(workdir, config)
    else:
        config = resolve_config(args)
        if workdir.has_run:
            raise UserError(f"{workdir.path} already holds a run: pass --resume to continue it, or another -o")
    value_and_grad = backprop.value_and_grad if config.manual_grad else losses.value_and_grad
    if population.is_population(config):
        return population.train_and_evaluate(config, workdir, args.input_file, encoding=args.encoding,
                                             max_word_length=args.max_word_length, value_and_grad=value_and_grad,
                                             progress=not args.no_progress)
    train.train_and_evaluate(config, workdir, args.input_file, encoding=args.encoding,
                             max_word_length=args.max_word_length, value_and_grad=value_and_grad,
                             eval_hooks=[diagnostics.record], progress=not args.no_progress)


def sample_parser(prog=None):
    parser = Parser(prog=prog, description="Sample words from the best checkpoint of a work dir.")
    parser.add_argument("--work-dir", "-o", default="out", help="a work dir written by train.py")
    parser.add_argument("--num-samples", "-n", type=int, default=None, help="number of samples (default 50)")
    parser.add_argument("--seed", type=int, default=None, help="same seed, same samples (default: the run's)")
    parser.add_argument("--temperature", type=float, default=None, help="softmax temperature; 0 is greedy")
    parser.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens only")
    parser.add_argument("--top-p", type=float, default=None, help="sample from the smallest set of tokens whose mass reaches this")
    parser.add_argument("--prefix", default="", help="every sample starts with these characters")
    parser.add_argument("--batch-size", type=int, default=1000, help="samples per compiled batch (bounds memory)")
    parser.add_argument("--out", help="also write every sample to this file, one per line")
    parser.add_argument("--member", type=int, help="a population's member I (default: its best)")
    parser.add_argument("--ensemble", action="store_true", help="a population: sample from all members' mixture")
    return parser


def sample_main(args):
    workdir = WorkDir(args.work_dir, read_only=True)
    config = workdir.load_config()
    options = {k: getattr(args, k) for k in ("num_samples", "seed", "temperature", "top_k", "top_p")}
    words = print_samples(workdir, config, prefix=args.prefix, batch_size=args.batch_size, member=args.member,
                          ensemble=args.ensemble, **options)
    if args.out:
        try:
            pathlib.Path(args.out).write_text("".join(w + "\n" for w in words), encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write --out {args.out} ({e.strerror}): pass a writable path") from None


def print_samples(workdir, config, member=None, ensemble=False, **options):
    """Samples from the best checkpoint (a population's: `member`, its best, or the `ensemble`), printed as
    makemore's three groups; process 0 samples for all."""
    loaded = population.load(workdir, member, ensemble)  # by every process: orbax restores on all of them
    if jax.process_index() != 0:
        return []
    given = {k: v for k, v in options.items() if v is not None}
    defaults = {k: config[k] for k in ("num_samples", "seed", "temperature", "top_k", "top_p")}
    words = inference.sample(loaded, **{**defaults, **given})
    print(sampling.report(words, loaded.dataset))
    return words


def train_command(argv=None, prog=None):
    run(train_main, train_parser(prog), argv)


def sample_command(argv=None, prog=None):
    run(sample_main, sample_parser(prog), argv)
