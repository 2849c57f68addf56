"""Corpora: reading text (built-in Shakespeare, a file or a folder), the validation split, and batches."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from charnn.errors import ConfigError, DataError
from charnn.vocab import Vocab

SHAKESPEARE = "shakespeare"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
_CONTROL_BYTES = np.array([b for b in range(32) if b not in (9, 10, 12, 13)] + [127], dtype=np.uint8)
_MAX_CONTROL_SHARE = 0.05
_WIDE_ENCODINGS = ("utf-16", "utf-32", "utf_16", "utf_32", "utf16", "utf32")


@dataclass(frozen=True)
class Corpus:
    """A text encoded to ids with its vocabulary, and where it came from."""

    ids: np.ndarray
    vocab: Vocab
    source: str
    sha256: str
    files: tuple[str, ...] = field(default=())
    skipped: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return len(self.ids)


def load_corpus(source: str = SHAKESPEARE, encoding: str = "utf-8", vocab: Vocab | None = None) -> Corpus:
    """Read `source` (`shakespeare`, a file or a folder) and encode it with `vocab` (default: its own)."""
    text, name, files, skipped = read_source(source, encoding)
    if not text:
        raise DataError(f"{name}: the corpus is empty")
    if vocab is None:
        vocab = Vocab.from_text(text)
    else:
        unknown = vocab.unknown(text)
        if unknown:
            shown = " ".join(repr(c) for c in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise DataError(f"{name}: {len(unknown)} characters not in the model's vocabulary: {shown}{more}")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Corpus(vocab.encode(text), vocab, name, digest, tuple(files), tuple(skipped))


def read_source(source: str, encoding: str = "utf-8") -> tuple[str, str, list[str], list[str]]:
    """The text of a source, its display name, the files read and the files skipped as binary."""
    if source == SHAKESPEARE:
        return _read_shakespeare(), SHAKESPEARE, [SHAKESPEARE], []
    path = Path(source).expanduser()
    if path.is_dir():
        return _read_folder(path, encoding)
    if not path.exists():
        raise DataError(f"{source}: no such file or folder (use a path, a folder or 'shakespeare')")
    return read_text_file(path, encoding), str(path.resolve()), [str(path.resolve())], []


def _read_shakespeare() -> str:
    raw = resources.files("charnn").joinpath("corpora/tinyshakespeare.txt").read_bytes()
    if hashlib.sha256(raw).hexdigest() != SHAKESPEARE_SHA256:
        raise DataError("the built-in tiny Shakespeare is damaged (sha256 mismatch); reinstall charnn")
    return raw.decode("utf-8")


def _read_folder(root: Path, encoding: str) -> tuple[str, str, list[str], list[str]]:
    paths = sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    texts, used, skipped = [], [], []
    for p in paths:
        raw = _read_bytes(p)
        if not _is_wide(encoding) and looks_binary(raw):
            skipped.append(str(p))
            continue
        text = decode_text(raw, p, encoding)
        if text:
            texts.append(text if text.endswith("\n") else text + "\n")
            used.append(str(p))
    if not used:
        raise DataError(f"{root}: the folder holds no non-empty text files")
    return "".join(texts), str(root.resolve()), used, skipped


def read_text_file(path: Path, encoding: str = "utf-8") -> str:
    """The text of one file; raises DataError for binary or undecodable content."""
    raw = _read_bytes(path)
    if not _is_wide(encoding) and raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: the file is UTF-16 encoded; pass --encoding utf-16")
    if not _is_wide(encoding) and looks_binary(raw):
        raise DataError(f"{path}: looks like a binary file (NUL bytes or many control characters), not text")
    return decode_text(raw, path, encoding)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror or e})") from None


def _is_wide(encoding: str) -> bool:
    return encoding.lower().startswith(_WIDE_ENCODINGS)


def looks_binary(raw: bytes) -> bool:
    """True when the bytes hold a NUL or more than 5% control characters other than whitespace."""
    if b"\x00" in raw:
        return True
    sample = np.frombuffer(raw[: 1 << 20], dtype=np.uint8)
    if sample.size == 0:
        return False
    return np.isin(sample, _CONTROL_BYTES).mean() > _MAX_CONTROL_SHARE


def decode_text(raw: bytes, path: Path, encoding: str = "utf-8") -> str:
    """Decode bytes, drop a byte-order mark and turn CRLF line ends into LF."""
    try:
        text = raw.decode(encoding)
    except LookupError:
        raise ConfigError(f"unknown text encoding {encoding!r} (try utf-8 or latin-1)") from None
    except UnicodeDecodeError as e:
        bad = raw[e.start : e.start + 1].hex()
        raise DataError(
            f"{path}: not valid {encoding} at byte {e.start} (0x{bad}); "
            "if the file uses another encoding, pass it, e.g. --encoding latin-1"
        ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def split(ids: np.ndarray, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation parts: validation is the last `val_fraction` of the text."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    cut = int(len(ids) * (1.0 - val_fraction))
    return ids[:cut], ids[cut:]


class WindowBatches:
    """The tutorial's batching: non-overlapping windows of seq_len+1 chars, reshuffled each epoch.

    Input is a window without its last char, target the window without its first; a batch holds
    `batch_size` windows and the remainder of an epoch is dropped. The order of epoch e depends
    only on (seed, e), so any batch can be rebuilt from its position alone.
    """

    carries_state = False

    def __init__(self, ids: np.ndarray, seq_len: int, batch_size: int, seed: int, name: str = "corpus"):
        if seq_len < 1 or batch_size < 1:
            raise ConfigError("--seq-len and --batch-size must be at least 1")
        count = len(ids) // (seq_len + 1)
        if count < batch_size:
            need = batch_size * (seq_len + 1)
            raise DataError(
                f"{name}: the training text has {len(ids):,} chars but one batch needs {need:,} "
                f"({batch_size} windows of {seq_len + 1}); use more text or lower --batch-size / --seq-len"
            )
        self.windows = ids[: count * (seq_len + 1)].reshape(count, seq_len + 1)
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.steps_per_epoch = count // batch_size
        self._order: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        """The shuffled window indices of an epoch."""
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = (epoch, rng.permutation(len(self.windows)))
        return self._order[1]

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of batch `index` of `epoch`, each (batch_size, seq_len) int64."""
        rows = self.order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        chunk = torch.from_numpy(self.windows[rows].astype(np.int64))
        return chunk[:, :-1], chunk[:, 1:]


