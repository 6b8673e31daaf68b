"""Record search, sweep 2 (issue 15): names_best_35k.py's shape and schedule, around its point: learning
rate x weight decay x dropout in one population of 8, chosen on a validation set of 1,000 training words.
Its member at 2e-3, 0.01 and 0.1 is names_best_35k.

    python train.py -i ../shared/data/names.txt -o sweep2 --config docs/record/sweep_lr_wd_dropout.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).with_name("names_best_35k.py"))
    config.sweep = "learning_rate=2e-3,3e-3;weight_decay=0.01,0.1;dropout=0.05,0.1"
    return config
