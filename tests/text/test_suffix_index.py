"""The suffix index against a naive search: longest matches, where they are, the cache, the int32 limit."""

import numpy as np
import pytest

from charnn.errors import DataError
from charnn.text.suffix_index import MAX_INDEX_CHARS, SuffixIndex, build_suffixes, load_index


def naive_longest(corpus: np.ndarray, query: np.ndarray, i: int) -> int:
    haystack = corpus.tolist()
    length = 0
    while i + length < len(query):
        needle = query[i : i + length + 1].tolist()
        if not any(haystack[s : s + len(needle)] == needle for s in range(len(haystack))):
            break
        length += 1
    return length


# Per id type, the ids drawn: ids past one byte take the two-byte path; past two, the four-byte one, where
# pairs of ids equal in their low 16 bits would match each other were the ids cut to two bytes.
ALPHABETS = {
    np.uint8: np.arange(3),
    np.uint16: np.arange(400),
    np.uint32: np.array([1, 2, 3, 1 + (1 << 16), 2 + (1 << 16), 3 + (1 << 16)]),
}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
@pytest.mark.parametrize("seed", range(4))
def test_longest_matches_and_their_places_agree_with_a_naive_search(dtype, seed):
    rng = np.random.default_rng(seed)
    alphabet = ALPHABETS[dtype]
    corpus = rng.choice(alphabet, 300).astype(dtype)
    query = np.concatenate([rng.choice(alphabet, 40), corpus[10:120], rng.choice(alphabet, 20)])
    m = SuffixIndex(corpus, build_suffixes(corpus)).matches(query)
    for i in range(len(query)):
        assert m.lengths[i] == naive_longest(corpus, query, i), i
        assert corpus[m.where[i] : m.where[i] + m.lengths[i]].tolist() == query[i : i + m.lengths[i]].tolist()
    assert m.lengths[40] >= 110  # the copied block, past the first search window


def test_ids_past_16_bits_are_told_apart_past_the_first_window():
    # The query is the corpus's line P + z + Q with z swapped for the id 65,536 above it: equal in its low
    # 16 bits, so only a comparison of whole ids stops the match at P (the window of 32 lies inside P).
    rng = np.random.default_rng(5)
    prefix, suffix = rng.integers(70_000, 70_010, 40), rng.integers(70_000, 70_010, 40)
    z = 100
    corpus = np.concatenate([rng.integers(0, 70_000, 200), prefix, [z], suffix]).astype(np.uint32)
    query = np.concatenate([prefix, [z + 65_536], suffix]).astype(np.uint32)
    m = SuffixIndex(corpus, build_suffixes(corpus)).matches(query)
    for i in range(len(query)):
        assert m.lengths[i] == naive_longest(corpus, query, i), i
    assert m.lengths[0] == 40


def longest_by_bytes(corpus: np.ndarray, query: np.ndarray, i: int) -> int:
    haystack, length = corpus.tobytes(), 0  # one-byte ids: substring search does the naive work in C
    while i + length < len(query) and query[i : i + length + 1].tobytes() in haystack:
        length += 1
    return length


@pytest.mark.parametrize("seed", range(8))
def test_long_copied_spans_among_repeats_agree_with_a_naive_search(seed):
    """Spans past the search window, ending inside the text, of pieces the corpus holds once, a few times
    or hundreds of times (where looking at each occurrence costs more than a search)."""
    rng = np.random.default_rng(seed)
    piece = rng.integers(0, 3, int(rng.integers(40, 90))).astype(np.uint8)
    repeats = [1, 3, 300][seed % 3]
    corpus = np.concatenate([rng.integers(0, 3, 200), *[piece] * repeats, rng.integers(0, 3, 200)]).astype(
        np.uint8
    )
    query = np.concatenate([*[piece] * 2, rng.integers(0, 3, 6), corpus[50:260], rng.integers(0, 3, 6)])
    query = query.astype(np.uint8)
    m = SuffixIndex(corpus, build_suffixes(corpus)).matches(query)
    for i in range(len(query)):
        assert m.lengths[i] == longest_by_bytes(corpus, query, i), i
        assert corpus[m.where[i] : m.where[i] + m.lengths[i]].tolist() == query[i : i + m.lengths[i]].tolist()


def test_a_text_copied_whole_is_one_match():
    corpus = np.random.default_rng(1).integers(0, 65, 50_000).astype(np.uint8)
    m = SuffixIndex(corpus, build_suffixes(corpus)).matches(corpus[1000:6000])
    assert m.lengths[0] == 5000 and m.where[0] == 1000
    assert (m.lengths == np.arange(5000, 0, -1)).all()


