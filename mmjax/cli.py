"""The command lines: `mmjax-train` (train.py, `python -m mmjax train`) and `mmjax-sample` (sample.py,
`python -m mmjax sample`) parse their flags into a config and call the Python API."""

import argparse
import functools
import json
import os
import pathlib
import shlex
import sys

import jax
import jax.extend.backend

from mmjax import backprop, diagnostics, inference, losses, population, sampling, stopping, train
from mmjax import config as config_lib
from mmjax.errors import Parser, UserError, run
from mmjax.workdir import WorkDir

# makemore.py's flags (and a few more) that override fields of the config file.
CONFIG_FLAGS = [
    (("--type",), str, "model type: the config file configs/TYPE.py"),
    (("--max-steps",), int, "number of optimisation steps; -1: until stopped (makemore's default; mmjax's is 10000)"),
    (("--batch-size", "-b"), int, "batch size"),
    (("--learning-rate", "-l"), float, "AdamW learning rate"),
    (("--weight-decay", "-w"), float, "AdamW weight decay"),
    (("--grad-clip",), float, "scale gradients down to at most this global norm (0: off)"),
    (("--dropout",), float, "dropout rate in training, in [0, 1) (0, the default, is off; see README)"),
    (("--ema-decay",), float, "evaluate, sample and keep as best an average of the parameters with this decay "
                              "per step, such as 0.999 (0, the default, is off; see README)"),
    (("--val-size",), int, "hold out this many training words as a validation set, which picks the best "
                           "checkpoint (0, the default: none, the test set does)"),
    (("--n-layer",), int, "number of layers"),
    (("--n-head",), int, "number of attention heads"),
    (("--n-embd",), int, "embedding channels"),
    (("--n-embd2",), int, "hidden channels"),
    (("--seed",), int, "seed of the split, the initialisation and the batches"),
    (("--split-seed",), int, "seed of the train/test split alone (default: --seed)"),
    (("--population",), int, "train this many models at once, seeds seed, seed+1, ... (see README)"),
    (("--eval-every",), int, "steps between evaluations and checkpoints"),
    (("--log-every",), int, "steps per compiled dispatch; the loss is logged after each"),
    (("--compute-dtype",), str, "float32 (true float32 on every device), or tf32 or bfloat16: faster on GPU/TPU"),
    (("--top-k",), int, "sample from the k most likely tokens only (-1: all)"),
    (("--top-p",), float, "sample from the smallest set of tokens whose mass reaches this"),
    (("--temperature",), float, "sampling temperature"),
    (("--num-samples", "-n"), int, "number of samples to print"),
    (("--sample-every",), int, "print 10 samples every this many steps, after the dispatch that gets there "
                               "(default 200; 0: never)"),
]

# makemore's --device names, and the jax platform each one is
PLATFORMS = {"cpu": "cpu", "cuda": "cuda", "gpu": "cuda", "tpu": "tpu", "mps": "METAL"}


def device_flag(text):
    """--device: a name of PLATFORMS, or cuda:N (gpu:N) for the one GPU N, as makemore and PyTorch write it."""
    name, colon, index = text.partition(":")
    if name not in PLATFORMS or colon and not (PLATFORMS[name] == "cuda" and index.isdigit()):
        raise argparse.ArgumentTypeError(f"unknown device {text!r}: choose cpu, cuda, cuda:N, gpu, mps or tpu")
    return text


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
    parser.add_argument("--device", type=device_flag, help="cpu, cuda (or gpu), cuda:N (GPU N alone), tpu, or mps "
                        "(jax's Metal plugin): the jax platform to train on (default: jax's choice, an accelerator "
                        "if there is one)")
    parser.add_argument("--num-workers", type=int, help="makemore's DataLoader workers: accepted, and no effect "
                        "(the words live on the device and each step draws its batch there)")
    parser.set_defaults(prog=parser.prog)  # for the command that continues a stopped run
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


def choose_platform(device):
    """Makes jax start `device`'s platform alone, when it starts (so no GPU memory is taken by a CPU run)."""
    name, _, index = device.partition(":")
    jax.config.update("jax_platforms", PLATFORMS[name])
    if index:
        jax.config.update("jax_cuda_visible_devices", index)


def start_platform(device):
    """Starts the platform choose_platform chose; one jax does not see is a UserError naming those it sees."""
    name = device.partition(":")[0]
    platform = PLATFORMS[name]
    try:
        jax.devices()
    except Exception:  # RuntimeError, or an AssertionError from jax when no GPU is visible
        jax.config.update("jax_platforms", "")
        jax.extend.backend.clear_backends()
        seen = sorted(jax.extend.backend.backends())
        raise UserError(f"--device {device}: jax sees no {platform} device here, only {', '.join(seen)}: "
                        f"pass --device {seen[0]}, or install jax for {name} (README: GPU, TPU and several devices)"
                        ) from None


def resume_command(args):
    """The command that continues a stopped run: the flags given, without -i (the run has its words), and
    --resume."""
    argv = ["-o", args.work_dir]
    for action in train_parser()._actions:
        value = getattr(args, action.dest, None)
        if action.dest in ("help", "work_dir", "input_file", "resume") or value in (None, action.default):
            continue
        flag = min(action.option_strings, key=len)
        argv += [flag] if action.nargs == 0 else [flag, str(value)]
    command = ["python", sys.argv[0]] if args.prog.endswith(".py") else shlex.split(args.prog)
    return shlex.join([*command, *argv, "--resume"])


