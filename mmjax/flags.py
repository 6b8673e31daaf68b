"""The command lines' flags: train.py's (makemore.py's, and more), each overriding the config field of its
name, and sample.py's."""

from mmjax import devices, population
from mmjax.errors import Parser, UserError

# makemore.py's flags (and a few more) that override fields of the config file.
CONFIG_FLAGS = [
    (("--type",), str, "model type: the config file configs/TYPE.py"),
    (("--max-steps",), int, "number of optimisation steps; -1: until stopped (makemore's default; mmjax's is 10000)"),
    (("--batch-size", "-b"), int, "batch size"),
    (("--learning-rate", "-l"), float, "AdamW learning rate"),
    (("--weight-decay", "-w"), float, "AdamW weight decay"),
    (("--grad-clip",), float, "scale gradients down to at most this global norm (0: off)"),
    (("--dropout",), float, "dropout rate in training, in [0, 1) (0, the default: off; docs/regularisation.md)"),
    (("--ema-decay",), float, "evaluate, sample and keep as best an average of the parameters, such as 0.999 (0: off)"),
    (("--val-size",), int, "hold out this many training words as a validation set, which picks the best checkpoint"),
    (("--n-layer",), int, "number of layers"),
    (("--n-head",), int, "number of attention heads"),
    (("--n-embd",), int, "embedding channels"),
    (("--n-embd2",), int, "hidden channels"),
    (("--seed",), int, "seed of the split, the initialisation and the batches"),
    (("--split-seed",), int, "seed of the train/test split alone (default: --seed)"),
    (("--population",), int, "train this many models at once, seeds seed, seed+1, ... (docs/populations.md)"),
    (("--eval-every",), int, "steps between evaluations and checkpoints"),
    (("--log-every",), int, "steps per compiled dispatch; the loss is logged after each"),
    (("--compute-dtype",), str, "float32 (true float32 on every device), or tf32 or bfloat16: faster on GPU/TPU"),
    (("--top-k",), int, "sample from the k most likely tokens only (-1: all)"),
    (("--top-p",), float, "sample from the smallest set of tokens whose mass reaches this"),
    (("--temperature",), float, "sampling temperature"),
    (("--num-samples", "-n"), int, "number of samples to print"),
    (("--sample-every",), int, "print 10 samples every this many steps (default 200; 0: never)"),
    (("--pbt-every",), int, "--pbt: evaluations between exploits (default 2)"),
    (("--pbt-fraction",), float, "--pbt: the bottom fraction by validation loss copies the top one (default 0.25)"),
    (("--pbt-perturb",), str, "--pbt: the factors, one drawn for each explored hyper-parameter (default 0.8,1.25)"),
    (("--pbt-fields",), str, "--pbt: the explored hyper-parameters (default learning_rate,weight_decay,dropout)"),
]


def train_parser(prog=None):
    parser = Parser(prog=prog, description="Train a character-level model on a file of words.")
    add = parser.add_argument
    add("--input-file", "-i", help="one item per line (default: US baby names, docs/usage.md)")
    add("--work-dir", "-o", default="out", help="where config, checkpoints and logs go")
    add("--config", help="a configs/*.py file (default: configs/TYPE.py)")
    add("--resume", action="store_true", help="continue the run in the work dir")
    add("--sample-only", action="store_true", help="only sample from the work dir's model")
    add("--encoding", default="utf-8", help="text encoding of the input file")
    add("--max-word-length", type=int, help="refuse input lines longer than this (default: no limit)")
    add("--dedupe", action="store_true", default=None, help="drop repeated lines before the split")
    add("--diagnostics", action="store_true", default=None, help="record lecture 3's statistics of activations, "
        "gradients and updates at each evaluation (on in configs/mlp_bn.py and wavenet.py; docs/lectures.md)")
    add("--manual-grad", action="store_true", default=None,
        help="mlp_bn: gradients by lecture 4's manual backward pass (mmjax/backprop.py)")
    add("--no-progress", action="store_true", help="no progress bar")
    add("--distributed", action="store_true", help="one of several processes (hosts) that train together; "
        "without a cluster manager also --coordinator, --num-processes, --process-id (docs/devices.md)")
    add("--coordinator", metavar="HOST:PORT", help="--distributed: process 0's address and a free port, the same "
        "on every process (default: $JAX_COORDINATOR_ADDRESS)")
    add("--num-processes", type=int, help="--distributed: how many processes train together")
    add("--process-id", type=int, help="--distributed: this process's number, 0 (the coordinator) to N-1")
    add("--join-timeout", type=int, default=60, help="--distributed: seconds to wait for the other processes")
    add("--device", type=devices.device_flag, help="cpu, cuda (or gpu), cuda:N (GPU N alone), tpu, or mps (jax's "
        "Metal plugin): the jax platform to train on (default: jax's choice, an accelerator if there is one)")
    add("--num-workers", type=int, help="makemore's DataLoader workers: accepted, and no effect (the words live "
        "on the device and each step draws its batch there)")
    parser.set_defaults(prog=parser.prog)  # for the command that continues a stopped run
    for flags, kind, text in CONFIG_FLAGS:
        add(*flags, type=kind, default=None, help=text)
    add("--sweep", action="append", metavar="FIELD=V1,V2", help="train the population for each of these values "
        "(repeatable: the grid); fields: " + ", ".join(population.SWEEPABLE))
    add("--pbt", action="store_true", default=None, help="population-based training: every --pbt-every "
        "evaluations the worst members copy the best and perturb their hyper-parameters (docs/populations.md)")
    return parser


