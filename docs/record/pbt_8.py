"""Record attempt with population-based training (docs/populations.md): 8 members shaped like names_best.py
(the default Transformer, warm-up and cosine decay, averaged parameters, 1,000 validation words), starting
from learning rate {1.5e-3, 2e-3, 3e-3, 4e-3} x dropout {0.1, 0.15}, over 52,000 steps (8 such members fit
the hour: docs/record/ensemble_strong.py took 53.1 minutes), evaluated every 2,000; every 2 evaluations the
worst 2 copy one of the best 2 and perturb learning rate, weight decay and dropout by 0.8 or 1.25. Its grid,
the same members without PBT: docs/record/pbt_8_grid.py.

    python train.py -i ../shared/data/names.txt -o pbt8 --config docs/record/pbt_8.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).with_name("pbt_8_grid.py"))
    config.pbt = True
    return config