def one_cpu_device_per_core():
    """The CPU as a device per core, before the backend starts: XLA:CPU runs a small model's operations on
    about one core, and members (README: Many models at once) or sampled rows split over devices keep them
    all busy. Called for populations and sampling, never to train one model (its data would be split); not
    when the user set the CPU's device count, and not once jax has started."""
    if jax.config.jax_num_cpu_devices == -1 and "device_count" not in os.environ.get("XLA_FLAGS", ""):
        try:
            jax.config.update("jax_num_cpu_devices", len(os.sched_getaffinity(0)))
        except RuntimeError:  # the backend has started
            pass


def trains_a_population(args):
    """Whether the command trains a population: by its flags, its --config file, or (resuming) its work dir."""
    try:
        if args.resume:
            saved = json.loads((pathlib.Path(args.work_dir) / "config.json").read_text())
            return bool(args.population or args.sweep or saved.get("population") or saved.get("sweep"))
        return population.is_population(resolve_config(args))
    except (OSError, ValueError, UserError):  # no run there, a damaged one, or a bad flag: train_main says so
        return False


def train_main(args, whole_process=False):
    """`whole_process`: the command owns the process (train.py, mmjax-train), so it may set how many devices
    the CPU has; called from Python (a notebook), it leaves the session's jax as it is."""
    if whole_process and (args.sample_only or trains_a_population(args)):
        one_cpu_device_per_core()
    if args.device:  # before any backend starts; checked once --distributed has joined the others
        choose_platform(args.device)
    if args.distributed:  # before anything touches the devices; finds the others on TPU pods, SLURM, ...
        try:
            jax.distributed.initialize()
        except ValueError as e:
            raise UserError(f"--distributed found no cluster to join ({str(e).rstrip('.')}): run train.py once "
                            "per host on a TPU pod or under SLURM or Open MPI, or drop --distributed") from None
    if args.device:
        start_platform(args.device)
    if args.max_word_length is not None and args.max_word_length < 1:
        raise UserError(f"--max-word-length must be positive, got {args.max_word_length}: pass 1 or more")
    if args.population is not None and args.population < 1:
        raise UserError(f"--population must be at least 1, got {args.population}: pass the number of models "
                        "to train at once")
    workdir = WorkDir(args.work_dir, read_only=args.sample_only)
    if args.resume or args.sample_only:
        config = resumed_config(workdir, args)
        if args.input_file:  # makemore's habit: accepted if the file holds the run's words, not used
            workdir.check_input(args.input_file, args.encoding)
        if args.sample_only:
            return print_samples(workdir, config)
    else:
        config = resolve_config(args)
        if workdir.has_run:
            raise UserError(f"{workdir.path} already holds a run: pass --resume to continue it, or another -o")
    value_and_grad = backprop.value_and_grad if config.manual_grad else losses.value_and_grad
    input_file = None if args.resume else args.input_file
    options = dict(encoding=args.encoding, max_word_length=args.max_word_length, value_and_grad=value_and_grad,
                   progress=not args.no_progress)
    try:
        if population.is_population(config):
            population.train_and_evaluate(config, workdir, input_file, **options)
        else:
            train.train_and_evaluate(config, workdir, input_file, eval_hooks=[diagnostics.record], **options)
    except stopping.Stopped as e:
        if jax.process_index() == 0:
            print(f"stopped at step {e.step}: continue with {resume_command(args)}", file=sys.stderr)
        sys.exit(e.exit_status)


def sample_parser(prog=None):
    parser = Parser(prog=prog, description="Sample words from the best checkpoint of a work dir.")
    parser.add_argument("--work-dir", "-o", default="out", help="a work dir written by train.py")
    parser.add_argument("--num-samples", "-n", type=int, default=None, help="number of samples (default 50)")
    parser.add_argument("--seed", type=int, default=None, help="same seed, same samples (default: the run's)")
    parser.add_argument("--temperature", type=float, default=None, help="softmax temperature; 0 is greedy")
    parser.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens only")
    parser.add_argument("--top-p", type=float, default=None, help="sample from the smallest set of tokens whose mass reaches this")
    parser.add_argument("--prefix", default="", help="every sample starts with these characters")
    parser.add_argument("--batch-size", type=int, default=1000, help="rows decoded together (bounds memory)")
    parser.add_argument("--out", help="also write every sample to this file, one per line")
    parser.add_argument("--unique", action="store_true", help="no name twice (draws until it has -n)")
    parser.add_argument("--new", action="store_true", help="no name of the training or test words")
    parser.add_argument("--member", type=int, help="a population's member I (default: its best)")
    parser.add_argument("--ensemble", action="store_true", help="a population: sample from all members' mixture")
    return parser


def sample_main(args, whole_process=False):
    """`whole_process`: as for train_main."""
    if whole_process:
        one_cpu_device_per_core()
    workdir = WorkDir(args.work_dir, read_only=True)
    config = workdir.load_config()
    options = {k: getattr(args, k) for k in ("num_samples", "seed", "temperature", "top_k", "top_p")}
    words = print_samples(workdir, config, prefix=args.prefix, batch_size=args.batch_size, unique=args.unique,
                          new=args.new, member=args.member, ensemble=args.ensemble, **options)
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
    words, draws = inference.draw(loaded, **{**defaults, **given})
    print(sampling.report(words, loaded.dataset))
    if options.get("unique") or options.get("new"):
        print(f"{len(words)} names from {draws} draws: {draws / len(words):.2f} draws per name")
    return words


def train_command(argv=None, prog=None):
    """The command line; `argv` None: the process's own (sys.argv), as train.py and mmjax-train call it."""
    try:
        run(functools.partial(train_main, whole_process=argv is None), train_parser(prog), argv)
    except KeyboardInterrupt:  # Ctrl-C outside training (which stops at a step instead): nothing to save
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def sample_command(argv=None, prog=None):
    run(functools.partial(sample_main, whole_process=argv is None), sample_parser(prog), argv)
