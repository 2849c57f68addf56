"""Copy figures of texts built with known copied spans, and where in a corpus's files a span lies."""

import numpy as np
import pytest

from charnn.errors import ConfigError
from charnn.text.copying import Locator, copied_spans, covered, figures, span_lengths
from charnn.text.corpus import load_corpus
from charnn.text.suffix_index import SuffixIndex, build_suffixes


@pytest.fixture(scope="module")
def index():
    corpus = np.random.default_rng(0).integers(0, 10, 20_000).astype(np.uint8)
    return SuffixIndex(corpus, build_suffixes(corpus))


def novel(n: int) -> np.ndarray:
    """Ids the corpus never holds (it uses 0..9): nothing here can match."""
    return np.full(n, 11, dtype=np.uint8)


def test_figures_of_a_text_with_one_copied_block(index):
    text = np.concatenate([novel(100), index.ids[5000:5060], novel(40)])
    f = figures([text], index, spans=(20, 50, 100), ngrams=(8, 16))
    assert (f.longest.start, f.longest.length, f.longest.source) == (100, 60, 5000)
    assert f.copied_share == {20: 0.3, 50: 0.3, 100: 0.0}
    # distinct 8-grams: the block's 53, one run of 11s, 7 + 7 crossing into and out of the block
    assert f.novel_ngrams[8] == pytest.approx(15 / 68)
    assert f.chars == 200


def test_figures_pool_several_texts(index):
    pieces = [novel(50), np.concatenate([novel(10), index.ids[:30]])]
    f = figures(pieces, index, spans=(20,))
    assert f.longest.start == 60 and f.longest.length == 30
    assert f.copied_share[20] == pytest.approx(30 / 90)


def test_spans_do_not_overlap_and_point_at_their_source(index):
    text = np.concatenate([index.ids[100:140], index.ids[900:930], novel(5)])
    m = index.matches(text)
    spans = copied_spans(m, 20)
    assert (spans[0].start, spans[0].length, spans[0].source) == (0, 40, 100)
    assert sum(s.length for s in spans) == covered(m.lengths, 20).sum() == 70
    for s in spans:
        source = index.ids[s.source : s.source + s.length]
        assert source.tolist() == text[s.start : s.start + s.length].tolist()


def test_span_lengths_are_checked():
    assert span_lengths("20, 50,100") == (20, 50, 100)
    with pytest.raises(ConfigError, match="--spans must be positive whole numbers"):
        span_lengths("20,-5")


def test_locator_names_the_file_and_line(tmp_path):
    (tmp_path / "a.txt").write_text("one\ntwo\nthree\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("four\nfive", encoding="utf-8")
    corpus = load_corpus(str(tmp_path))
    where = Locator(corpus)
    text = "".join(corpus.vocab.chars[i] for i in corpus.ids)
    assert where(text.index("three")) == (str(tmp_path / "a.txt"), 3)
    assert where(text.index("five")) == (str(tmp_path / "b.txt"), 2)
    assert Locator(load_corpus("shakespeare"))(0) == ("shakespeare", 1)
    # a span that begins with the newline ending a line is placed where its visible text is
    assert where(text.index("\nthree")) == (str(tmp_path / "a.txt"), 3)
    assert where(text.index("\nfour")) == (str(tmp_path / "b.txt"), 1)
