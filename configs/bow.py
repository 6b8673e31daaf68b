"""makemore's causal bag of words (12,827 parameters on names.txt)."""

from mmjax.config import base_config


def get_config():
    config = base_config()
    config.type = "bow"
    return config
