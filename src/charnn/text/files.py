"""Reading text files: finding them, refusing binary ones, decoding in chunks, normalising line ends.

Every corpus is read through `iter_text`, small or large, so all share the same rules: a byte-order mark
is dropped, CRLF becomes LF, and in a folder each file that does not end with a newline gets one.
"""

from __future__ import annotations

import codecs
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from charnn.errors import ConfigError, DataError

CHUNK_BYTES = 16 << 20
_SNIFF_BYTES = 1 << 20
_CONTROL_BYTES = np.array([b for b in range(32) if b not in (9, 10, 12, 13)] + [127], dtype=np.uint8)
_MAX_CONTROL_SHARE = 0.05


def is_wide(encoding: str) -> bool:
    """True for UTF-16/UTF-32, where NUL bytes are normal."""
    return encoding.lower().replace("_", "-").startswith(("utf-16", "utf-32", "utf16", "utf32"))


def looks_binary(raw: bytes) -> bool:
    """True when the bytes hold a NUL or more than 5% control characters other than whitespace."""
    if b"\x00" in raw:
        return True
    sample = np.frombuffer(raw[:_SNIFF_BYTES], dtype=np.uint8)
    return bool(sample.size) and np.isin(sample, _CONTROL_BYTES).mean() > _MAX_CONTROL_SHARE


def _head(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(_SNIFF_BYTES)
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from None


def list_text_files(root: Path, encoding: str) -> tuple[list[Path], list[Path]]:
    """Non-hidden files under `root`, sorted by path, but for those in charnn's own folders (a run, a model,
    an export: `--data .` beside `--out runs/...` would else train on the run's JSON, and its resume would
    find the text changed): those that look like text, and those skipped."""
    found = [p for p in root.rglob("*") if not any(x.startswith(".") for x in p.relative_to(root).parts)]
    own = {p for p in found if p.is_dir() and _charnn_folder(p)}
    paths = sorted(p for p in found if p.is_file() and own.isdisjoint(p.parents))
    if is_wide(encoding):
        return paths, []
    text = [p for p in paths if not looks_binary(_head(p))]
    return text, [p for p in paths if p not in set(text)]


def _charnn_folder(folder: Path) -> bool:
    """Whether charnn wrote `folder`: a run (train_args.json), an export (charnn.json) or a model."""
    if (folder / "train_args.json").is_file() or (folder / "charnn.json").is_file():
        return True
    return (folder / "config.json").is_file() and (folder / "vocab.json").is_file()


def check_text_file(path: Path, encoding: str) -> None:
    """Refuse a file that is clearly not text in `encoding`, before reading it all."""
    if not path.is_file():
        raise DataError(f"{path}: not a regular file (a device or pipe cannot be a corpus)")
    if is_wide(encoding):
        return
    head = _head(path)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: the file is UTF-16 encoded; {_convert_or_train(encoding, 'utf-16')}")
    if looks_binary(head):
        raise DataError(f"{path}: looks like a binary file (NUL bytes or many control characters), not text")


def _convert_or_train(encoding: str, actual: str) -> str:
    """What to do about a file that is not in `encoding`. Only `train` has --encoding; every other command
    reads text in the encoding its model was trained with, so the advice names the command that has it."""
    return f"convert it to {encoding}, or train on it as it is with charnn train --encoding {actual}"


def read_given_text(source: str, encoding: str = "utf-8", max_chars: int | None = None) -> str:
    """The text of a FILE given to check or inspect, or of stdin for '-', read as a corpus is (in the
    model's `encoding`, CRLF as LF, a BOM dropped); one of more than `max_chars` is refused unread."""
    # 4 bytes a char at most in any encoding: so many bytes hold more than max_chars
    limit = -1 if max_chars is None else 4 * max_chars + 4
    try:
        if source == "-":
            if sys.stdin is None:
                raise DataError("-: stdin is closed; give the text in a file")
            raw = sys.stdin.buffer.read(limit)
        else:
            with Path(source).expanduser().open("rb") as f:
                raw = f.read(limit)
    except FileNotFoundError:
        raise DataError(f"{source}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{source}: a folder, not a text file") from None
    except OSError as e:
        raise DataError(f"{source}: cannot read the file ({e.strerror or e})") from None
    if max_chars is not None and len(raw) == limit:
        raise DataError(
            f"{source}: holds over {max_chars:,} chars; at most {max_chars:,} at once (cut it into parts)"
        )
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(f"{source}: not valid {encoding} at byte {e.start}; give {encoding} text") from None
    return text.replace("\r\n", "\n").removeprefix("\ufeff")  # as a corpus is read (_iter_file)


def iter_text(files: list[Path], encoding: str, folder: bool = False) -> Iterator[str]:
    """The files' text, chunk by chunk; with `folder`, a newline after each file that lacks one."""
    for path in files:
        last = ""
        for text in _iter_file(path, encoding):
            if text:
                last = text[-1]
                yield text
        if folder and last and last != "\n":
            yield "\n"


def _iter_file(path: Path, encoding: str) -> Iterator[str]:
    try:
        decoder = codecs.getincrementaldecoder(encoding)("strict")
    except LookupError:
        raise ConfigError(f"unknown text encoding {encoding!r} (try utf-8 or latin-1)") from None
    wide = is_wide(encoding)
    offset, pending_cr, first = 0, "", True
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed below; reads interleave with yields)
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from None
    with f:
        while True:
            raw = f.read(CHUNK_BYTES)
            final = not raw
            nul = -1 if wide else raw.find(b"\x00")
            if nul >= 0:
                raise DataError(f"{path}: holds a NUL byte at byte {offset + nul:,}; not a text file")
            held = len(getattr(decoder, "buffer", b""))
            try:
                text = decoder.decode(raw, final)
            except UnicodeDecodeError as e:
                where = offset - held + e.start
                raise DataError(
                    f"{path}: not valid {encoding} at byte {where}; "
                    + _convert_or_train(encoding, "NAME (e.g. latin-1)")
                ) from None
            if first:
                text, first = text.removeprefix("\ufeff"), False
            text = pending_cr + text
            pending_cr = "\r" if text.endswith("\r") and not final else ""
            yield text[: len(text) - len(pending_cr)].replace("\r\n", "\n")
            if final:
                return
            offset += len(raw)
