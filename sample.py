"""Sample from a trained work dir: python sample.py -o out [-n 50] [--seed S] [--temperature T] [--top-k K]
(the same as mmjax-sample and python -m mmjax sample)"""

from mmjax import cli

if __name__ == "__main__":
    cli.sample_command()
