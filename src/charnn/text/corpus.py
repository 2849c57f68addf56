"""Corpora (built-in Shakespeare, a file, a folder or a URL) encoded to ids, and the validation split."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np

from charnn.errors import ConfigError, DataError
from charnn.text.files import check_text_file, iter_text, list_text_files
from charnn.text.vocab import Vocab

SHAKESPEARE = "shakespeare"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
BIG_CORPUS_BYTES = 64 << 20  # above this, a corpus is encoded to a memory-mapped cache, not read into memory


@dataclass(frozen=True)
class Corpus:
    """A text encoded to ids (in memory or memory-mapped) with its vocabulary, and where it came from."""

    ids: np.ndarray
    vocab: Vocab
    source: str
    sha256: str
    files: tuple[str, ...] = field(default=())
    skipped: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.ids)


def load_corpus(
    source: str = SHAKESPEARE, encoding: str = "utf-8", vocab: Vocab | None = None, quiet: bool = False
) -> Corpus:
    """Read `source` (`shakespeare`, a file, a folder or a URL); encode it with `vocab` (default: its own).
    `quiet`: no progress bar for a download."""
    if source == SHAKESPEARE:
        text, name, files, skipped, folder = _read_shakespeare(), SHAKESPEARE, [], [], False
    else:
        name, files, skipped, folder = _find_files(source, encoding, quiet)
        if sum(p.stat().st_size for p in files) > BIG_CORPUS_BYTES:
            from charnn.text.cache import encoded_corpus

            ids, own, digest = encoded_corpus(files, encoding, folder)
            ids = ids if vocab is None or own == vocab else _recode(ids, own, vocab, name)
            return Corpus(ids, vocab or own, name, digest, tuple(map(str, files)), tuple(map(str, skipped)))
        text = "".join(iter_text(files, encoding, folder))
    if not text:
        raise DataError(f"{name}: the corpus is empty")
    if vocab is None:
        vocab = Vocab.from_text(text)
    else:
        _check_known(vocab.unknown(text), name)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Corpus(vocab.encode(text), vocab, name, digest, tuple(map(str, files)), tuple(map(str, skipped)))


def with_vocab(corpus: Corpus, vocab: Vocab) -> Corpus:
    """`corpus` with its ids in `vocab`, which must hold every character of the corpus's own."""
    if vocab == corpus.vocab:
        return corpus
    return replace(corpus, ids=_recode(corpus.ids, corpus.vocab, vocab, corpus.source), vocab=vocab)


def training_text(training: dict, data: str | None, vocab: Vocab, model: object) -> Corpus:
    """The text a model was trained on, found from its training record (or at `data`, where it moved)."""
    if data == "":
        raise ConfigError("--data is empty: give the path of a text")
    source = data or training.get("data")
    if not source:
        raise ConfigError(f"{model}: the model does not record its training text; pass --data")
    if not data and not (source == SHAKESPEARE or is_url(source) or Path(source).exists()):
        raise DataError(f"{source}: the model's training text is no longer there; pass --data PATH")
    corpus = load_corpus(source, training.get("encoding", "utf-8"))
    recorded = training.get("data_sha256")
    if not data and recorded and corpus.sha256 != recorded:  # its splits would not be the ones trained on
        raise DataError(  # checked before the vocabulary: a char added to the text is this change too
            f"{source}: the text changed since the model was trained on it (sha256 differs); "
            "pass --data PATH to use it as it is now"
        )
    return with_vocab(corpus, vocab)


def warn_skipped(skipped: tuple[str, ...] | list[str]) -> None:
    """Name each file of a --data folder that was left out (warnings show even with --quiet)."""
    for path in skipped:
        print(f"charnn: warning: {path}: skipped, it looks binary (not text)", file=sys.stderr)


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def canonical_source(source: str) -> str:
    """`shakespeare` and URLs as they are; a path made absolute, so a run can be resumed from anywhere."""
    if source == SHAKESPEARE or is_url(source):
        return source
    if not source:  # "$UNSET" would else be the current folder, read whole
        raise ConfigError("--data is empty: give the path of a text")
    try:
        return str(Path(source).expanduser().resolve())
    except RuntimeError:  # resolve()'s word for a loop of symbolic links
        raise DataError(f"{source}: a loop of symbolic links, not a text") from None


def _check_known(unknown: list[str], name: str) -> None:
    if unknown:
        shown = " ".join(repr(c) for c in unknown[:10])
        more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
        count = f"{len(unknown)} characters" if len(unknown) > 1 else "a character"
        raise DataError(f"{name}: {count} not in the model's vocabulary: {shown}{more}")


def _recode(ids: np.ndarray, own: Vocab, vocab: Vocab, name: str) -> np.ndarray:
    """Ids of a corpus in its own vocabulary, translated to those of `vocab` (which must hold every char)."""
    _check_known(sorted(set(own.chars) - set(vocab.chars)), name)
    return vocab.encode("".join(own.chars))[ids]


def _find_files(source: str, encoding: str, quiet: bool) -> tuple[str, list[Path], list[Path], bool]:
    """Display name, files to read, files skipped as binary, and whether the source is a folder."""
    if is_url(source):
        from charnn.text.download import fetch

        path = fetch(source, quiet)
        check_text_file(path, encoding)
        return source, [path], [], False
    path = Path(source).expanduser()
    if path.is_dir():
        files, skipped = list_text_files(path, encoding)
        if not files or not any(p.stat().st_size for p in files):
            raise DataError(f"{path}: the folder holds no non-empty text files")
        return str(path.resolve()), files, skipped, True
    if not path.exists():
        raise DataError(f"{source}: no such file or folder (use a path, a folder, a URL or 'shakespeare')")
    check_text_file(path, encoding)
    return str(path.resolve()), [path], [], False


def _read_shakespeare() -> str:
    raw = resources.files("charnn").joinpath("corpora/tinyshakespeare.txt").read_bytes()
    if hashlib.sha256(raw).hexdigest() != SHAKESPEARE_SHA256:
        raise DataError("the built-in tiny Shakespeare is damaged (sha256 mismatch); reinstall charnn")
    return raw.decode("utf-8")


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation parts: validation is the last `val_fraction` of the text."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    cut = int(len(ids) * (1.0 - val_fraction))
    return ids[:cut], ids[cut:]
