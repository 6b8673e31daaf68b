"""makemore's GRU (28,315 parameters on names.txt)."""

from mmjax.config import base_config


def get_config():
    config = base_config()
    config.type = "gru"
    config.cell = "gru"  # the RNN module's cell
    return config
