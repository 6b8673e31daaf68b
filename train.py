"""Train a makemore model: python train.py -i words.txt -o out [--type transformer] [--max-steps N] ..."""

import functools
import pathlib

from mmjax import cli

if __name__ == "__main__":
    configs_dir = pathlib.Path(__file__).resolve().parent / "configs"
    cli.run(functools.partial(cli.train_main, configs_dir=configs_dir), cli.train_parser())
