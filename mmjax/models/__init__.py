"""The model registry. `--type NAME` trains MODELS[NAME].

Every model is a Flax Linen module built as `Model(vocab_size=V, block_size=T, **sizes)`, its other
fields filled from the config fields of the same names, with:

- `__call__(idx_bt, train=False) -> logits_btv`: every position at once; position t sees tokens
  0..t only. `train=True` is the training pass: BatchNorm normalises with batch statistics and
  updates the `batch_stats` collection. A model with dropout also takes `dropout`, the rate (a
  traced scalar, so one per model under vmap; None: off), applied only when `train`, on the `dropout` rng.
- `decode_init(batch_size) -> carry`: the decode state before any token, a pytree of arrays.
- `decode_step(carry, token_b, pos_b) -> (logits_bv, carry)`: feeds row b's token at its own
  position pos_b and returns the logits for the token after it, equal to `__call__`'s logits at that
  position. A row at position 0 (fed the start token 0) begins a new sequence whatever its carry
  holds, so the sampler refills a finished row without resetting it. One sampler serves every
  model through these two.

A model fitted in closed form rather than by gradient steps also has `fit(x_nt, y_nt) -> params`.
"""

import dataclasses
import functools
import inspect

from mmjax.errors import UserError
from mmjax.models.bigram import Bigram
from mmjax.models.bigram_counts import BigramCounts
from mmjax.models.bow import BoW
from mmjax.models.mlp import MLP
from mmjax.models.mlp_bn import MLPBatchNorm
from mmjax.models.rnn import RNN
from mmjax.models.transformer import Transformer
from mmjax.models.wavenet import WaveNet

MODELS = {
    "bigram": Bigram,
    "bigram_counts": BigramCounts,
    "mlp": MLP,
    "mlp_bn": MLPBatchNorm,
    "wavenet": WaveNet,
    "rnn": RNN,  # configs/rnn.py, gru.py and lstm.py set its `cell`
    "gru": RNN,
    "lstm": RNN,
    "bow": BoW,
    "transformer": Transformer,
}


def model_fields(model_type):
    """The config fields that shape a model of this type (besides vocab_size and block_size)."""
    return [f.name for f in dataclasses.fields(MODELS[model_type])
            if f.name not in ("parent", "name", "vocab_size", "block_size")]


def has_dropout(model_type):
    """Whether the model takes a dropout rate (mlp_bn, wavenet and the bigrams do not)."""
    return "dropout" in inspect.signature(MODELS[model_type].__call__).parameters


def create_model(config, vocab_size, block_size):
    if config.type not in MODELS:
        raise UserError(f"unknown model type {config.type!r}: choose one of {', '.join(MODELS)}")
    # a field left None in the config takes the model's own default
    sizes = {name: config[name] for name in model_fields(config.type) if config.get(name) is not None}
    if "n_head" in sizes and sizes["n_embd"] % sizes["n_head"]:
        raise UserError(f"n_embd {sizes['n_embd']} is not divisible by n_head {sizes['n_head']}: change one of them")
    return _model(config.type, vocab_size, block_size, tuple(sorted(sizes.items())))


@functools.lru_cache(maxsize=64)
def _model(model_type, vocab_size, block_size, sizes):
    """One module object per shape: compiled steps take the model (in the train state) as a static argument,
    compared by identity, so a second run of the same model in a process compiles nothing new."""
    return MODELS[model_type](vocab_size=vocab_size, block_size=block_size, **dict(sizes))
