"""The MLP with BatchNorm of makemore lecture 3: a 3-token window, 10-dim embeddings, 200 hidden
units (12,097 parameters)."""

from mmjax.config import base_config


def get_config():
    config = base_config()
    config.type = "mlp_bn"
    config.context = 3
    config.n_embd = 10
    config.n_embd2 = 200
    # The lecture's optimisation: SGD, batch 32, learning rate 0.1, then 0.01 for the last 50K of 200K
    # steps. This small model still improves to the end (configs/wavenet.py shortens it for WaveNet).
    config.optimizer = "sgd"
    config.learning_rate = 0.1
    config.weight_decay = 0.0
    config.lr_decay_steps = 150_000
    config.lr_decay_factor = 0.1
    config.max_steps = 200_000
    return config
