"""Record search, the ensemble (issue 15): names_best_35k.py (sweep 1's best on validation) for 8 seeds
in one population, its schedule over 25,000 steps; the ensemble is the mixture of the members'
best-by-validation checkpoints (scripts/record_table.py, `sample.py --ensemble`).

    python train.py -i ../shared/data/names.txt -o ensemble --config docs/record/ensemble_seeds.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).with_name("names_best_35k.py"))
    config.population = 8
    config.max_steps = 25_000
    return config
