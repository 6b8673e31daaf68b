"""Record search, run 2 (issue 15): names_best_35k.py twice as wide (128 channels), dropout 0.2, learning
rate 1.5e-3, the schedule over 65,000 steps (sized for 30 minutes on 2 CPU cores).

    python train.py -i ../shared/data/names.txt -o wide_128 --config docs/record/wide_128.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).with_name("names_best_35k.py"))
    config.n_embd = 128
    config.dropout = 0.2
    config.learning_rate = 1.5e-3
    config.max_steps = 65_000
    config.eval_every = 2500
    return config
