"""An LSTM in makemore's RNN frame (36,571 parameters on names.txt)."""

from mmjax.config import base_config


def get_config():
    config = base_config()
    config.type = "lstm"
    config.cell = "lstm"  # the RNN module's cell
    return config
