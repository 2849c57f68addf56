"""The character vocabulary: the sorted set of characters of a text, and encoding to integer ids."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from charnn.errors import ConfigError, ModelFileError


@dataclass(frozen=True)
class Vocab:
    """An ordered tuple of distinct characters; a character's id is its position."""

    chars: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.chars:
            raise ConfigError("a vocabulary needs at least one character")
        if any(len(c) != 1 for c in self.chars):
            raise ConfigError("every vocabulary entry must be exactly one character")
        if list(self.chars) != sorted(set(self.chars)):
            raise ConfigError("vocabulary characters must be distinct and sorted")

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        """The vocabulary of `text`: its distinct characters in code point order (as the tutorial does)."""
        if not text:
            raise ConfigError("cannot build a vocabulary from empty text")
        return cls(tuple(sorted(set(text))))

    def __len__(self) -> int:
        return len(self.chars)

    @cached_property
    def _code_points(self) -> np.ndarray:
        return np.array([ord(c) for c in self.chars], dtype=np.uint32)

    @cached_property
    def _lookup(self) -> np.ndarray:
        """Id of every code point up to the largest in the vocabulary; -1 where not in it."""
        table = np.full(int(self._code_points.max()) + 1, -1, dtype=np.int32)
        table[self._code_points] = np.arange(len(self), dtype=np.int32)
        return table

    @property
    def dtype(self) -> np.dtype:
        """The smallest unsigned integer type that holds every id."""
        if len(self) <= 1 << 8:
            return np.dtype(np.uint8)
        if len(self) <= 1 << 16:
            return np.dtype(np.uint16)
        return np.dtype(np.uint32)

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of `text` that are not in the vocabulary, sorted."""
        return sorted(set(text) - set(self.chars))

    def encode(self, text: str) -> np.ndarray:
        """Ids of the characters of `text`; raises ConfigError naming any character not in the vocabulary."""
        try:
            codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        except UnicodeEncodeError:
            raise ConfigError("text holds an unpaired surrogate, which is not a character") from None
        table = self._lookup
        in_range = codes.size == 0 or int(codes.max()) < len(table)
        ids = table[codes] if in_range else np.full(len(codes), -1, dtype=np.int32)
        if ids.size and int(ids.min()) < 0:
            missing = ", ".join(repr(c) for c in self.unknown(text)[:10])
            raise ConfigError(f"characters not in the model's vocabulary: {missing}")
        return ids.astype(self.dtype)

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The text whose characters have these ids."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise ConfigError(f"ids must lie in [0, {len(self)})")
        return self._code_points[ids].astype("<u4").tobytes().decode("utf-32-le")

    def to_json(self) -> str:
        """The vocabulary as JSON (the contents of vocab.json)."""
        return json.dumps({"chars": list(self.chars)}, ensure_ascii=False, indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str = "vocab.json") -> Vocab:
        """Parse vocab.json; raises ModelFileError naming `source` when it is not a valid vocabulary."""
        try:
            data = json.loads(text)
            chars = data["chars"]
            if not isinstance(chars, list) or not all(isinstance(c, str) for c in chars):
                raise TypeError("'chars' must be a list of strings")
            return cls(tuple(chars))
        except (ValueError, KeyError, TypeError, ConfigError) as e:
            raise ModelFileError(f"{source}: not a valid vocabulary ({e})") from None
