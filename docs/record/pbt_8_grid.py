"""The grid beside docs/record/pbt_8.py: the same 8 members (names_best.py's shape, learning rate {1.5e-3,
2e-3, 3e-3, 4e-3} x dropout {0.1, 0.15}), the same 52,000 steps and evaluations, their hyper-parameters
fixed.

    python train.py -i ../shared/data/names.txt -o pbt8_grid --config docs/record/pbt_8_grid.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).parents[2] / "configs" / "names_best.py")
    config.max_steps = 52_000
    config.eval_every = 2000
    config.sweep = "learning_rate=0.0015,0.002,0.003,0.004;dropout=0.1,0.15"
    return config
