"""The training configuration: every field and its default (makemore.py's), and the configs/TYPE.py files.

`get_config(TYPE, **overrides)` is configs/TYPE.py's config (shipped in the package as
`mmjax.configs`) with the overrides, checked and locked: setting a field that does not exist, as
`config.n_emdb = 8`, is a UserError naming it.
"""

import importlib
import importlib.util
import pathlib

import ml_collections

from mmjax.errors import UserError
from mmjax.models import MODELS, has_dropout, model_fields
from mmjax import pbt
from mmjax.optimizers import OPTIMIZERS, SCHEDULES
from mmjax.precision import COMPUTE_DTYPES


class Config(ml_collections.ConfigDict):
    """A ConfigDict whose locked fields reject an unknown name with a UserError naming it."""

    def __setitem__(self, key, value):
        if self.is_locked and key not in self:
            raise UserError(f"unknown config field {key!r}: fix its name (the fields are base_config()'s in "
                            "mmjax/config.py)")
        super().__setitem__(key, value)


def base_config():
    config = Config()
    config.type = "transformer"
    # Model sizes (each model reads the ones it has; None: the model's own default).
    config.n_layer = 4
    config.n_head = 4
    config.n_embd = 64
    config.n_embd2 = 64
    config.context = None  # mlp_bn, wavenet: tokens in the window
    config.cell = None  # rnn: "rnn", "gru" or "lstm"
    config.alpha = None  # bigram_counts: added to every count
    config.dropout = 0.0  # the dropout rate in training (transformer, mlp, bow, rnn, gru, lstm; 0: off, as makemore)
    # Data.
    config.dedupe = False  # drop repeated lines before the split
    config.seed = 3407  # split, initialisation and batches
    config.split_seed = None  # the train/test split's seed on its own (None: seed)
    config.val_size = 0  # > 0: this many training words held out as the validation set, which picks the best checkpoint
    # Optimisation: AdamW exactly as makemore.py.
    config.batch_size = 32
    config.learning_rate = 5e-4
    config.weight_decay = 0.01
    config.b1 = 0.9
    config.b2 = 0.99
    config.eps = 1e-8
    config.max_steps = 10_000  # -1: until stopped (SIGINT, SIGTERM), makemore's default
    config.optimizer = "adamw"  # or "sgd" (the lectures'); b1, b2, eps are AdamW's
    config.lr_schedule = "constant"  # "step" or "warmup_cosine": mmjax/optimizers.py
    config.lr_decay_steps = 0  # "step": multiply the learning rate by lr_decay_factor from this step on
    config.lr_decay_factor = 0.1  # ... and "warmup_cosine" decays to this fraction at max_steps
    config.warmup_steps = 0  # "warmup_cosine": linear warm-up from 0 over these steps
    config.grad_clip = 0.0  # > 0: scale each step's gradients down to at most this global norm (0: off)
    config.ema_decay = 0.0  # > 0: evaluate, sample and keep as best an average of the parameters (optimizers.py)
    config.compute_dtype = "float32"  # true float32 everywhere; "tf32", "bfloat16": faster on GPU/TPU (precision.py)
    config.manual_grad = False  # mlp_bn: train with lecture 4's manual backward pass (mmjax/backprop.py)
    config.diagnostics = False  # record lecture 3's diagnostics at each evaluation (mmjax/diagnostics.py; on in its
    # configs: they compile a backward pass of their own, seconds at the start of every other run)
    # Population (mmjax/population.py): many models in one compiled program.
    config.population = 0  # > 0: that many seeds (seed, seed + 1, ...) per sweep setting
    config.sweep = ""  # "FIELD=V1,V2;FIELD=..." (--sweep): the grid of hyper-parameters the population covers
    # Population-based training (mmjax/pbt.py): the worst members copy the best and perturb their hyper-parameters.
    config.pbt = False
    config.pbt_every = 2  # evaluations between exploits
    config.pbt_fraction = 0.25  # the bottom fraction copies the top fraction
    config.pbt_perturb = "0.8,1.25"  # the factors an explored hyper-parameter is multiplied by
    config.pbt_fields = "learning_rate,weight_decay,dropout"  # the explored hyper-parameters
    # Bookkeeping.
    config.log_every = 100  # steps per compiled dispatch; loss logged at each
    config.eval_every = 500  # evaluate and checkpoint
    config.eval_train_size = 1000  # train words scored at each evaluation
    config.eval_batch_size = 500
    config.sample_every = 200  # print 10 samples every this many steps, as makemore (0: never)
    # Sampling.
    config.num_samples = 50
    config.temperature = 1.0
    config.top_k = -1  # -1: all tokens
    config.top_p = 1.0  # < 1: nucleus sampling
    return config


def split_seed(config):
    """The train/test split's seed: split_seed, or the run's seed when it is None (makemore's one seed)."""
    return config.seed if config.split_seed is None else config.split_seed


def checked(config, source):
    """The config, checked and locked; a field base_config() does not have is a UserError."""
    unknown = sorted(set(config) - set(base_config()))
    if unknown:
        raise UserError(f"{source} sets unknown config field {unknown[0]!r}: fix its name (the fields are "
                        "base_config()'s in mmjax/config.py)")
    validate(config)
    config.lock()
    return config


