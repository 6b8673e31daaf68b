"""Record search, sweep 3 (issue 15): names_best_35k.py's model and schedule stretched over 70,000 steps,
twice its training (names_best's 35,000 steps take about 7 of the single model's 30 minutes on the idle
machine), with more regularisation to match: dropout {0.1, 0.15, 0.2} x weight decay {0.01, 0.1}, one
population of 6, chosen on a validation set of 1,000 training words.

    python train.py -i ../shared/data/names.txt -o sweep3 --config docs/record/sweep_long.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).with_name("names_best_35k.py"))
    config.max_steps = 70_000
    config.sweep = "dropout=0.1,0.15,0.2;weight_decay=0.01,0.1"
    return config
