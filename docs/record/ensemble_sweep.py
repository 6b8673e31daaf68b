"""Record search, the second ensemble (issue 15): sweep 2's four best settings on validation at dropout 0.1
(learning rate {2e-3, 3e-3} x weight decay {0.01, 0.1}; docs/record/sweep_lr_wd_dropout.py), two seeds each,
in one population of 8 over configs/names_best.py's 35,000 steps. Sweep 2's own members, one seed of
eight settings, made an ensemble 0.0042 above the goal: this one has better members and two seeds.

    python train.py -i ../shared/data/names.txt -o ensemble2 --config docs/record/ensemble_sweep.py
"""

from mmjax.configs import names_best


def get_config():
    config = names_best.get_config()
    config.population = 2
    config.sweep = "learning_rate=2e-3,3e-3;weight_decay=0.01,0.1"
    return config
