"""Record search, run 2 (issue 15): configs/names_best.py twice as wide (128 channels), dropout 0.2, learning
rate 1.5e-3, the schedule over 65,000 steps (sized for 30 minutes on 2 CPU cores).

    python train.py -i ../shared/data/names.txt -o wide_128 --config docs/record/wide_128.py
"""

from mmjax.configs import names_best


def get_config():
    config = names_best.get_config()
    config.n_embd = 128
    config.dropout = 0.2
    config.learning_rate = 1.5e-3
    config.max_steps = 65_000
    config.eval_every = 2500
    return config
