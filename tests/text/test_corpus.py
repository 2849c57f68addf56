import hashlib
import json

import numpy as np
import pytest

from charnn.errors import DataError
from charnn.text.corpus import SHAKESPEARE_SHA256, load_corpus, split
from charnn.text.files import looks_binary
from conftest import TINY_FLAGS, run_cli


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


def test_a_run_inside_its_data_folder_is_not_read_as_text(tmp_path):
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("a quick brown fox jumps over the lazy dog\n" * 300)
    common = ["--data", ".", "--quiet", *TINY_FLAGS]
    first = run_cli("train", *common, "--out", "runs/one", "--max-steps", "4", cwd=texts)
    assert first.returncode == 0, first.stderr
    resumed = run_cli("train", "--out", "runs/one", "--resume", "--max-steps", "6", cwd=texts)
    assert resumed.returncode == 0, resumed.stderr  # it once found its text changed: the run's own JSON
    again = run_cli("train", *common, "--out", "runs/two", "--max-steps", "4", cwd=texts)
    assert again.returncode == 0 and "skipped" not in again.stderr, again.stderr
    configs = [texts / f"runs/{run}/model/config.json" for run in ("one", "two")]
    seen = [json.loads(c.read_text())["training"] for c in configs]
    assert seen[0]["data_sha256"] == seen[1]["data_sha256"]  # the second run read only a.txt too
