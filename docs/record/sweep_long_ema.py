"""Record search, sweep 4 (issue 15): sweep 3 (docs/record/sweep_long.py: names_best's model over 70,000 steps,
dropout {0.1, 0.15, 0.2} x weight decay {0.01, 0.1}) with parameter averaging (`ema_decay` 0.9995, about the
last 2,000 steps). Averaging leaves training alone, so each member trains as sweep 3's did and the two
runs compare the average with the parameters it averages, member by member.

    python train.py -i ../shared/data/names.txt -o sweep4 --config docs/record/sweep_long_ema.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    return load_config(pathlib.Path(__file__).with_name("sweep_long.py"), ema_decay=0.9995)
