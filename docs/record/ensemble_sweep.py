"""Record search, the second ensemble (issue 15): sweep 2's four best settings on validation at dropout 0.1
(learning rate {2e-3, 3e-3} x weight decay {0.01, 0.1}; docs/record/sweep_lr_wd_dropout.py), two seeds each,
in one population of 8 over names_best_35k.py's 35,000 steps. Sweep 2's own members, one seed of
eight settings, made an ensemble 0.0042 above the goal: this one has better members and two seeds.

    python train.py -i ../shared/data/names.txt -o ensemble2 --config docs/record/ensemble_sweep.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).with_name("names_best_35k.py"))
    config.population = 2
    config.sweep = "learning_rate=2e-3,3e-3;weight_decay=0.01,0.1"
    return config
