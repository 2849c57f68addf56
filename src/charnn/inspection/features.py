"""Simple features of a text, one value per char, and the unit finder: the hidden units of each layer whose
activation follows a feature best (Pearson correlation over the text)."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

SPEAKER = re.compile(r"[A-Z][A-Za-z' ]{0,40}:$")  # a line such as "First Citizen:" (Shakespeare-like text)


def _inside(text: str, opening: str, closing: str) -> np.ndarray:
    """1 for chars after an opening mark and before its closing one (nesting counted), else 0."""
    depth, out = 0, np.zeros(len(text))
    for i, c in enumerate(text):
        if c in closing and (c not in opening or depth):
            depth = max(depth - 1, 0)
        elif c in opening:
            depth += 1
            continue
        out[i] = depth > 0
    return out


def inside_quotes(text: str) -> np.ndarray:
    return _inside(text, '"', '"')


def inside_brackets(text: str) -> np.ndarray:
    return _inside(text, "([{", ")]}")


def _per_line(text: str, value: Callable[[str, int], float]) -> np.ndarray:
    """value(line, column) for each char, the newline ending a line counted in it."""
    out = np.zeros(len(text))
    at = 0
    for line in text.split("\n"):
        for column in range(len(line) + 1):
            if at + column < len(text):
                out[at + column] = value(line, column)
        at += len(line) + 1
    return out


def position_in_line(text: str) -> np.ndarray:
    return _per_line(text, lambda line, column: column)


def speaker_line(text: str) -> np.ndarray:
    return _per_line(text, lambda line, column: bool(SPEAKER.match(line)))


def indentation(text: str) -> np.ndarray:
    return _per_line(text, lambda line, column: len(line) - len(line.lstrip(" \t")))


def word_start(text: str) -> np.ndarray:
    return np.array(
        [c.isalnum() and (i == 0 or not text[i - 1].isalnum()) for i, c in enumerate(text)], float
    )


def upper_case(text: str) -> np.ndarray:
    return np.array([c.isupper() for c in text], float)


FEATURES: dict[str, Callable[[str], np.ndarray]] = {
    "inside quotes": inside_quotes,
    "inside brackets": inside_brackets,
    "position in line": position_in_line,
    "start of a word": word_start,
    "upper case": upper_case,
    "speaker line": speaker_line,
    "indentation": indentation,
}


def correlations(activations: np.ndarray, feature: np.ndarray) -> np.ndarray | None:
    """Pearson correlation of each unit (column) with the feature; None for a feature constant here."""
    f = feature - feature.mean()
    if not np.any(f):
        return None
    a = activations - activations.mean(axis=0)
    norms = np.sqrt((a * a).sum(axis=0) * (f * f).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (f @ a) / norms
    return np.nan_to_num(r)


def find_units(activations: np.ndarray, text: str, top: int = 3) -> dict[str, list[tuple[int, float]]]:
    """For each feature that varies in `text`: the `top` units best correlated with it, as (unit, r)."""
    found = {}
    for name, feature in FEATURES.items():
        r = correlations(activations, feature(text))
        if r is not None:
            best = np.argsort(-np.abs(r))[:top]
            found[name] = [(int(u), float(r[u])) for u in best]
    return found


def units_to_show(found: dict[str, list[tuple[int, float]]], count: int) -> list[tuple[int, str, float]]:
    """Up to `count` distinct units, most strongly correlated first, each with the feature it follows."""
    ranked = sorted(
        ((unit, name, r) for name, units in found.items() for unit, r in units), key=lambda t: -abs(t[2])
    )
    shown: dict[int, tuple[int, str, float]] = {}
    for unit, name, r in ranked:
        shown.setdefault(unit, (unit, name, r))
    return list(shown.values())[:count]
