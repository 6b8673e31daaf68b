"""Record search, the ensemble (issue 15): configs/names_best.py (sweep 1's best on validation) for 8 seeds
in one population, its schedule over 25,000 steps; the ensemble is the mixture of the members'
best-by-validation checkpoints (scripts/record_table.py, `sample.py --ensemble`).

    python train.py -i ../shared/data/names.txt -o ensemble --config docs/record/ensemble_seeds.py
"""

from mmjax.configs import names_best


def get_config():
    config = names_best.get_config()
    config.population = 8
    config.max_steps = 25_000
    return config
