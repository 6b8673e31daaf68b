"""Record search, the fifth population (issue 15): an ensemble of members as strong as names_best.
names_best.py's neighbours (dropout {0.1, 0.15} x weight decay {0.1, 0.2}, averaged parameters), two seeds
each, 8 members over 52,000 steps, evaluated every 2,000, to fit the hour with a margin (8 members train at
17.5 steps a second here; sweep 3's 6 members of 70,000 steps took 50.8 minutes).
Sweep 4's six settings, weaker on average, made an ensemble 0.0016 above the goal.

    python train.py -i ../shared/data/names.txt -o ensemble5 --config docs/record/ensemble_strong.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).parents[2] / "configs" / "names_best.py")
    config.population = 2
    config.max_steps = 52_000
    config.eval_every = 2000
    config.sweep = "dropout=0.1,0.15;weight_decay=0.1,0.2"
    return config
