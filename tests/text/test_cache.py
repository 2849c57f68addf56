"""Big corpora go through an encoded, memory-mapped cache that must read exactly like the in-memory path."""

import json
from pathlib import Path

import numpy as np
import pytest

import charnn.fileio
import charnn.text.cache
import charnn.text.corpus
import charnn.text.files
from charnn.errors import DataError
from charnn.text.corpus import load_corpus
from charnn.text.vocab import Vocab


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Force the cache path for any file and read in 7-byte chunks, so chunk edges fall everywhere."""
    monkeypatch.setattr(charnn.text.corpus, "BIG_CORPUS_BYTES", 0)
    monkeypatch.setattr(charnn.text.files, "CHUNK_BYTES", 7)


def test_cached_corpus_equals_the_in_memory_one(tmp_path, monkeypatch):
    text = "\ufeffline one\r\nnaïve café — 日本語 😀\r\nlast\r"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    small = load_corpus(str(path))
    monkeypatch.setattr(charnn.text.corpus, "BIG_CORPUS_BYTES", 0)
    monkeypatch.setattr(charnn.text.files, "CHUNK_BYTES", 7)
    big = load_corpus(str(path))
    assert isinstance(big.ids, np.memmap)
    assert big.vocab == small.vocab and big.sha256 == small.sha256
    assert np.array_equal(np.asarray(big.ids), small.ids)
    assert big.vocab.decode(big.ids) == "line one\nnaïve café — 日本語 😀\nlast\r"


def test_cache_is_reused_while_unchanged_and_rebuilt_when_changed(tmp_path, tiny_chunks):
    path = tmp_path / "t.txt"
    path.write_text("abc\n" * 50)
    first = load_corpus(str(path))
    ids_file = Path(first.ids.filename)
    stamp = ids_file.stat().st_mtime_ns
    again = load_corpus(str(path))
    assert Path(again.ids.filename) == ids_file and ids_file.stat().st_mtime_ns == stamp
    path.write_text("xyz\n" * 60)
    changed = load_corpus(str(path))
    assert changed.vocab.chars == ("\n", "x", "y", "z") and len(changed) == 240
    assert changed.sha256 != first.sha256


def test_folder_through_the_cache(tmp_path, tiny_chunks):
    (tmp_path / "a.txt").write_text("first")
    (tmp_path / "b.txt").write_text("second\n")
    (tmp_path / "c.bin").write_bytes(b"\x00\x01\x02" * 10)
    corpus = load_corpus(str(tmp_path))
    assert corpus.vocab.decode(corpus.ids) == "first\nsecond\n"
    assert [p.rsplit("/", 1)[-1] for p in corpus.skipped] == ["c.bin"]


def test_invalid_utf8_deep_in_a_big_file_names_its_offset(tmp_path, tiny_chunks):
    path = tmp_path / "t.txt"
    path.write_bytes(b"a" * 30 + "é".encode() + b"b" * 10 + b"\xff" + b"c" * 5)
    with pytest.raises(DataError, match="at byte 42"):
        load_corpus(str(path))


def test_nul_deep_in_a_big_file_is_refused(tmp_path, tiny_chunks, monkeypatch):
    monkeypatch.setattr(charnn.text.files, "_SNIFF_BYTES", 16)  # the NUL lies past the first look
    path = tmp_path / "t.txt"
    path.write_bytes(b"plain text " * 5 + b"\x00" + b"more")
    with pytest.raises(DataError, match="NUL byte at byte 55"):
        load_corpus(str(path))


def test_cached_corpus_in_a_models_vocabulary(tmp_path, tiny_chunks):
    path = tmp_path / "t.txt"
    path.write_text("cab\n" * 10)
    vocab = Vocab.from_text("abcdz\n")
    corpus = load_corpus(str(path), vocab=vocab)
    assert corpus.vocab == vocab and vocab.decode(corpus.ids) == "cab\n" * 10
    with pytest.raises(DataError, match="a character not in the model's vocabulary: 'c'"):
        load_corpus(str(path), vocab=Vocab.from_text("abq\n"))


@pytest.mark.parametrize(
    "damage",
    [
        lambda meta: '{"signature": [1, ',
        lambda meta: "null",
        lambda meta: "[]",
        lambda meta: json.dumps({k: v for k, v in meta.items() if k != "length"}),
        lambda meta: json.dumps({**meta, "length": 0}),
        lambda meta: json.dumps({**meta, "dtype": 5}),
        lambda meta: json.dumps({**meta, "dtype": "uint32"}),
        lambda meta: json.dumps({**meta, "chars": None}),
        lambda meta: json.dumps({**meta, "chars": [1, 2]}),
        lambda meta: json.dumps({**meta, "chars": ["b", "a"]}),
        lambda meta: json.dumps({**meta, "sha256": None}),
    ],
    ids=[
        "cut short",
        "null",
        "list",
        "no length",
        "length 0",
        "dtype a number",
        "dtype wrong",
        "chars null",
        "chars numbers",
        "chars unsorted",
        "sha256 null",
    ],
)
def test_damaged_cache_metadata_is_rebuilt(tmp_path, tiny_chunks, damage):
    path = tmp_path / "t.txt"
    path.write_text("abc\n" * 50)
    first = load_corpus(str(path))
    meta_path = Path(first.ids.filename).with_suffix(".json")
    meta_path.write_text(damage(json.loads(meta_path.read_text())))
    again = load_corpus(str(path))
    assert again.vocab == first.vocab and again.sha256 == first.sha256
    assert again.vocab.decode(again.ids) == "abc\n" * 50
    assert json.loads(meta_path.read_text())["length"] == 200  # written whole again


@pytest.mark.parametrize("added", ["ÆØÅ new chars", "abc\n"])  # chars the first pass saw or not
def test_a_file_written_to_between_the_two_passes_is_refused_then_read_once_still(
    tmp_path, tiny_chunks, monkeypatch, added
):
    path = tmp_path / "t.txt"
    path.write_text("abc\n" * 50)
    calls = []

    def iter_text_while_written(*args):
        calls.append(args)
        if len(calls) == 2:  # the second pass: something appends to the file first
            with path.open("a") as f:
                f.write(added)
        yield from charnn.text.files.iter_text(*args)

    monkeypatch.setattr(charnn.text.cache, "iter_text", iter_text_while_written)
    cached = Path(charnn.fileio.cache_root(), "corpora")
    before = set(cached.iterdir()) if cached.exists() else set()
    with pytest.raises(DataError, match=r"t\.txt: changed while it was read; try again"):
        load_corpus(str(path))
    assert set(cached.iterdir()) == before  # nothing cached from it, no temp file left
    corpus = load_corpus(str(path))  # read again, now that nothing writes to it
    assert corpus.vocab.decode(corpus.ids) == "abc\n" * 50 + added
