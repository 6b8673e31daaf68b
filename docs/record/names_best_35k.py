"""configs/names_best.py until sweep 4 (issue 15; README "Results"), and the base of the record's earlier
runs: makemore's Transformer with AdamW at 4x its learning rate, a warm-up and cosine decay, and dropout
0.1, for 35,000 steps; makemore's weight decay, no averaging. Chosen on a validation set of 1,000 training
words by sweep 1.

    python train.py -i ../shared/data/names.txt -o out --config docs/record/names_best_35k.py
"""

from mmjax.configs import names_best


def get_config():
    config = names_best.get_config()
    config.weight_decay = 0.01
    config.max_steps = 35_000
    config.ema_decay = 0.0
    return config
