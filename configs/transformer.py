"""makemore.py's default model: a 4-layer, 4-head, 64-channel Transformer (204,544 parameters)."""

from mmjax.config import base_config


def get_config():
    config = base_config()
    config.type = "transformer"
    return config
