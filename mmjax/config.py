"""The training configuration every configs/NAME.py starts from (makemore.py's defaults)."""

import importlib.util
import pathlib

import ml_collections

from mmjax.errors import UserError


def base_config():
    config = ml_collections.ConfigDict()
    config.type = "transformer"
    # Model sizes (each model reads the ones it needs).
    config.n_layer = 4
    config.n_head = 4
    config.n_embd = 64
    config.n_embd2 = 64
    # Data.
    config.dedupe = False  # drop repeated lines before the split
    config.seed = 3407  # split, initialisation and batches
    # Optimisation: AdamW exactly as makemore.py.
    config.batch_size = 32
    config.learning_rate = 5e-4
    config.weight_decay = 0.01
    config.b1 = 0.9
    config.b2 = 0.99
    config.eps = 1e-8
    config.max_steps = 10_000
    config.optimizer = "adamw"  # or "sgd" (the lectures'); b1, b2, eps are AdamW's
    config.lr_decay_steps = 0  # > 0: multiply the learning rate by lr_decay_factor from this step on
    config.lr_decay_factor = 0.1
    config.grad_clip = 0.0  # > 0: scale each step's gradients down to at most this global norm (0: off)
    config.compute_dtype = "float32"  # "bfloat16": mixed precision for GPU/TPU (parameters stay float32)
    config.manual_grad = False  # mlp_bn: train with lecture 4's manual backward pass (mmjax/backprop.py)
    # Bookkeeping.
    config.log_every = 100  # steps per compiled dispatch; loss logged at each
    config.eval_every = 500  # evaluate and checkpoint
    config.eval_train_size = 1000  # train words scored at each evaluation
    config.eval_batch_size = 500
    # Sampling.
    config.num_samples = 50
    config.temperature = 1.0
    config.top_k = -1  # -1: all tokens
    config.top_p = 1.0  # < 1: nucleus sampling
    return config


def load_config(path):
    """get_config() of a configs/NAME.py file."""
    path = pathlib.Path(path)
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.py"))) or "none"
        raise UserError(f"no config file {path}: pass --config FILE or --type with one of: {known}")
    spec = importlib.util.spec_from_file_location(f"mmjax_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def validate(config):
    for field in ("batch_size", "learning_rate", "max_steps", "log_every", "eval_every", "eval_batch_size"):
        if not config[field] > 0:
            raise UserError(f"{field} must be positive, got {config[field]}: pass a value above 0")
    if config.optimizer not in ("adamw", "sgd"):
        raise UserError(f"unknown optimizer {config.optimizer!r}: use adamw or sgd")
    if config.compute_dtype not in ("float32", "bfloat16"):
        raise UserError(f"unknown compute dtype {config.compute_dtype!r}: use float32 or bfloat16")
    if config.manual_grad and (config.type != "mlp_bn" or config.compute_dtype != "float32"):
        raise UserError(f"--manual-grad is written for mlp_bn in float32, not {config.type} in {config.compute_dtype}: "
                        "drop the flag or pass --type mlp_bn")
    for field in ("weight_decay", "grad_clip"):
        if config[field] < 0:
            raise UserError(f"{field} must not be negative, got {config[field]}: pass 0 or more")


def lecture_sgd(config, max_steps):
    """The lectures' optimisation: SGD at 0.1, then 0.01 for the last quarter of the steps, batch 32."""
    config.update(optimizer="sgd", learning_rate=0.1, weight_decay=0.0, lr_decay_steps=max_steps * 3 // 4,
                  lr_decay_factor=0.1, max_steps=max_steps)
    return config
