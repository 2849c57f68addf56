"""How much of a text is copied from a corpus: the longest copied span, the share of chars inside copied
spans of at least k chars, the share of distinct n-grams the corpus does not hold, and the spans themselves.

All of it follows from the matching statistics of the text against the corpus's suffix index.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from charnn.errors import ConfigError
from charnn.text.corpus import Corpus
from charnn.text.files import iter_text
from charnn.text.suffix_index import Matches, SuffixIndex

SPAN_LENGTHS = (20, 50, 100)
NGRAM_SIZES = (8, 16)


@dataclass(frozen=True)
class Span:
    """text[start : start + length] occurs verbatim in the corpus at position `source`."""

    start: int
    length: int
    source: int


@dataclass(frozen=True)
class CopyFigures:
    """The copying figures of one text (or of several, pooled)."""

    chars: int
    longest: Span
    copied_share: dict[int, float]  # k -> share of chars inside copied spans of at least k chars
    novel_ngrams: dict[int, float]  # n -> share of distinct n-grams not in the corpus

    def to_dict(self) -> dict:
        return {
            "chars": self.chars,
            "longest": {"length": self.longest.length, "start": self.longest.start},
            "copied_share": {str(k): v for k, v in self.copied_share.items()},
            "novel_ngrams": {str(n): v for n, v in self.novel_ngrams.items()},
        }


def covered(lengths: np.ndarray, k: int) -> np.ndarray:
    """Which chars lie inside a copied span of at least k chars (lengths: the matching statistics)."""
    starts = np.flatnonzero(lengths >= k)
    marks = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.add.at(marks, starts, 1)
    np.add.at(marks, starts + lengths[starts], -1)
    return np.cumsum(marks[:-1]) > 0


def figures(
    pieces: Sequence[np.ndarray],
    index: SuffixIndex,
    spans: Sequence[int] = SPAN_LENGTHS,
    ngrams: Sequence[int] = NGRAM_SIZES,
) -> CopyFigures:
    """The copying figures of texts (ids each) against the index, pooled over the texts."""
    matches = [index.matches(p) for p in pieces]
    chars = sum(len(p) for p in pieces)
    longest, offset = Span(0, 0, 0), 0
    for piece, m in zip(pieces, matches, strict=True):
        if len(m.lengths) and m.lengths.max() > longest.length:
            i = int(m.lengths.argmax())
            longest = Span(offset + i, int(m.lengths[i]), int(m.where[i]))
        offset += len(piece)
    shares = {k: _share([covered(m.lengths, k) for m in matches], chars) for k in spans}
    novel = {n: _pooled_novel(pieces, matches, n) for n in ngrams}
    return CopyFigures(chars, longest, shares, novel)


def _share(flags: list[np.ndarray], chars: int) -> float:
    return float(sum(int(f.sum()) for f in flags) / chars) if chars else 0.0


def _pooled_novel(pieces: Sequence[np.ndarray], matches: list[Matches], n: int) -> float | None:
    """Share of distinct n-grams (over all texts together) not in the corpus."""
    grams, novel = [], []
    for p, m in zip(pieces, matches, strict=True):
        if len(p) >= n:
            grams.append(np.lib.stride_tricks.sliding_window_view(np.asarray(p, dtype=np.int64), n))
            novel.append(m.lengths[: len(p) - n + 1] < n)
    if not grams:
        return None
    _, first = np.unique(np.concatenate(grams), axis=0, return_index=True)
    return float(np.mean(np.concatenate(novel)[first]))


def span_lengths(text: str) -> tuple[int, ...]:
    """The span lengths of a comma-separated list such as `20,50,100`."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):  # isdigit alone takes '²'
        raise ConfigError(f"--spans must be positive whole numbers separated by commas, got {text!r}")
    return tuple(int(p) for p in parts)


class Locator:
    """File and line of a corpus position."""

    def __init__(self, corpus: Corpus, encoding: str = "utf-8"):
        self.starts, self.names = [0], [corpus.files[0] if corpus.files else corpus.source]
        if len(corpus.files) > 1:  # the files' lengths in chars, read once
            self.names = list(corpus.files)
            for path in corpus.files[:-1]:
                self.starts.append(
                    self.starts[-1] + sum(len(t) for t in iter_text([Path(path)], encoding, True))
                )
        chars = corpus.vocab.chars
        ids = np.asarray(corpus.ids)
        self.newlines = np.flatnonzero(ids == chars.index("\n")) if "\n" in chars else np.zeros(0, np.int64)

    def __call__(self, position: int) -> tuple[str, int]:
        """(file, line) of a corpus position, lines counted from 1 within the file; a span that begins with a
        newline is placed on the line after it, where its visible text is."""
        at = np.searchsorted(self.newlines, position)
        if at < len(self.newlines) and self.newlines[at] == position:
            position += 1
        k = bisect.bisect_right(self.starts, position) - 1
        before = np.searchsorted(self.newlines, [self.starts[k], position])
        return self.names[k], int(before[1] - before[0]) + 1


def copied_spans(matches: Matches, k: int) -> list[Span]:
    """The copied spans of at least k chars, left to right, none overlapping (a span that overlaps the one
    before it starts where that one ends)."""
    spans: list[Span] = []
    end = 0
    for i in np.flatnonzero(matches.lengths >= k).tolist():
        stop = i + int(matches.lengths[i])
        if stop <= end:
            continue
        start = max(i, end)
        spans.append(Span(start, stop - start, int(matches.where[i]) + start - i))
        end = stop
    return spans
