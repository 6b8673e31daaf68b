"""The command lines: `mmjax-train` (train.py, `python -m mmjax train`), `mmjax-sample` (sample.py,
`python -m mmjax sample`) and `mmjax-score` (`python -m mmjax score`) parse their flags (mmjax/flags.py) into
a config and call the Python API."""

import functools
import json
import pathlib
import shlex
import sys
import time

import jax

from mmjax import config as config_lib
from mmjax import devices, inference, population, sampling, scoring, stopping, train
from mmjax.errors import UserError, run
from mmjax.flags import overrides, sample_options, sample_parser, score_parser, train_parser
from mmjax.workdir import WorkDir

SAMPLING = ("num_samples", "seed", "temperature", "top_k", "top_p")  # the config's fields for --sample-only

def resolve_config(args, workdir):
    """The flags given over the run's config (--resume, --sample-only: refused if they change its kind or the
    model's shape), or over the config file (--config FILE, or configs/TYPE.py)."""
    changes = overrides(args)
    if args.resume or args.sample_only:
        saved = workdir.load_config()
        config = config_lib.override(saved.copy_and_resolve_references(), changes)
        config_lib.check_resumable(saved, config, workdir.path)
        return config
    if workdir.has_run:
        raise UserError(f"{workdir.path} already holds a run: pass --resume to continue it, or another -o")
    if args.config:
        return config_lib.load_config(args.config, **changes)
    return config_lib.get_config(changes.pop("type", "transformer"), **changes)


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


def train_main(args, whole_process=False):
    """`whole_process`: the command owns the process (train.py, mmjax-train), so it may set how many devices
    the CPU has; called from Python (a notebook), it leaves the session's jax as it is."""
    workdir = WorkDir(args.work_dir, read_only=args.sample_only)
    config = resolve_config(args, workdir)
    peers = (args.coordinator, args.num_processes, args.process_id, args.join_timeout) if args.distributed else None
    splits = population.is_population(config) or (args.sample_only and splits_rows(config.num_samples))
    devices.setup(args.device, peers, whole_process=whole_process, cpu_device_per_core=whole_process and splits)
    if args.input_file and (args.resume or args.sample_only):  # makemore's habit: accepted if they are the
        workdir.check_input(args.input_file, args.encoding)      # run's words, and not used
    if args.sample_only:
        return print_samples(workdir, **{k: config[k] for k in SAMPLING})
    try:
        train.train_and_evaluate(config, workdir, None if args.resume else args.input_file, encoding=args.encoding,
                                 max_word_length=args.max_word_length, progress=not args.no_progress)
    except stopping.Stopped as e:
        if jax.process_index() == 0:
            print(f"stopped at step {e.step}: continue with {resume_command(args)}", file=sys.stderr)
        sys.exit(e.exit_status)


def sample_main(args, whole_process=False):
    """`whole_process`: as for train_main."""
    options, workdir = sample_options(args), WorkDir(args.work_dir, read_only=True)
    plain = args.most_likely is None and not (args.unique or args.new or filtered(options))
    splits = not plain or splits_rows(options["num_samples"] or workdir.load_config().num_samples, args.batch_size)
    devices.setup(cpu_device_per_core=whole_process and splits, whole_process=whole_process)
    if args.most_likely is None:
        words = print_samples(workdir, **options)
    else:
        words = print_most_likely(workdir, args.most_likely, **options)
    if args.out:
        try:
            pathlib.Path(args.out).write_text("".join(w + "\n" for w in words), encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write --out {args.out} ({e.strerror}): pass a writable path") from None


def filtered(options):
    """Whether sampling options name a filter (a suffix, a regex, ...), which the sampler's stream is drawn through:
    sampling.Constraint's own answer, so the device choice and the draws line agree with the sampler."""
    return sampling.Constraint(**{f: options[f] for f in sampling.FILTERS if options.get(f) is not None}).filters


def splits_rows(num_samples, batch_size=1000):
    """Whether sampling `num_samples` decodes more than sampling.MIN_ROWS rows, which split over a CPU device per
    core. Up to that, one device runs them, in the program that printed the samples while training: the
    compilation cache's, whose keys count the process's devices too."""
    return min(num_samples, batch_size) > sampling.MIN_ROWS


def print_samples(workdir, member=None, ensemble=False, **options):
    """Samples from the best checkpoint (a population's: `member`, its best, or the `ensemble`), printed as
    makemore's three groups; process 0 samples for all."""
    loaded = inference.load(workdir, member, ensemble)  # by every process: orbax restores on all of them
    if jax.process_index() != 0:
        return []
    words, draws = inference.draw(loaded, **options)
    print(sampling.report(words, loaded.dataset))
    through_filter = filtered(options)
    if options.get("unique") or options.get("new") or through_filter:
        rate = f", acceptance rate {len(words) / draws:.2%}" if through_filter else ""
        print(f"{len(words)} names from {draws} draws: {draws / len(words):.2f} draws per name{rate}")
    return words


def print_most_likely(workdir, n, member=None, ensemble=False, new=False, unique=False, batch_size=None, **options):
    """sample.py --most-likely N: the table of the N most probable names, their probabilities and whether the
    run's words have them; -n and the sampling options do not apply (--unique changes nothing)."""
    given = [k for k in SAMPLING if k != "seed" and options.pop(k, None) is not None]
    if given:
        raise UserError(f"--most-likely lists the names most probable under the model itself (temperature 1, every "
                        f"token), so --{given[0].replace('_', '-')} does not apply: drop it")
    options.pop("seed", None)
    loaded = inference.load(workdir, member, ensemble)
    start = time.perf_counter()
    found, expanded = scoring.search(loaded, n, sampling.Constraint(**options), new=new)
    print(scoring.most_likely_table(found, loaded.dataset))
    print(f"the {len(found)} most likely names hold {sum(p for _, p in found):.2%} of the model's probability; "
          f"{expanded:,} prefixes expanded in {time.perf_counter() - start:.2f} s")
    return [word for word, _ in found]


def score_main(args, whole_process=False):
    """`whole_process`: as for train_main (the rows of each batch split over the CPU's cores)."""
    devices.setup(cpu_device_per_core=whole_process, whole_process=whole_process)
    names = args.names + [name for path in args.file for name in scoring.read_names(path)]
    if not names:
        raise UserError("no names to score: give them after the flags, or --file F with one name a line")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be 1 or more, got {args.batch_size}: pass a positive number")
    scores = scoring.score(args.work_dir, names, args.batch_size, args.member, args.ensemble)
    print(json.dumps(scores) if args.json else scoring.score_table(scores))
    if args.plot:
        from mmjax import plots  # matplotlib: only for --plot

        plots.surprisal(scores, args.plot)


def train_command(argv=None, prog=None):
    """The command line; `argv` None: the process's own (sys.argv), as train.py and mmjax-train call it."""
    try:
        run(functools.partial(train_main, whole_process=argv is None), train_parser(prog), argv, argv is None)
    except KeyboardInterrupt:  # Ctrl-C outside training (which stops at a step instead): nothing to save
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def sample_command(argv=None, prog=None):
    run(functools.partial(sample_main, whole_process=argv is None), sample_parser(prog), argv, argv is None)


def score_command(argv=None, prog=None):
    run(functools.partial(score_main, whole_process=argv is None), score_parser(prog), argv, argv is None)