def test_the_index_is_cached_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARNN_CACHE_DIR", str(tmp_path))
    ids = np.random.default_rng(2).integers(0, 10, 5000).astype(np.uint8)
    first = load_index(ids, "abc", tuple("0123456789"))
    files = sorted(p.name for p in (tmp_path / "corpora").iterdir())
    assert any(name.endswith(".sa") for name in files)
    second = load_index(ids, "abc", tuple("0123456789"))
    assert isinstance(second.suffixes, np.memmap)
    assert np.array_equal(first.suffixes, second.suffixes)
    other = load_index(ids[:4000], "abc", tuple("0123456789"))  # another text, another index
    assert len(other) == 4000 and len(list((tmp_path / "corpora").iterdir())) == 2 * len(files)


def test_a_damaged_cached_index_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("CHARNN_CACHE_DIR", str(tmp_path))
    ids = np.random.default_rng(3).integers(0, 10, 2000).astype(np.uint8)
    good = load_index(ids, "x", tuple("0123456789")).suffixes.copy()
    (sa,) = (tmp_path / "corpora").glob("*.sa")
    sa.write_bytes(sa.read_bytes()[:100])
    assert np.array_equal(load_index(ids, "x", tuple("0123456789")).suffixes, good)


@pytest.mark.parametrize(
    "overwrite",
    [lambda sa: np.zeros_like(sa), lambda sa: np.full_like(sa, 10**9), lambda sa: np.full_like(sa, -5),
     lambda sa: sa[::-1].copy()],
    ids=["zeros", "past the end", "negative", "reversed"],
)  # fmt: skip
def test_a_cached_index_overwritten_in_place_is_rebuilt_not_read(tmp_path, monkeypatch, overwrite):
    """A file of the right size but other contents once gave '0% copied' where 94% was."""
    monkeypatch.setenv("CHARNN_CACHE_DIR", str(tmp_path))
    ids = np.random.default_rng(3).integers(0, 10, 2000).astype(np.uint8)
    good = load_index(ids, "x", tuple("0123456789")).suffixes.copy()
    (sa,) = (tmp_path / "corpora").glob("*.sa")
    sa.write_bytes(overwrite(good).astype(np.int32).tobytes())
    again = load_index(ids, "x", tuple("0123456789"))
    assert np.array_equal(again.suffixes, good)
    assert again.matches(ids[100:200]).lengths[0] == 100


def test_a_memory_mapped_read_only_corpus_is_indexed(tmp_path):
    ids = np.random.default_rng(4).integers(0, 10, 3000).astype(np.uint8)
    (tmp_path / "c.ids").write_bytes(ids.tobytes())
    mapped = np.memmap(tmp_path / "c.ids", dtype=np.uint8, mode="r", shape=(3000,))
    assert np.array_equal(build_suffixes(mapped), build_suffixes(ids.copy()))


def test_a_corpus_past_int32_positions_is_refused_before_any_work(tmp_path):
    sparse = tmp_path / "huge.ids"
    with open(sparse, "wb") as f:  # a sparse file: no disk or memory is used for its 2 GiB
        f.truncate(MAX_INDEX_CHARS + 1)
    ids = np.memmap(sparse, dtype=np.uint8, mode="r", shape=(MAX_INDEX_CHARS + 1,))
    with pytest.raises(DataError, match=r"2,147,483,648 chars; the copying index handles at most"):
        load_index(ids, "huge", ("a",))


@pytest.mark.parametrize("damage", ['{"key": "ab', "null", "[]", "7", "{}", '{"key": 1, "length": "2000"}'])
def test_damaged_index_metadata_is_rebuilt(tmp_path, monkeypatch, damage):
    monkeypatch.setenv("CHARNN_CACHE_DIR", str(tmp_path))
    ids = np.random.default_rng(6).integers(0, 10, 2000).astype(np.uint8)
    good = load_index(ids, "m", tuple("0123456789")).suffixes.copy()
    (meta,) = (tmp_path / "corpora").glob("*.sa.json")
    meta.write_text(damage)
    rebuilt = load_index(ids, "m", tuple("0123456789"))
    assert not isinstance(rebuilt.suffixes, np.memmap) and np.array_equal(rebuilt.suffixes, good)
    again = load_index(ids, "m", tuple("0123456789"))  # the rebuilt index was kept
    assert isinstance(again.suffixes, np.memmap) and np.array_equal(again.suffixes, good)
