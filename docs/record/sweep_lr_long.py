"""Record search, the seventh population (issue 15): sweep 3 (docs/record/sweep_long.py, 6 members of 70,000
steps, the best ensemble so far) with members that differ in learning rate instead of dropout, since members
that resemble each other mix less: learning rate {1e-3, 2e-3, 3e-3} x weight decay {0.01, 0.1} at dropout 0.1.
Its two members at 2e-3 are sweep 3's first two (same seed, same settings).

    python train.py -i ../shared/data/names.txt -o sweep7 --config docs/record/sweep_lr_long.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).with_name("sweep_long.py"))
    config.sweep = "learning_rate=0.001,0.002,0.003;weight_decay=0.01,0.1"
    return config
