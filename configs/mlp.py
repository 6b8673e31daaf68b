"""makemore's MLP (Bengio et al. 2003): 16 tokens of context on names.txt (69,147 parameters)."""

from mmjax.config import base_config


def get_config():
    config = base_config()
    config.type = "mlp"
    return config
