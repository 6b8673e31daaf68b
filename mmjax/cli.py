"""What train.py and sample.py do, as functions of their parsed flags."""

import argparse
import pathlib
import sys

import jax

from mmjax import config as config_lib
from mmjax import input_pipeline, sampling, train
from mmjax.errors import NonFiniteLossError, UserError
from mmjax.models import create_model, model_fields
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
    (("--eval-every",), int, "steps between evaluations and checkpoints"),
    (("--log-every",), int, "steps per compiled dispatch; the loss is logged after each"),
    (("--compute-dtype",), str, "float32, or bfloat16 for mixed precision on GPU/TPU"),
    (("--top-k",), int, "sample from the k most likely tokens only (-1: all)"),
    (("--top-p",), float, "sample from the smallest set of tokens whose mass reaches this"),
    (("--temperature",), float, "sampling temperature"),
    (("--num-samples", "-n"), int, "number of samples to print"),
]


LONG_WORD = 64  # longer words make every step slower (block size follows the longest): warn


class Parser(argparse.ArgumentParser):
    """argparse, with a bad flag reported as every other bad input: one line, exit status 2."""

    def error(self, message):
        raise UserError(f"{message}: see {self.prog} -h")


def warn(message):
    print(f"warning: {message}", file=sys.stderr)


def train_parser():
    parser = Parser(description="Train a character-level model on a file of words.")
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
    return parser


def overrides(args):
    fields = [flags[0][2:].replace("-", "_") for flags, _, _ in CONFIG_FLAGS] + ["dedupe", "manual_grad"]
    return {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}


def resolve_config(args, configs_dir):
    """The config file's fields (--config, or configs_dir/TYPE.py), overridden by the flags given."""
    changes = overrides(args)
    config = config_lib.load_config(args.config or pathlib.Path(configs_dir) / f"{changes.get('type', 'transformer')}.py")
    config.update(changes)
    config_lib.validate(config)
    return config


def resumed_config(workdir, args):
    config = workdir.load_config()
    changes = overrides(args)
    for field in ["type", *model_fields(config.type)]:
        if field in changes and changes[field] != config[field]:
            raise UserError(f"{workdir.path} holds a {field}={config[field]} run, not {field}={changes[field]}: "
                            "drop the flag or pass another -o")
    config.update(changes)
    config_lib.validate(config)
    return config


def train_main(args, configs_dir):
    if args.distributed:  # before anything touches the devices; finds the others on TPU pods, SLURM, ...
        try:
            jax.distributed.initialize()
        except ValueError as e:
            raise UserError(f"--distributed found no cluster to join ({str(e).rstrip('.')}): run train.py once "
                            "per host on a TPU pod or under SLURM or Open MPI, or drop --distributed") from None
    workdir = WorkDir(args.work_dir, read_only=args.sample_only)
    if args.resume or args.sample_only:
        if args.input_file:
            raise UserError("--resume and --sample-only use the work dir's own words: drop -i, or pass another -o")
        config = resumed_config(workdir, args)
        dataset = workdir.load_dataset()
        if args.sample_only:
            return print_samples(workdir, config, dataset)
        workdir.check_writable()
        state = workdir.restore(train.create_train_state(config, dataset.vocab))
        workdir.drop_metrics_after(int(state.step))
    else:
        config = resolve_config(args, configs_dir)
        path = args.input_file or input_pipeline.default_words_path()
        if args.max_word_length is not None and args.max_word_length < 1:
            raise UserError(f"--max-word-length must be positive, got {args.max_word_length}: pass 1 or more")
        words = input_pipeline.read_words(path, args.encoding, config.dedupe, args.max_word_length)
        dataset = input_pipeline.Dataset.from_words(words, config.seed)
        state = train.create_train_state(config, dataset.vocab)
        workdir.create(config, dataset)
        if jax.process_index() == 0:
            print(f"{len(words)} words from {path}: {len(dataset.train_words)} train, {len(dataset.test_words)} test, "
                  f"vocabulary {''.join(dataset.vocab.chars)!r} ({dataset.vocab.size} tokens), "
                  f"block size {dataset.vocab.block_size}")
            if not dataset.test_words:
                warn(f"no test set (it takes at least 10 words, the input has {len(words)}): training on all of "
                     "them; the best checkpoint is the one with the lowest training loss")
            if args.max_word_length is None and dataset.vocab.max_word_length > LONG_WORD:
                warn(f"the longest word has {dataset.vocab.max_word_length} characters and every step computes "
                     f"that many positions: pass --max-word-length to refuse lines over {LONG_WORD}")
    train.train_and_evaluate(config, workdir, state, dataset, progress=not args.no_progress)