def overrides(args):
    fields = [flags[0][2:].replace("-", "_") for flags, _, _ in CONFIG_FLAGS] + ["dedupe", "diagnostics", "manual_grad",
                                                                                "pbt"]
    changes = {f: getattr(args, f) for f in fields if getattr(args, f, None) is not None}
    if getattr(args, "sweep", None):
        changes["sweep"] = ";".join(args.sweep)
    if changes.get("population", 1) < 1:  # a config's 0 means one model; a flag asks for a population
        raise UserError(f"--population must be at least 1, got {changes['population']}: pass the number of models "
                        "to train at once")
    return changes


SAMPLE_FLAGS = [
    (("--num-samples", "-n"), dict(type=int, help="number of samples (default 50)")),
    (("--seed",), dict(type=int, help="same seed, same samples (default: the run's)")),
    (("--temperature",), dict(type=float, help="softmax temperature; 0 is greedy")),
    (("--top-k",), dict(type=int, help="sample from the k most likely tokens only")),
    (("--top-p",), dict(type=float, help="sample from the smallest set of tokens whose mass reaches this")),
    (("--prefix",), dict(default="", help="every sample starts with these characters")),
    (("--batch-size",), dict(type=int, default=1000, help="rows decoded together (bounds memory)")),
    (("--out",), dict(help="also write every sample to this file, one per line")),
    (("--unique",), dict(action="store_true", help="no name twice (draws until it has -n)")),
    (("--new",), dict(action="store_true", help="no name of the training or test words")),
    (("--member",), dict(type=int, help="a population's member I (default: its best)")),
    (("--ensemble",), dict(action="store_true", help="a population: sample from all members' mixture")),
    # the constraints: the plain sampler's stream with the other names left out (sampling.Constraint)
    (("--suffix",), dict(default="", help="only names that end with these characters")),
    (("--contains",), dict(default="", help="only names that contain these characters")),
    (("--regex",), dict(help="only names that match this Python regular expression (re.fullmatch)")),
    (("--min-length",), dict(type=int, help="only names of at least this many characters (prefix included)")),
    (("--max-length",), dict(type=int, help="only names of at most this many characters")),
    (("--most-likely",), dict(type=int, metavar="N", help="list the N most probable names instead, exactly, "
                              "best first (temperature 1; the constraints and --new apply)")),
]


def sample_parser(prog=None):
    parser = Parser(prog=prog, description="Sample words from the best checkpoint of a work dir.")
    parser.add_argument("--work-dir", "-o", default="out", help="a work dir written by train.py")
    for flags, options in SAMPLE_FLAGS:
        parser.add_argument(*flags, **options)
    return parser


def sample_options(args):
    """The sampler's keywords (inference.draw's) that sample.py's flags give."""
    dests = [flags[0][2:].replace("-", "_") for flags, _ in SAMPLE_FLAGS]
    return {dest: getattr(args, dest) for dest in dests if dest not in ("out", "most_likely")}


def score_parser(prog=None):
    from mmjax.scoring import SCORE_ROWS

    parser = Parser(prog=prog, description="Score names under the best checkpoint of a work dir: each name's "
                    "negative log-likelihood in nats (nll, the end of the name included, as the training loss "
                    "counts it), per character (nll / (letters + 1)), its perplexity (exp of that), the "
                    "surprisal of each character and of the end ('.'), and its percentile: the % of the run's "
                    "test words that are less likely per character (100: more typical than all of them).")
    add = parser.add_argument
    add("names", nargs="*", help="the names to score")
    add("--work-dir", "-o", default="out", help="a work dir written by train.py")
    add("--file", action="append", default=[], help="also score this file's names, one a line ('-': standard "
        "input; repeatable)")
    add("--json", action="store_true", help="a JSON list of objects with the keys name, nll, nll_per_char, "
        "perplexity, surprisal (a list) and percentile, rather than a table")
    add("--plot", metavar="PNG", help="also draw the surprisals as a heatmap in this PNG file")
    add("--batch-size", type=int, default=SCORE_ROWS, help="names scored together (bounds memory; the scores do "
        "not depend on it)")
    add("--member", type=int, help="a population's member I (default: its best)")
    add("--ensemble", action="store_true", help="a population: score under all members' mixture")
    return parser
