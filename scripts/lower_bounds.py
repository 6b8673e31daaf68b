"""The lower bounds of pyproject.toml's dependencies as pip constraints, one `name==version` a line:
the versions the lower-bound venv installs exactly (scripts/install_check.sh lower).

    python scripts/lower_bounds.py [pyproject.toml] > constraints.txt

A dependency without a lower bound (`>=`) is an error: every bound is one a smoke run passed.
"""

import pathlib
import re
import sys

try:
    import tomllib
except ImportError:  # python 3.10
    tomllib = None

ROOT = pathlib.Path(__file__).resolve().parent.parent
REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")


def dependencies(path):
    text = pathlib.Path(path).read_text(encoding="utf-8")
    if tomllib is not None:
        return tomllib.loads(text)["project"]["dependencies"]
    block = text.split("dependencies = [", 1)[1].split("\n]", 1)[0]
    return re.findall(r'^\s*"([^"]+)"', block, re.M)


def lower_bounds(path=ROOT / "pyproject.toml"):
    """{name: version} of each dependency's `>=` bound; a dependency without one is a ValueError."""
    bounds = {}
    for requirement in dependencies(path):
        name, _, spec = REQUIREMENT.match(requirement.split(";")[0].strip()).groups()
        lower = re.search(r">=\s*([0-9][^,\s]*)", spec)
        if lower is None:
            raise ValueError(f"{requirement!r} has no lower bound: find the oldest version the smoke passes with")
        bounds[name] = lower.group(1)
    return bounds


if __name__ == "__main__":
    for name, version in lower_bounds(*sys.argv[1:]).items():
        print(f"{name}=={version}")
