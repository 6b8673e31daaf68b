"""python -m mmjax train|sample|score [flags]: the commands mmjax-train, mmjax-sample and mmjax-score."""

import sys

from mmjax import cli

COMMANDS = {"train": cli.train_command, "sample": cli.sample_command, "score": cli.score_command}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m mmjax {{{','.join(COMMANDS)}}} [flags]; python -m mmjax train -h lists the flags",
              file=sys.stderr)
        sys.exit(2)
    command = sys.argv.pop(1)  # the rest is the command's own command line, as train.py's would be
    COMMANDS[command](prog=f"python -m mmjax {command}")