def get_config(model_type="transformer", **overrides):
    """configs/TYPE.py's config with `overrides`, checked and locked."""
    if model_type not in MODELS or importlib.util.find_spec(f"mmjax.configs.{model_type}") is None:
        raise UserError(f"no config for model type {model_type!r}: pass --config FILE or --type with one of: {', '.join(MODELS)}")
    config = importlib.import_module(f"mmjax.configs.{model_type}").get_config()
    return override(checked(config, f"configs/{model_type}.py"), overrides)


def load_config(path, **overrides):
    """get_config() of any configs/NAME.py-like file, with `overrides`, checked and locked."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise UserError(f"no config file {path}: give the path of a python file with get_config()")
    spec = importlib.util.spec_from_file_location(f"mmjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return override(checked(module.get_config(), path), overrides)


def override(config, overrides):
    """The locked config with fields changed (a name it does not have is a UserError), checked again."""
    for name, value in overrides.items():
        config[name] = value
    validate(config)
    return config


def validate(config):
    if config.type not in MODELS:
        raise UserError(f"unknown model type {config.type!r}: choose one of {', '.join(MODELS)}")
    for field in ("batch_size", "learning_rate", "log_every", "eval_every", "eval_batch_size"):
        if not config[field] > 0:
            raise UserError(f"{field} must be positive, got {config[field]}: pass a value above 0")
    if not (config.max_steps > 0 or config.max_steps == -1):
        raise UserError(f"max_steps must be positive, or -1 to train until stopped, got {config.max_steps}: "
                        "pass a value above 0, or -1")
    if config.max_steps == -1 and config.lr_schedule == "warmup_cosine":
        raise UserError("the warmup_cosine schedule decays over max_steps, so it needs an end: pass --max-steps N, "
                        "not -1, or another lr_schedule")
    if config.optimizer not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {config.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if config.lr_schedule not in SCHEDULES:
        raise UserError(f"unknown lr_schedule {config.lr_schedule!r}: choose one of {', '.join(SCHEDULES)}")
    if config.compute_dtype not in COMPUTE_DTYPES:
        raise UserError(f"unknown compute_dtype {config.compute_dtype!r}: choose one of {', '.join(COMPUTE_DTYPES)}")
    if config.manual_grad and (config.type != "mlp_bn" or config.compute_dtype != "float32"):
        raise UserError(f"manual gradients are written for mlp_bn in float32, not {config.type} in "
                        f"{config.compute_dtype}: turn manual_grad off or use the mlp_bn type")
    if not 0 <= config.dropout < 1:
        raise UserError(f"dropout must be at least 0 and below 1, got {config.dropout}: pass a rate such as 0.1 "
                        "(0: off)")
    if config.dropout and not has_dropout(config.type):
        raise UserError(f"the {config.type} model has no dropout, got dropout {config.dropout}: pass 0, or a type "
                        f"with it ({', '.join(t for t in MODELS if has_dropout(t))})")
    if not 0 <= config.ema_decay < 1:
        raise UserError(f"ema_decay must be at least 0 and below 1, got {config.ema_decay}: pass a decay such as "
                        "0.999 (0: off)")
    if config.ema_decay and hasattr(MODELS[config.type], "fit"):
        raise UserError(f"the {config.type} model is fitted in closed form, in one step, so there is nothing to "
                        "average: pass --ema-decay 0")
    for field in ("weight_decay", "grad_clip", "warmup_steps", "lr_decay_steps", "sample_every", "val_size",
                  "population"):
        if config[field] < 0:
            raise UserError(f"{field} must not be negative, got {config[field]}: pass 0 or more")
    if config.pbt:
        pbt.check(config)


def check_resumable(saved, config, where):
    """Refuses `config` for the run `saved` in `where` (its work dir) if it shapes the model otherwise, or
    trains another kind of run (one model, or another population), or switches parameter averaging."""
    field = next((f for f in ["type", *model_fields(saved.type)] if config[f] != saved[f]), None)
    if field:
        raise UserError(f"{where} holds a {field}={saved[field]} run, not {field}={config[field]}: drop the flag, "
                        "or pass another -o")
    if (saved.population, saved.sweep) != (config.population, config.sweep):
        raise UserError(f"{where} holds a run with population={saved.population} sweep={saved.sweep!r}, not "
                        f"population={config.population} sweep={config.sweep!r}: drop --population and --sweep to "
                        "continue it, or pass another -o")
    if bool(config.ema_decay) != bool(saved.ema_decay):  # the optimiser state has the average or not
        raise UserError(f"{where} holds a run with ema_decay={saved.ema_decay}, and averaging cannot be "
                        "switched on or off in a run: drop --ema-decay, or pass another -o")


def lecture_sgd(config, max_steps):
    """The lectures' optimisation: SGD at 0.1, then 0.01 for the last quarter of the steps, batch 32."""
    config.update(optimizer="sgd", learning_rate=0.1, weight_decay=0.0, lr_schedule="step",
                  lr_decay_steps=max_steps * 3 // 4, lr_decay_factor=0.1, max_steps=max_steps)
    return config
