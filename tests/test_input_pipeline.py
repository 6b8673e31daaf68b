import hashlib

import numpy as np
import pytest

from mmjax import input_pipeline
from mmjax.errors import UserError
from mmjax.input_pipeline import Dataset, Vocab, read_words, split_words


def test_vocabulary_is_sorted_characters_after_the_stop_token():
    vocab = Vocab.from_words(["b.a", "\u0436a", "a-c d"])  # Cyrillic zhe, Latin a
    assert vocab.chars == (" ", "-", ".", "a", "b", "c", "d", "\u0436")
    assert vocab.size == 9 and vocab.max_word_length == 5 and vocab.block_size == 6
    assert vocab.encode("b.a") == [5, 3, 4]  # '.' is an ordinary character, never token 0
    assert vocab.encode("\u0436a") == [8, 4]
    assert vocab.decode([5, 3, 4, 0, 8]) == "b.a"  # stops at token 0


def test_encode_words_shifts_inputs_and_masks_targets():
    vocab = Vocab.from_words(["ab", "abca"])
    x_nt, y_nt = vocab.encode_words(["ab", "abca"])
    assert x_nt.dtype == np.int32 and x_nt.shape == (2, 5)
    np.testing.assert_array_equal(x_nt, [[0, 1, 2, 0, 0], [0, 1, 2, 3, 1]])
    np.testing.assert_array_equal(y_nt, [[1, 2, 0, -1, -1], [1, 2, 3, 1, 0]])


def test_unknown_character_is_a_user_error():
    with pytest.raises(UserError, match="'z'"):
        Vocab.from_words(["ab"]).encode("az")


@pytest.mark.parametrize("n, test_size", [(9, 0), (50, 5), (999, 99), (20_000, 1000)])
def test_split_sizes(n, test_size):
    words = [f"w{i}" for i in range(n)]
    train, test = split_words(words, seed=1)
    assert len(test) == test_size and len(train) == n - test_size
    assert sorted(train + test) == sorted(words)


def test_split_follows_the_seed():
    words = [f"w{i}" for i in range(100)]
    assert split_words(words, 1) == split_words(words, 1)
    assert split_words(words, 1)[1] != split_words(words, 2)[1]


def test_read_words_strips_drops_blank_lines_and_dedupes(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text("  emma \n\n  \nolivia\r\nemma\n", encoding="utf-8")
    assert read_words(path) == ["emma", "olivia", "emma"]
    assert read_words(path, dedupe=True) == ["emma", "olivia"]


def test_default_dataset_is_newest_baby_names_by_popularity(tmp_path):
    path = input_pipeline.default_words_path(cache_dir=tmp_path)
    assert path.name == "babynames-2017.txt"
    words = read_words(path)
    assert words[:3] == ["emma", "liam", "olivia"]  # 2017's most given names, lowercased
    assert len(words) == 32_469 and len(set(words)) == 29_910
    assert set("".join(words)) == set("abcdefghijklmnopqrstuvwxyz")
    mtime = path.stat().st_mtime_ns
    assert input_pipeline.default_words_path(cache_dir=tmp_path) == path
    assert path.stat().st_mtime_ns == mtime  # cached, not derived again


def test_names_txt_matches_the_reference(names_file):
    assert hashlib.sha256(names_file.read_bytes()).hexdigest().startswith("0a30b555")
    words = read_words(names_file)
    dataset = Dataset.from_words(words, seed=3407)
    assert len(words) == 32_033 and len(read_words(names_file, dedupe=True)) == 29_494
    assert dataset.vocab.size == 27 and dataset.vocab.block_size == 16
    assert len(dataset.test_words) == 1000 and len(dataset.train_words) == 31_033


@pytest.mark.parametrize("n, seed", [(1, 0), (10, 3407), (1000, 1), (32_033, 3407)])
def test_permutation_is_makemores(n, seed):
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    assert input_pipeline.torch_randperm(n, seed) == torch.randperm(n).tolist()
