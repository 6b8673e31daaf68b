"""Record search, sweep 3 (issue 15): configs/names_best.py's model and schedule stretched over 70,000 steps,
twice its training (names_best's 35,000 steps take about 7 of the single model's 30 minutes on the idle
machine), with more regularisation to match: dropout {0.1, 0.15, 0.2} x weight decay {0.01, 0.1}, one
population of 6, chosen on a validation set of 1,000 training words.

    python train.py -i ../shared/data/names.txt -o sweep3 --config docs/record/sweep_long.py
"""

from mmjax.configs import names_best


def get_config():
    config = names_best.get_config()
    config.max_steps = 70_000
    config.sweep = "dropout=0.1,0.15,0.2;weight_decay=0.01,0.1"
    return config
