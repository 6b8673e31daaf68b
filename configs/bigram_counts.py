"""The counted bigram of makemore lecture 1 (729 parameters, the counts), add-one smoothed."""

from mmjax.config import base_config


def get_config():
    config = base_config()
    config.type = "bigram_counts"
    config.alpha = 1.0  # added to every count (the lecture's `(N + 1).float()`)
    config.max_steps = 1  # fitted in closed form: the one step is `fit`, so the optimiser fields are unused
    return config
