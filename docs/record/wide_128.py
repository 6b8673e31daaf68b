"""Record search, run 2 (issue 15): makemore's Transformer twice as wide (128 channels), dropout 0.2, a
warm-up and cosine schedule, sized for 30 minutes on 2 CPU cores; chosen on 1,000 validation words.

    python train.py -i ../shared/data/names.txt -o wide_128 --config docs/record/wide_128.py
"""

from mmjax.config import base_config


def get_config():
    config = base_config()
    config.type = "transformer"
    config.n_embd = 128
    config.dropout = 0.2
    config.learning_rate = 1.5e-3
    config.lr_schedule = "warmup_cosine"
    config.warmup_steps = 1000
    config.lr_decay_factor = 0.1
    config.max_steps = 65_000
    config.val_size = 1000
    config.eval_every = 2500
    config.sample_every = 0
    return config
