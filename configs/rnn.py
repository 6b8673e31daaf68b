"""makemore's RNN: Elman cell, 64-wide embeddings and hidden state (11,803 parameters on names.txt)."""

from mmjax.config import base_config


def get_config():
    config = base_config()
    config.type = "rnn"
    config.cell = "rnn"  # the RNN module's cell
    return config
