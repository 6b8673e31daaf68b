"""Record search, the sixth population (issue 15): the fifth (docs/record/ensemble_strong.py) with weight decay
{0.01, 0.1} instead of {0.1, 0.2}. There weight decay 0.2 underfitted (training loss 1.85 against 1.71), and its
members pulled the mixture up to their best member's level; in sweep 4, a member at weight decay 0.01 and one at
0.1 mixed better than two seeds of one setting. So: dropout {0.1, 0.15} x weight decay {0.01, 0.1}, two seeds
each, averaged parameters, 8 members over 52,000 steps.

    python train.py -i ../shared/data/names.txt -o ensemble6 --config docs/record/ensemble_mixed_wd.py
"""

import pathlib

from mmjax.config import load_config


def get_config():
    config = load_config(pathlib.Path(__file__).with_name("ensemble_strong.py"))
    config.sweep = "dropout=0.1,0.15;weight_decay=0.01,0.1"
    return config
