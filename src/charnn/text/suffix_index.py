"""A suffix array of a corpus's ids (built by libdivsufsort through pydivsufsort), cached beside the corpus
cache, and the longest match of every position of a text in the corpus (its matching statistics).

The array is built once per text and vocabulary and kept in the cache folder as `{key}.sa` (int32 positions)
with a small JSON; later uses memory-map it. Matching is exact: a vectorised binary search of every query
position at once, comparing a window of W chars, with W doubled for the positions whose match fills it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from charnn.errors import DataError, RunDirError
from charnn.fileio import atomic_write, cache_root, cached_sidecar

INDEX_VERSION = 1
MAX_INDEX_CHARS = 2**31 - 1  # positions are int32: 8 bytes per char would double the index for no user
_WINDOW = 32
_CHUNK = 4096  # query positions searched together (memory: chunk x window x 8 bytes per array)
_MOST_OCCURRENCES = 256  # of a long span, looked at one by one before a search is cheaper
_QUERY_END, _CORPUS_END = -1, -2  # past the end of a text; below every id, as the suffix order puts ends


@dataclass(frozen=True)
class Matches:
    """For each position i of a text: the length of the longest prefix of text[i:] found in the corpus and
    where in the corpus (a position) one occurrence of it starts."""

    lengths: np.ndarray
    where: np.ndarray


class SuffixIndex:
    """The ids of a corpus and their suffix array."""

    def __init__(self, ids: np.ndarray, suffixes: np.ndarray):
        self.ids = np.asarray(ids)
        self.suffixes = suffixes

    def __len__(self) -> int:
        return len(self.ids)

    def matches(self, query: np.ndarray) -> Matches:
        """The longest match in the corpus of every suffix of `query` (ids in the corpus's vocabulary)."""
        query = np.asarray(query, dtype=np.int64)
        lengths = np.zeros(len(query), dtype=np.int64)
        where = np.zeros(len(query), dtype=np.int64)
        for lo in range(0, len(query), _CHUNK):
            positions = np.arange(lo, min(lo + _CHUNK, len(query)))
            lengths[positions], where[positions] = self._search(query, positions, _WINDOW)
        long = np.flatnonzero(lengths >= _WINDOW)  # the match may go on past the window
        if len(long):
            self._extend(query, long, lengths, where)
        return Matches(lengths, where)

    def _extend(self, query: np.ndarray, long: np.ndarray, lengths: np.ndarray, where: np.ndarray) -> None:
        """Exact lengths of the matches that filled the window, in one left-to-right sweep.

        A match's end never moves left from one position to the next (text[i:e] found means
        text[i+1:e] found), so each position costs one failed search plus its share of the growth."""
        text = self._as_bytes(query)
        end, previous = 0, -2
        for i in long.tolist():
            if i == previous + 1 and end > i + lengths[i]:
                lengths[i], where[i] = end - i, where[previous] + 1
                if end < len(query):  # one char more, found (or not) without searching for the whole span
                    at = self._followed_by(int(where[i]), int(lengths[i]), int(query[end]))
                    if at == -1:
                        previous = i
                        continue
                    if at is not None:
                        lengths[i], where[i] = lengths[i] + 1, at
            step = 1
            while i + lengths[i] < len(query):
                step = min(step, len(query) - i - lengths[i])
                at = self._find(text, i, i + lengths[i] + step)
                if at < 0:
                    if step == 1:
                        break
                    step = 1
                    continue
                lengths[i], where[i] = lengths[i] + step, at
                step *= 2
            end, previous = i + lengths[i], i

    def _followed_by(self, at: int, length: int, char: int) -> int | None:
        """A corpus position where the `length` chars at `at` occur followed by `char`; -1 where none is,
        None where they occur too often to look at each (then the caller searches).

        The suffixes sharing `length` chars with the one at `at` lie next to it in the suffix array, as far
        as the common prefixes of neighbours (kasai's LCP array) stay at least `length` long."""
        ids, order, common = self.ids, self.suffixes, self._lcp
        rank, n = int(self._ranks[at]), len(order)
        seen = 0
        for k, step in ((rank, -1), (rank + 1, 1)):  # each way from the suffix at `at`, itself first
            while 0 <= k < n and (k == rank or common[min(k, k - step)] >= length):
                start = int(order[k])
                if start + length < len(ids) and ids[start + length] == char:
                    return start
                seen += 1
                if seen > _MOST_OCCURRENCES:
                    return None
                k += step
        return -1

    @cached_property
    def _ranks(self) -> np.ndarray:
        """Each corpus position's place in the suffix array."""
        ranks = np.empty(len(self.suffixes), dtype=np.int64)
        ranks[np.asarray(self.suffixes)] = np.arange(len(self.suffixes))
        return ranks

    @cached_property
    def _lcp(self) -> np.ndarray:
        """lcp[k]: how many chars the suffixes at k and k + 1 of the suffix array share."""
        from pydivsufsort import kasai

        return kasai(_writeable(self.ids), np.array(self.suffixes, dtype=np.int64))

    @cached_property
    def _corpus_bytes(self) -> bytes:
        return self._as_bytes(self.ids)

    @cached_property
    def _width(self) -> int:
        """Bytes per id in the byte form: the corpus's own id size (ids past 32 bits cannot be chars)."""
        return min(self.ids.dtype.itemsize, 4)

    def _as_bytes(self, ids: np.ndarray) -> bytes:
        """Ids as bytes whose order is the ids' order (big-endian where one byte does not hold them)."""
        return np.asarray(ids).astype(f">u{self._width}").tobytes()

    def _find(self, text: bytes, start: int, stop: int) -> int:
        """A corpus position where query[start:stop] occurs, or -1."""
        width = self._width
        pattern, corpus = text[start * width : stop * width], self._corpus_bytes
        size = len(pattern)
        lo, hi = 0, len(self.suffixes)
        while lo < hi:
            mid = (lo + hi) // 2
            at = int(self.suffixes[mid]) * width
            if corpus[at : at + size] < pattern:
                lo = mid + 1
            else:
                hi = mid
        if lo < len(self.suffixes):
            at = int(self.suffixes[lo])
            if corpus[at * width : at * width + size] == pattern:
                return at
        return -1

    def _search(self, query: np.ndarray, positions: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
        """Longest match (up to `window` chars) of query[p:] for each p, and a corpus position holding it."""
        q = _windows(query, positions, window, _QUERY_END)
        lo = np.zeros(len(positions), dtype=np.int64)
        hi = np.full(len(positions), len(self.suffixes), dtype=np.int64)
        while np.any(lo < hi):  # first suffix not below the query's window
            mid = (lo + hi) // 2
            live = lo < hi
            c = _windows(
                self.ids, self.suffixes[np.minimum(mid, len(self.suffixes) - 1)], window, _CORPUS_END
            )
            below = _less(c, q) & live
            lo = np.where(below, mid + 1, lo)
            hi = np.where(live & ~below, mid, hi)
        best = np.zeros(len(positions), dtype=np.int64)
        at = np.zeros(len(positions), dtype=np.int64)
        for neighbour in (lo - 1, lo):
            ok = (neighbour >= 0) & (neighbour < len(self.suffixes))
            start = self.suffixes[np.clip(neighbour, 0, len(self.suffixes) - 1)].astype(np.int64)
            common = np.where(ok, _common_prefix(_windows(self.ids, start, window, _CORPUS_END), q), 0)
            better = common > best
            best, at = np.where(better, common, best), np.where(better, start, at)
        return best, at


def _windows(ids: np.ndarray, starts: np.ndarray, width: int, pad: int) -> np.ndarray:
    """ids[s : s + width] for each start s, padded with `pad` past the end (int64, one row per start)."""
    index = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(width)
    inside = index < len(ids)
    return np.where(inside, np.asarray(ids)[np.minimum(index, len(ids) - 1)].astype(np.int64), pad)


def _first_difference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    differ = a != b
    return differ.argmax(axis=1), differ.any(axis=1)


def _less(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row by row, whether a's window sorts before b's."""
    first, any_diff = _first_difference(a, b)
    rows = np.arange(len(a))
    return any_diff & (a[rows, first] < b[rows, first])


def _common_prefix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row by row, how many leading chars a and b share (pads never match each other)."""
    first, any_diff = _first_difference(a, b)
    return np.where(any_diff, first, a.shape[1])


def build_suffixes(ids: np.ndarray) -> np.ndarray:
    """The suffix array of `ids` (int32), by libdivsufsort; refuses corpora past int32 positions."""
    if len(ids) > MAX_INDEX_CHARS:
        raise DataError(
            f"the corpus holds {len(ids):,} chars; the copying index handles at most {MAX_INDEX_CHARS:,} "
            "(pass a smaller --data)"
        )
    from pydivsufsort import divsufsort

    return divsufsort(_writeable(ids)).astype(np.int32, copy=False)


def _writeable(ids: np.ndarray) -> np.ndarray:
    """`ids` as libdivsufsort takes them: writeable and contiguous (a memory-mapped cache is copied)."""
    ids = np.asarray(ids)
    return ids if ids.flags.writeable and ids.flags.c_contiguous else np.array(ids)


def load_index(ids: np.ndarray, sha256: str, chars: tuple[str, ...]) -> SuffixIndex:
    """The suffix index of `ids` (a text with hash `sha256` in vocabulary `chars`), built once and cached."""
    if len(ids) > MAX_INDEX_CHARS:
        build_suffixes(ids)  # the one clear refusal
    key = hashlib.sha256(json.dumps([INDEX_VERSION, sha256, len(ids), "".join(chars)]).encode()).hexdigest()
    folder = cache_root() / "corpora"
    meta_path, data_path = folder / f"{key[:24]}.sa.json", folder / f"{key[:24]}.sa"
    if _valid(meta_path, data_path, key, len(ids)):
        cached = np.memmap(data_path, dtype=np.int32, mode="r", shape=(len(ids),))
        if _looks_sorted(ids, cached):
            return SuffixIndex(ids, cached)
    suffixes = build_suffixes(ids)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(data_path, suffixes.tobytes())
        atomic_write(meta_path, json.dumps({"key": key, "length": len(ids)}).encode())
    except (OSError, RunDirError):
        pass  # a cache that cannot be written (read-only): the index is built again next time
    return SuffixIndex(ids, suffixes)


def _valid(meta_path: Path, data_path: Path, key: str, length: int) -> bool:
    """Whether the cached index is this one and whole; a damaged file of any shape reads as no index."""
    cached = cached_sidecar(meta_path, data_path)
    if cached is None:
        return False
    meta, size = cached
    return meta.get("key") == key and meta.get("length") == length and size == 4 * length


def _looks_sorted(ids: np.ndarray, suffixes: np.ndarray, samples: int = 1024) -> bool:
    """Whether a cached suffix array holds positions of `ids` and, at sampled places, suffixes in order: a
    file overwritten in place (zeros, other positions) would else give wrong figures without a word."""
    if not len(suffixes) or int(suffixes.min()) < 0 or int(suffixes.max()) >= len(ids):
        return False
    k = np.random.default_rng(0).integers(0, len(suffixes) - 1, min(samples, len(suffixes) - 1))
    first, second = suffixes[k].astype(np.int64), suffixes[k + 1].astype(np.int64)
    a, b = _windows(ids, first, _WINDOW, _CORPUS_END), _windows(ids, second, _WINDOW, _CORPUS_END)
    return bool(np.all(first != second) and not np.any(_less(b, a)))  # no suffix before the one it follows