class StreamBatches:
    """Stateful batching: the text cut into `batch_size` contiguous streams read window after window.

    Row b of every batch continues row b of the previous one, so the recurrent state is carried
    across batches (truncated back-propagation through time). Each epoch starts at a seeded offset
    below seq_len, so window boundaries move between epochs.
    """

    carries_state = True

    def __init__(self, ids: np.ndarray, seq_len: int, batch_size: int, seed: int, name: str = "corpus"):
        if seq_len < 1 or batch_size < 1:
            raise ConfigError("--seq-len and --batch-size must be at least 1")
        length = len(ids) // batch_size
        steps = (length - seq_len) // seq_len
        if steps < 1:
            need = batch_size * 2 * seq_len + batch_size
            raise DataError(
                f"{name}: the training text has {len(ids):,} chars but {batch_size} streams of "
                f"2 windows of {seq_len} need {need:,}; use more text or lower --batch-size / --seq-len"
            )
        self.streams = ids[: length * batch_size].reshape(batch_size, length)
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.steps_per_epoch = steps

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of window `index` of `epoch` for every stream."""
        offset = int(np.random.default_rng([self.seed, epoch]).integers(self.seq_len))
        start = offset + index * self.seq_len
        chunk = torch.from_numpy(self.streams[:, start : start + self.seq_len + 1].astype(np.int64))
        return chunk[:, :-1], chunk[:, 1:]
