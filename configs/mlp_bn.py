"""The MLP with BatchNorm of makemore lecture 3: a 3-token window, 10-dim embeddings, 200 hidden
units (12,097 parameters)."""

from mmjax.config import base_config, lecture_sgd


def get_config():
    config = base_config()
    config.type = "mlp_bn"
    config.context = 3
    config.n_embd = 10
    config.diagnostics = True  # lecture 3's statistics of activations, gradients and updates
    config.n_embd2 = 200
    # The lecture's 200K steps: this small model still improves to the end.
    return lecture_sgd(config, max_steps=200_000)
