"""Record search, sweep 1 (issue 15): the default Transformer's shape, a warm-up and cosine schedule, and
learning rate x dropout in one population of 8, chosen on a validation set of 1,000 training words.

    python train.py -i ../shared/data/names.txt -o sweep1 --config docs/record/sweep_lr_dropout.py
"""

from mmjax.config import base_config


def get_config():
    config = base_config()
    config.type = "transformer"
    config.lr_schedule = "warmup_cosine"
    config.warmup_steps = 1000
    config.lr_decay_factor = 0.1
    config.max_steps = 35_000
    config.val_size = 1000
    config.eval_every = 1000
    config.sample_every = 0
    config.sweep = "learning_rate=1e-3,2e-3;dropout=0.1,0.2,0.3,0.4"
    return config
