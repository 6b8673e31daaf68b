"""Record search, sweep 1 (issue 15): configs/names_best.py's shape and schedule (the default Transformer,
warm-up and cosine decay over 35,000 steps), learning rate x dropout in one population of 8, chosen on a
validation set of 1,000 training words. Its member at 2e-3 and 0.1 is names_best.

    python train.py -i ../shared/data/names.txt -o sweep1 --config docs/record/sweep_lr_dropout.py
"""

from mmjax.configs import names_best


def get_config():
    config = names_best.get_config()
    config.sweep = "learning_rate=1e-3,2e-3;dropout=0.1,0.2,0.3,0.4"
    return config