def sample_parser():
    parser = Parser(description="Sample words from the best checkpoint of a work dir.")
    parser.add_argument("--work-dir", "-o", default="out", help="a work dir written by train.py")
    parser.add_argument("--num-samples", "-n", type=int, default=None, help="number of samples (default 50)")
    parser.add_argument("--seed", type=int, default=None, help="same seed, same samples (default: the run's)")
    parser.add_argument("--temperature", type=float, default=None, help="softmax temperature; 0 is greedy")
    parser.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens only")
    parser.add_argument("--top-p", type=float, default=None, help="sample from the smallest set of tokens whose mass reaches this")
    parser.add_argument("--prefix", default="", help="every sample starts with these characters")
    parser.add_argument("--batch-size", dest="sample_batch_size", type=int, default=1000,
                        help="samples per compiled batch (bounds memory)")
    parser.add_argument("--out", help="also write every sample to this file, one per line")
    return parser


def sample_main(args):
    workdir = WorkDir(args.work_dir, read_only=True)
    config = workdir.load_config()
    config.update({k: v for k, v in vars(args).items() if k in config and v is not None})
    if config.temperature < 0 or config.num_samples <= 0 or args.sample_batch_size <= 0 or not 0 < config.top_p <= 1:
        raise UserError("need --temperature >= 0, --num-samples and --batch-size > 0, 0 < --top-p <= 1")
    dataset = workdir.load_dataset()
    if len(args.prefix) >= dataset.vocab.block_size:
        raise UserError(f"--prefix is longer than the longest word ({dataset.vocab.max_word_length}): shorten it")
    unknown = "".join(sorted(set(args.prefix) - set(dataset.vocab.chars)))
    if unknown:
        raise UserError(f"--prefix has characters {unknown!r} that are not in the vocabulary: "
                        f"use only {''.join(dataset.vocab.chars)!r}")
    words = print_samples(workdir, config, dataset, prefix=args.prefix, batch_size=args.sample_batch_size)
    if args.out:
        try:
            pathlib.Path(args.out).write_text("".join(w + "\n" for w in words), encoding="utf-8")
        except OSError as e:
            raise UserError(f"cannot write --out {args.out} ({e.strerror}): pass a writable path") from None


def print_samples(workdir, config, dataset, **options):
    state = workdir.restore(train.create_train_state(config, dataset.vocab), which="best")
    if jax.process_index() != 0:  # process 0 samples for all
        return []
    model = create_model(config, dataset.vocab.size, dataset.vocab.block_size)
    words = sampling.sample_words(model, {"params": state.params, "batch_stats": state.batch_stats}, dataset.vocab,
                                  config.seed, config.num_samples, temperature=config.temperature,
                                  top_k=config.top_k, top_p=config.top_p, **options)
    print(sampling.report(words, dataset))
    return words


def run(main, parser, argv=None):
    """Runs main(parsed flags); a UserError (exit status 2) or a non-finite loss (3) is one line on stderr."""
    try:
        main(parser.parse_args(argv))
    except (UserError, NonFiniteLossError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(e.exit_status)
