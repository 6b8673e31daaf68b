"""The best configuration on names.txt so far (issue 15; docs/record.md): makemore's Transformer with
AdamW at 4x its learning rate and 10x its weight decay, a warm-up and cosine decay, dropout 0.1, for
70,000 steps, evaluated with an average of its parameters (ema_decay). Chosen on a validation set of
1,000 training words (docs/record/runs.csv has every configuration tried).

    python train.py -i ../shared/data/names.txt -o out --config configs/names_best.py
"""

from mmjax.config import base_config


def get_config():
    config = base_config()
    config.type = "transformer"
    config.learning_rate = 2e-3
    config.weight_decay = 0.1
    config.dropout = 0.1
    config.lr_schedule = "warmup_cosine"
    config.warmup_steps = 1000
    config.lr_decay_factor = 0.1
    config.max_steps = 70_000
    config.ema_decay = 0.9995
    config.val_size = 1000
    config.eval_every = 1000
    config.sample_every = 0
    return config
