"""Big corpora: text encoded once, chunk by chunk, to an array of ids on disk, memory-mapped after that.

The cache lives in the user cache folder (or $CHARNN_CACHE_DIR): for each set of files an `.ids` array and a
small JSON (vocabulary, sha256 of the text, length, and the files' sizes and modification times). It is
reused while the files are unchanged and rebuilt when any of them changed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from charnn.errors import ConfigError, DataError
from charnn.fileio import atomic_stream, atomic_write, cache_root, cached_sidecar, write_error
from charnn.text.files import iter_text
from charnn.text.vocab import Vocab

CACHE_VERSION = 1


def _signature(files: list[Path], encoding: str, folder: bool) -> list:
    stats = [(str(p.resolve()), p.stat()) for p in files]
    return [CACHE_VERSION, encoding, folder, [[name, st.st_size, st.st_mtime_ns] for name, st in stats]]


def encoded_corpus(files: list[Path], encoding: str, folder: bool) -> tuple[np.ndarray, Vocab, str]:
    """Memory-mapped ids, vocabulary and text sha256 of the files read one after another (cached)."""
    signature = _signature(files, encoding, folder)
    key = hashlib.sha256(json.dumps([signature[1:3], [s[0] for s in signature[3]]]).encode()).hexdigest()[:24]
    cache = cache_root() / "corpora"
    meta_path, ids_path = cache / f"{key}.json", cache / f"{key}.ids"
    meta = _valid_meta(meta_path, ids_path, signature)
    if meta is None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise write_error(cache, e) from None
        meta = _build(files, encoding, folder, signature, ids_path, meta_path)
    if meta["length"] == 0:
        raise DataError(f"{files[0]}: the corpus is empty")
    ids = np.memmap(ids_path, dtype=meta["dtype"], mode="r", shape=(meta["length"],))
    return ids, Vocab(tuple(meta["chars"])), meta["sha256"]


def _valid_meta(meta_path: Path, ids_path: Path, signature: list) -> dict | None:
    """The cached metadata when it is of these files as they are now and matches the ids on disk, else None
    (a damaged file of any shape included: it is rebuilt)."""
    cached = cached_sidecar(meta_path, ids_path)
    if cached is None:
        return None
    meta, size = cached
    if meta.get("signature") != signature:
        return None
    length, chars = meta.get("length"), meta.get("chars")
    if type(length) is not int or length <= 0 or not isinstance(meta.get("sha256"), str):
        return None  # an empty corpus is never cached, so a length of 0 is damage too
    if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
        return None
    try:
        dtype = Vocab(tuple(chars)).dtype
    except ConfigError:
        return None
    if meta.get("dtype") != dtype.name or size != length * dtype.itemsize:
        return None
    return meta


def _build(
    files: list[Path],
    encoding: str,
    folder: bool,
    signature: list,
    ids_path: Path,
    meta_path: Path,
) -> dict:
    """Two streaming passes: the vocabulary and hash, then the ids."""
    chars: set[str] = set()
    digest = hashlib.sha256()
    length = 0
    for text in iter_text(files, encoding, folder):
        chars.update(text)
        digest.update(text.encode("utf-8"))
        length += len(text)
    meta = {"signature": signature, "length": length, "sha256": digest.hexdigest(), "chars": sorted(chars)}
    if not length:
        meta["dtype"] = "uint8"
        ids_path.write_bytes(b"")
        return meta
    vocab = Vocab(tuple(meta["chars"]))
    meta["dtype"] = vocab.dtype.name
    atomic_stream(ids_path, _encoded_again(files, encoding, folder, vocab, meta["sha256"]))
    atomic_write(meta_path, json.dumps(meta, ensure_ascii=False).encode("utf-8"))
    return meta


def _encoded_again(
    files: list[Path], encoding: str, folder: bool, vocab: Vocab, sha256: str
) -> Iterator[bytes]:
    """The second pass's ids, chunk by chunk; a text that is not the one the first pass read (a file written
    to meanwhile) is refused, not encoded against the first pass's vocabulary."""
    changed = DataError(
        f"{files[0] if len(files) == 1 else f'the corpus ({len(files)} files)'}: changed while it was read; "
        "try again once nothing writes to it"
    )
    digest = hashlib.sha256()
    for text in iter_text(files, encoding, folder):
        digest.update(text.encode("utf-8"))
        try:
            yield vocab.encode(text).tobytes()
        except ConfigError:
            raise changed from None
    if digest.hexdigest() != sha256:
        raise changed
