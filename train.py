"""Train a makemore model: python train.py -i words.txt -o out [--type transformer] [--max-steps N] ...
(the same as mmjax-train and python -m mmjax train)"""

from mmjax import cli

if __name__ == "__main__":
    cli.train_command()
