"""The documentation (DEVELOPERS.md): every relative link and #anchor in README.md, DEVELOPERS.md, docs/*.md
and the notebook's text resolves; every mmjax command line in their code blocks parses with the real argument
parsers (train.py, sample.py, mmjax-train, mmjax-sample, python -m mmjax, mmjax.interop, mmjax.plots,
mmjax.backprop); README.md is a front page of at most 200 lines with the two commands in its first 10.
Parsing only: nothing trains, so the file takes seconds."""

import collections
import json
import re
import shlex
import unittest.mock

import pytest

from conftest import ROOT
from mmjax import backprop, cli, interop, plots
from mmjax.errors import UserError

README = ROOT / "README.md"
PAGES = [README, ROOT / "DEVELOPERS.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"\s*(```|~~~)")
HEADING = re.compile(r"(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"[a-z][a-z0-9+.-]*:", re.IGNORECASE)
SEPARATORS = {"&&", "||", "|", ";", "&"}
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=.*")


def parts(text):
    """(prose lines, code lines) of a markdown text, each as (line number, text); a code line ending in `\\`
    is joined with the next, as the shell joins them."""
    prose, code, fenced, pending = [], [], False, None
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            prose.append((number, line))
        elif pending is not None:
            pending = (pending[0], pending[1] + " " + line.strip())
        else:
            pending = (number, line.strip())
        if pending is not None and not pending[1].endswith("\\"):
            code.append(pending)
            pending = None
        elif pending is not None:
            pending = (pending[0], pending[1][:-1].rstrip())
    return prose, code


def slug(heading):
    """GitHub's anchor of a heading: its text (links as their text, no emphasis or code marks) lower-cased,
    punctuation but `-` and `_` dropped, spaces to `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text):
    """Every heading's anchor; a repeated one gets -1, -2, ... as GitHub numbers them."""
    seen, result = collections.Counter(), set()
    for _, line in parts(text)[0]:
        match = HEADING.fullmatch(line)
        if match:
            base = slug(match.group(2))
            result.add(base if not seen[base] else f"{base}-{seen[base]}")
            seen[base] += 1
    return result


def broken_links(page, text=None):
    """`line: target (why)` for each relative link or #anchor of `page` (its `text`: the file's) that resolves
    to nothing."""
    broken = []
    for number, line in parts(page.read_text(encoding="utf-8") if text is None else text)[0]:
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if SCHEME.match(target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{number}: {target} (no such file)")
            elif anchor and (file.suffix != ".md" or anchor not in anchors(file.read_text(encoding="utf-8"))):
                broken.append(f"{number}: {target} (no heading with that anchor in {file.name})")
    return broken


def interop_args(argv):
    """python -m mmjax.interop's command line, parsed by its own parser (which main builds) and not run."""
    with unittest.mock.patch.object(interop, "run", lambda *args: None):
        interop.main(argv)


PARSERS = {  # the words that start a command -> a function that parses (and checks) the rest
    ("python", "train.py"): lambda argv: cli.train_parser("train.py").parse_args(argv),
    ("python", "sample.py"): lambda argv: cli.sample_parser("sample.py").parse_args(argv),
    ("mmjax-train",): lambda argv: cli.train_parser("mmjax-train").parse_args(argv),
    ("mmjax-sample",): lambda argv: cli.sample_parser("mmjax-sample").parse_args(argv),
    ("python", "-m", "mmjax", "train"): lambda argv: cli.train_parser("python -m mmjax train").parse_args(argv),
    ("python", "-m", "mmjax", "sample"): lambda argv: cli.sample_parser("python -m mmjax sample").parse_args(argv),
    ("mmjax-score",): lambda argv: cli.score_parser("mmjax-score").parse_args(argv),
    ("python", "-m", "mmjax", "score"): lambda argv: cli.score_parser("python -m mmjax score").parse_args(argv),
    ("python", "-m", "mmjax.interop"): interop_args,
    ("python", "-m", "mmjax.plots"): lambda argv: plots.parser().parse_args(argv),
    ("python", "-m", "mmjax.backprop"): lambda argv: backprop.parser().parse_args(argv),
}


def commands(line):
    """The mmjax commands of a shell line, each as its words: split at &&, ||, |, ; and &, comments and
    leading VAR=value assignments dropped, a `$ ` prompt ignored; a line that names no command (a command's
    output) has none."""
    if not re.search(r"\b(python3?|mmjax-(train|sample|score))\b", line):
        return []
    lexer = shlex.shlex(line.removeprefix("$ "), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    segments, words = [], []
    for token in [*lexer, ";"]:
        if token in SEPARATORS:
            while words and ASSIGNMENT.fullmatch(words[0]):
                words.pop(0)
            segments.append(["python" if w == "python3" else w for w in words])
            words = []
        else:
            words.append(token)
    return [s for s in segments if s[:1] in (["python"], ["mmjax-train"], ["mmjax-sample"], ["mmjax-score"])
            and (s[1:2] != ["-m"] or s[2:3] and s[2].startswith("mmjax"))
            and not (s[0] == "python" and s[1:2] and s[1].startswith("scripts/"))]


def parse(words):
    """Parses one command's flags with the parser of the command it names; an unknown command, an unknown
    flag or a bad value raises UserError (argparse's error, as mmjax.errors.Parser reports it)."""
    for prefix, parser in PARSERS.items():
        if tuple(words[:len(prefix)]) == prefix:
            try:
                parser(words[len(prefix):])
            except SystemExit as e:  # -h
                assert e.code == 0, words
            return
    raise UserError(f"no parser for {shlex.join(words)}: add it to tests/test_docs.py's PARSERS")


def documented_commands():
    return [pytest.param(words, id=f"{page.relative_to(ROOT)}:{number}")
            for page in PAGES for number, line in parts(page.read_text(encoding="utf-8"))[1]
            for words in commands(line)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_link_and_anchor_resolves(page):
    assert broken_links(page) == []


def test_the_notebooks_links_resolve():
    notebook = ROOT / "notebooks" / "colab.ipynb"
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    text = "\n\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown")
    assert "](../docs/" in text and broken_links(notebook, text) == []


@pytest.mark.parametrize("words", documented_commands())
def test_every_command_line_parses(words):
    parse(words)


def test_the_command_lines_are_found():
    kinds = {prefix for param in documented_commands() for prefix in PARSERS
             if tuple(param.values[0][:len(prefix)]) == prefix}
    assert {("python", "train.py"), ("python", "sample.py"), ("python", "-m", "mmjax.interop")} <= kinds


def test_the_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200
    ci = [line.split("#")[0].strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()
          if line.startswith("python -m pytest")]
    assert ci == ["python -m pytest -q -n auto"]  # .ci/run runs exactly the README's test command
    first = lines[:10]
    assert ci[0] in first
    assert any("pip install" in line and "python train.py" in line and "python sample.py" in line for line in first)
    assert not re.search(r"\b20\d\d-\d\d-\d\d\b|issue \d+|#\d+\b", "\n".join(lines))  # no dates, no issue numbers


def test_each_docs_page_opens_with_its_title_and_two_lines_and_is_in_the_readme_index():
    readme = README.read_text(encoding="utf-8")
    for page in sorted((ROOT / "docs").glob("*.md")):
        lines = page.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("# ") and lines[1] == "" and all(lines[2:4]) and lines[4] == "", page.name
        assert f"](docs/{page.name})" in readme, f"{page.name} is missing from the README's index"


# The checks themselves: they fail on what they are meant to catch.

def test_a_broken_link_an_unknown_anchor_and_a_missing_file_are_caught(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A: heading, with `code`\n\n## Twice\n\n## Twice\n")
    page = tmp_path / "page.md"
    page.write_text("# Page\n\n[ok](other.md#a-heading-with-code) [ok](other.md#twice-1) [ok](#page) "
                    "[web](https://example.com/x#y)\n`[in code](missing.md)`\n\n"
                    "[gone](missing.md) [no anchor](other.md#nope) ![image](gone.png) [own](#nope)\n"
                    "```\n[in a block](missing.md)\n```\n")
    assert broken_links(page) == ["6: missing.md (no such file)",
                                  "6: other.md#nope (no heading with that anchor in other.md)",
                                  "6: gone.png (no such file)", "6: #nope (no heading with that anchor in page.md)"]


def test_an_unknown_flag_or_command_is_caught():
    line = "XLA_FLAGS=--x python train.py -o out --max-steps 10 \\"
    prose, code = parts(f"```bash\n{line}\n  --seed 1 && python sample.py -o out | head  # comment --nope\n```\n")
    assert code == [(2, "XLA_FLAGS=--x python train.py -o out --max-steps 10 --seed 1 && python sample.py -o out "
                        "| head  # comment --nope")]
    assert commands(code[0][1]) == [["python", "train.py", "-o", "out", "--max-steps", "10", "--seed", "1"],
                                    ["python", "sample.py", "-o", "out"]]
    for bad in ["python train.py -o out --no-such-flag", "python sample.py -n ten", "python -m mmjax serve",
                "mmjax-sample --max-steps 5", "python -m mmjax.interop import model.pt -o out",
                "python -m mmjax.plots -i words.txt"]:
        with pytest.raises(UserError):
            [parse(words) for words in commands(bad)]
