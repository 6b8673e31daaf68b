"""Sample from a trained work dir: python sample.py -o out [-n 50] [--seed S] [--temperature T] [--top-k K]"""

from mmjax import cli

if __name__ == "__main__":
    cli.run(cli.sample_main, cli.sample_parser())
