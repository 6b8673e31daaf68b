import os
import pathlib
import random
import shutil
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NAMES = ROOT.parent / "shared" / "data" / "names.txt"

# One persistent compilation cache for the session, made before jax starts and inherited by the xdist
# workers and every command the tests run: dozens of them compile the same small programs (a cached
# executable is the program XLA compiled, so what the tests check is unchanged). A size limit turns on
# jax's file lock, so concurrent processes never read a half-written entry. Removed at the end.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    SESSION_CACHE = tempfile.mkdtemp(prefix="mmjax-tests-jax-cache-")
    os.environ.update(JAX_COMPILATION_CACHE_DIR=SESSION_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                      JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0", JAX_COMPILATION_CACHE_MAX_SIZE=str(4 << 30))


# The files that take longest, first (seconds of a worker, 2026-12-08: 62, 55, 50, 47, 44, ... 20; the others take
# less): xdist hands each file whole to the next worker that asks (pyproject.toml: --dist loadscope, its reorder by
# test count off), so the last ones handed out are short and both workers end together. A file missing here only
# runs later.
SLOWEST_FIRST = ["test_population.py", "test_scripts.py", "test_regularisation.py", "test_zoo_cli.py",
                 "test_sampling.py", "test_distributed.py", "test_models.py", "test_library.py", "test_train.py",
                 "test_compile_cache.py", "test_backprop.py", "test_sharding.py", "test_interrupted.py", "test_pbt.py",
                 "test_parity.py", "test_notebook.py"]


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file's tests keep their order


def pytest_unconfigure(config):
    if "SESSION_CACHE" in globals():  # the process that made it
        shutil.rmtree(SESSION_CACHE, ignore_errors=True)


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
    import subprocess

    if not shutil.which("cc"):
        pytest.skip("no C compiler for tests/faults.c")
    lib = tmp_path_factory.mktemp("shim") / "faults.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(ROOT / "tests" / "faults.c"), "-ldl"], check=True)
    return lambda **env: {"LD_PRELOAD": str(lib), **{k: str(v) for k, v in env.items()}}
