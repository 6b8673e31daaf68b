"""Record search, sweep 1 (issue 15): names_best_35k.py's shape and schedule (the default Transformer,
warm-up and cosine decay over 35,000 steps), learning rate x dropout in one population of 8, chosen on a
validation set of 1,000 training words. Its member at 2e-3 and 0.1 is names_best_35k.

    python train.py -i ../shared/data/names.txt -o sweep1 --config docs/record/sweep_lr_dropout.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).with_name("names_best_35k.py"))
    config.sweep = "learning_rate=1e-3,2e-3;dropout=0.1,0.2,0.3,0.4"
    return config
