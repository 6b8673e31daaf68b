"""The seed noise of configs/names_best.py (issue 15): the same configuration at 4 seeds (3407 to 3410) in one
population; member 0 is names_best itself (a member is its standalone run).

    python train.py -i ../shared/data/names.txt -o seeds --config docs/record/names_best_seeds.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).parents[2] / "configs" / "names_best.py")
    config.population = 4
    return config
