import pathlib
import random

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAMES = ROOT.parent / "shared" / "data" / "names.txt"


def write_words(path, n=300, alphabet="abcdefgh", seed=0):
    """A file of n random words of 2..7 letters, one per line."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(2, 7))) for _ in range(n)]
    path.write_text("\n".join(words) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def words_file(tmp_path):
    return write_words(tmp_path / "words.txt")


@pytest.fixture
def names_file():
    if not NAMES.exists():
        pytest.skip(f"{NAMES} is absent (it lives in ../shared beside the checkout)")
    return NAMES


@pytest.fixture(scope="session")
def faults(tmp_path_factory):
    """faults(VAR=value, ...): the environment of a command in which tests/faults.c makes those faults
    (a full disk, a kill -9 in a write or a rename)."""
    import shutil
    import subprocess

    if not shutil.which("cc"):
        pytest.skip("no C compiler for tests/faults.c")
    lib = tmp_path_factory.mktemp("shim") / "faults.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(ROOT / "tests" / "faults.c"), "-ldl"], check=True)
    return lambda **env: {"LD_PRELOAD": str(lib), **{k: str(v) for k, v in env.items()}}
