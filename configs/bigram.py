"""makemore's neural bigram: one (V, V) table of logits (729 parameters on names.txt)."""

from mmjax.config import base_config


def get_config():
    config = base_config()
    config.type = "bigram"
    return config
