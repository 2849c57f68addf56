import hashlib

import numpy as np
import pytest
import torch

from charnn.errors import DataError
from charnn.text.corpus import (
    SHAKESPEARE_SHA256,
    RandomBatches,
    StreamBatches,
    WindowBatches,
    load_corpus,
    split,
)
from charnn.text.files import looks_binary


def test_builtin_shakespeare_is_the_tutorial_corpus():
    corpus = load_corpus("shakespeare")
    assert len(corpus) == 1_115_394
    assert len(corpus.vocab) == 65
    assert corpus.sha256 == SHAKESPEARE_SHA256
    assert corpus.vocab.decode(corpus.ids[:14]) == "First Citizen:"


def test_validation_is_the_last_fraction():
    ids = np.arange(1_115_394)
    train, val = split(ids, 0.1)
    assert len(val) == 111_540
    assert val[0] == train[-1] + 1 and val[-1] == ids[-1]
    assert len(split(ids, 0.0)[1]) == 0


def test_file_with_bom_and_crlf_is_read_as_plain_text(tmp_path):
    path = tmp_path / "win.txt"
    path.write_bytes(b"\xef\xbb\xbfline one\r\nline two\r\n")
    corpus = load_corpus(str(path))
    assert corpus.vocab.decode(corpus.ids) == "line one\nline two\n"
    assert "\ufeff" not in corpus.vocab.chars and "\r" not in corpus.vocab.chars


def test_folder_reads_text_files_sorted_and_skips_binary_and_hidden(tmp_path):
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.md").write_text("third\n")
    (tmp_path / ".hidden.txt").write_text("never")
    (tmp_path / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    corpus = load_corpus(str(tmp_path))
    assert corpus.vocab.decode(corpus.ids) == "first\nsecond\nthird\n"
    assert [p.rsplit("/", 1)[-1] for p in corpus.skipped] == ["image.png"]


def test_corpus_hash_is_of_the_text(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abc\n")
    assert load_corpus(str(path)).sha256 == hashlib.sha256(b"abc\n").hexdigest()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"abc\x00def", "binary"),
        (b"ok text \xff\xfe broken", "not valid utf-8 at byte 8"),
        (b"\xff\xfeh\x00i\x00", "UTF-16"),
    ],
)
def test_unreadable_files_raise_data_error(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        load_corpus(str(path))


def test_other_encodings_are_accepted_when_named(tmp_path):
    path = tmp_path / "latin.txt"
    path.write_bytes("café\n".encode("latin-1"))
    assert (
        load_corpus(str(path), encoding="latin-1").vocab.decode(load_corpus(str(path), "latin-1").ids)
        == "café\n"
    )


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_corpus(str(tmp_path / "nope.txt"))
    with pytest.raises(DataError, match="no non-empty text files"):
        load_corpus(str(tmp_path))


def test_looks_binary_tolerates_ordinary_whitespace():
    assert not looks_binary(b"tab\tnew\nline\r\nform\x0cfeed")
    assert looks_binary(bytes(range(1, 32)) * 10)


def test_windows_are_non_overlapping_chunks_with_shifted_targets():
    ids = np.arange(1000, dtype=np.uint16)
    batches = WindowBatches(ids, seq_len=9, batch_size=4, seed=0)
    assert batches.steps_per_epoch == (1000 // 10) // 4
    x, y = batches.batch(0, 0)
    assert x.shape == y.shape == (4, 9) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.all(x[:, 0] % 10 == 0)  # every window starts on a chunk boundary
    seen = torch.cat([batches.batch(0, i)[0][:, 0] for i in range(batches.steps_per_epoch)])
    assert len(set(seen.tolist())) == len(seen)  # each chunk at most once per epoch


def test_window_order_is_seeded_and_changes_per_epoch():
    ids = np.arange(5000, dtype=np.uint16)
    a = WindowBatches(ids, 9, 4, seed=1)
    b = WindowBatches(ids, 9, 4, seed=1)
    assert torch.equal(a.batch(3, 2)[0], b.batch(3, 2)[0])
    assert not torch.equal(a.batch(0, 0)[0], a.batch(1, 0)[0])
    assert not torch.equal(a.batch(0, 0)[0], WindowBatches(ids, 9, 4, seed=2).batch(0, 0)[0])


def test_too_short_text_says_how_much_is_needed():
    with pytest.raises(DataError, match="one batch needs 6,464"):
        WindowBatches(np.zeros(6000, dtype=np.uint8), seq_len=100, batch_size=64, seed=0)


def test_streams_continue_across_batches():
    ids = np.arange(4 * 500, dtype=np.uint16)
    batches = StreamBatches(ids, seq_len=10, batch_size=4, seed=0)
    x0, y0 = batches.batch(0, 0)
    x1, _ = batches.batch(0, 1)
    assert torch.equal(x1[:, 0], y0[:, -1])  # the next window starts where the last one ended
    assert torch.equal(x0[:, 1:], y0[:, :-1])
    assert torch.all(x0[1:, 0] - x0[:-1, 0] == 500)  # rows are separate contiguous streams
    last = batches.steps_per_epoch - 1
    assert batches.batch(0, last)[1].shape == (4, 10)


def test_random_windows_start_anywhere_and_are_reproducible():
    ids = np.arange(10_000, dtype=np.uint16)
    batches = RandomBatches(ids, seq_len=16, batch_size=8, seed=3)
    x, y = batches.batch(2, 5)
    assert x.shape == y.shape == (8, 16) and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.all(y[:, -1] - x[:, 0] == 16)  # contiguous windows of seq_len+1
    assert torch.equal(x, RandomBatches(ids, 16, 8, seed=3).batch(2, 5)[0])
    starts = torch.cat([batches.batch(0, i)[0][:, 0] for i in range(50)])
    assert (starts % 17 != 0).any()  # not tied to a chunk grid
    assert batches.steps_per_epoch == 10_000 // 17 // 8
