"""The unit finder on models trained (seconds) on a text where quoted spans use their own words: in every
layer of an LSTM, a GRU and an RNN some unit follows "inside quotes".

THRESHOLD was measured: with this corpus and 300 steps (seed 42) the best |r| per layer was 0.93/0.92
(LSTM), 0.73/0.87 (GRU), 0.64/0.54 (RNN); untrained or 150-step models stay near 0.1. 0.5 keeps a margin.
"""

import random

import numpy as np
import pytest

import charnn
from charnn.api import load
from charnn.inspection.features import correlations, find_units, inside_quotes
from charnn.inspection.trace import trace

THRESHOLD = 0.5
WORDS = ["the", "cat", "sat", "on", "a", "mat", "and", "said", "no", "yes", "dog", "ran"]
QUOTED = ["oh", "ah", "ha", "hum", "oho"]


def quoted_corpus(seed: int, chars: int) -> str:
    rng = random.Random(seed)
    parts: list[str] = []
    while sum(map(len, parts)) < chars:
        quoted = rng.random() < 0.5
        words = " ".join(rng.choice(QUOTED if quoted else WORDS) for _ in range(rng.randint(2, 8)))
        parts.append(f'"{words}" ' if quoted else words + " ")
        if rng.random() < 0.2:
            parts.append("\n")
    return "".join(parts)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_some_unit_of_every_layer_follows_the_quotes(cell, tmp_path):
    data = tmp_path / "quotes.txt"
    data.write_text(quoted_corpus(0, 20_000), encoding="utf-8")
    charnn.train(
        tmp_path / "run",
        data=str(data),
        cell=cell,
        layers=2,
        hidden=32,
        embedding=16,
        seq_len=64,
        batch_size=16,
        max_steps=300,
        lr=3e-3,
        precision="fp32",
        quiet=True,
    )
    loaded = load(tmp_path / "run")
    text = quoted_corpus(1, 2000)
    t = trace(loaded.model, loaded.vocab, text)
    for layer in t.layers:
        best = float(np.abs(correlations(layer, inside_quotes(text))).max())
        assert best > THRESHOLD, (cell, best)
        _, r = find_units(layer, text)["inside quotes"][0]
        assert abs(r) == pytest.approx(best, abs=1e-9)
