"""Bad or odd corpora, through the real CLI: one clear stderr line and a non-zero exit, or accepted."""

import json
import os

import pytest

from conftest import TINY_FLAGS, assert_clean_error, run_cli

QUICK = ["--max-steps", "1", "--quiet", *TINY_FLAGS]
TEXT = "To be, or not to be, that is the question:\n" * 60


def train(tmp_path, data, *extra):
    return run_cli("train", "--data", str(data), "--out", str(tmp_path / "run"), *QUICK, *extra)


def write(tmp_path, name, content: bytes):
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "needles"),
    [
        ("empty.txt", b"", ["empty.txt", "empty"]),
        ("short.txt", b"hello\n", ["short.txt", "one batch needs 264"]),
        ("nul.txt", b"text\x00with a NUL byte\n" * 20, ["nul.txt", "binary"]),
        ("ctrl.txt", bytes(range(1, 9)) * 200, ["ctrl.txt", "binary"]),
        ("bad.txt", TEXT.encode()[:100] + b"\xc3\x28" + TEXT.encode(), ["bad.txt", "byte 100", "--encoding"]),
        ("wide.txt", TEXT.encode("utf-16"), ["wide.txt", "UTF-16", "--encoding utf-16"]),
    ],
)
def test_unusable_files(tmp_path, name, content, needles):
    assert_clean_error(train(tmp_path, write(tmp_path, name, content)), *needles)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("command", ["evaluate", "copying"])
@pytest.mark.parametrize(
    ("content", "problem"),
    [("café naïve ".encode("latin-1") * 200, "not valid utf-8 at byte 3"), (TEXT.encode("utf-16"), "UTF-16")],
)
def test_commands_without_encoding_give_advice_they_can_take(
    trained_run, tmp_path, command, content, problem
):
    # Only train has --encoding: elsewhere the text must be in the model's encoding, and the flag is train's.
    data = write(tmp_path, "other.txt", content)
    result = run_cli(command, str(trained_run), "--data", str(data))
    assert_clean_error(result, "other.txt", problem, "convert it to utf-8", "with charnn train --encoding")
    assert "unrecognized arguments" in run_cli(command, str(trained_run), "--encoding", "latin-1").stderr


def test_missing_path_and_folder_without_text(tmp_path):
    assert_clean_error(train(tmp_path, tmp_path / "nope.txt"), "nope.txt", "no such file")
    folder = tmp_path / "pics"
    folder.mkdir()
    write(folder, "a.png", b"\x89PNG\r\n\x1a\n\x00\x00")
    assert_clean_error(train(tmp_path, folder), "pics", "no non-empty text files")


def test_a_pipe_is_not_a_corpus(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    assert_clean_error(train(tmp_path, tmp_path / "pipe"), "pipe", "not a regular file")


def test_unknown_encoding_name(tmp_path):
    result = train(tmp_path, write(tmp_path, "t.txt", TEXT.encode()), "--encoding", "klingon")
    assert_clean_error(result, "unknown text encoding 'klingon'")


def test_validation_split_too_small_says_what_to_do(tmp_path):
    result = train(tmp_path, write(tmp_path, "t.txt", TEXT.encode()), "--val-fraction", "0.01")
    assert_clean_error(result, "validation split holds 26 chars", "--val-fraction")


@pytest.mark.parametrize(
    ("content", "extra"),
    [
        ("café naïve ".encode("latin-1") * 200, ["--encoding", "latin-1"]),
        (TEXT.encode("utf-16"), ["--encoding", "utf-16"]),
        (b"\xef\xbb\xbf" + TEXT.replace("\n", "\r\n").encode(), []),
        (b"no newline at all; " * 110_000, []),  # 2 MB on one line
    ],
)
def test_odd_but_valid_text_is_accepted(tmp_path, content, extra):
    result = train(tmp_path, write(tmp_path, "t.txt", content), *extra)
    assert result.returncode == 0, result.stderr
    vocab = json.loads(run_cli("info", str(tmp_path / "run"), "--json").stdout)["vocab"]
    assert "\ufeff" not in vocab and "\r" not in vocab


def test_more_than_65535_symbols_train(tmp_path):
    ranges = (range(0x4E00, 0x9FFF), range(0xAC00, 0xD7A3), range(0x20000, 0x2A6DF))
    chars = [chr(c) for r in ranges for c in r]
    assert len(set(chars)) > 65_535
    text = "".join(chars) + "\n"
    result = train(tmp_path, write(tmp_path, "han.txt", text.encode()), "--val-fraction", "0.01")
    assert result.returncode == 0, result.stderr
    info = json.loads(run_cli("info", str(tmp_path / "run"), "--json").stdout)
    assert info["vocab_size"] == len(set(text)) > 65_535


def test_an_empty_data_or_a_loop_of_links_is_refused(tmp_path):
    (tmp_path / "a.txt").write_text(TEXT)  # what an empty --data read before: the whole current folder
    (tmp_path / "loopA").symlink_to(tmp_path / "loopB")
    (tmp_path / "loopB").symlink_to(tmp_path / "loopA")
    empty = run_cli("train", "--data", "", "--out", "run", *QUICK, cwd=tmp_path)
    assert_clean_error(empty, "--data is empty")
    assert_clean_error(train(tmp_path, tmp_path / "loopA"), "loopA", "a loop of symbolic links")
    assert not (tmp_path / "run").exists()
