"""The model registry: `--type NAME` picks MODELS[NAME]; each takes (vocab_size, block_size, ...)."""

from mmjax.errors import UserError
from mmjax.models.transformer import Transformer

MODELS = {
    "transformer": Transformer,
}

# Config fields each model takes besides vocab_size and block_size.
MODEL_FIELDS = {
    "transformer": ("n_layer", "n_head", "n_embd"),
}


def create_model(config, vocab_size, block_size):
    if config.type not in MODELS:
        raise UserError(f"unknown model type {config.type!r}: choose one of {', '.join(MODELS)}")
    kwargs = {field: config[field] for field in MODEL_FIELDS[config.type]}
    if "n_head" in kwargs and kwargs["n_embd"] % kwargs["n_head"]:
        raise UserError(f"n_embd {kwargs['n_embd']} is not divisible by n_head {kwargs['n_head']}: change one of them")
    return MODELS[config.type](vocab_size=vocab_size, block_size=block_size, **kwargs)
