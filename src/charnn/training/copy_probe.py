"""At each validation, one seeded sample's copy figures against the training text, so a run's metrics show
when the model starts reciting its corpus rather than writing."""

from __future__ import annotations

import time

import numpy as np

from charnn.config import SamplingConfig
from charnn.nn.model import CharRNN
from charnn.sampling import sample
from charnn.text.copying import figures
from charnn.text.corpus import Corpus
from charnn.text.suffix_index import SuffixIndex, load_index

PROBE_CHARS = 500
PROBE_SPANS = (20, 50)


class CopyProbe:
    """Samples PROBE_CHARS chars with a fixed seed and measures what is copied; the index is built once."""

    def __init__(self, corpus: Corpus, train_ids: np.ndarray, seed: int):
        self.corpus, self.train_ids, self.seed = corpus, train_ids, seed
        self._index: SuffixIndex | None = None

    def measure(self, model: CharRNN) -> dict[str, float]:
        """The metrics.jsonl fields: longest copied span, shares of chars in copied spans, seconds taken."""
        started = time.perf_counter()
        if self._index is None:
            key = f"{self.corpus.sha256}:{len(self.train_ids)}"
            self._index = load_index(self.train_ids, key, self.corpus.vocab.chars)
        # from the training text's first char: an empty start needs a newline, which a text may lack
        first = self.corpus.vocab.decode(self.train_ids[:1])
        cfg = SamplingConfig(start=first, length=PROBE_CHARS, seed=self.seed)
        chars = "".join(step[0] for step in sample(model, self.corpus.vocab, cfg, "fp32"))
        model.train()
        f = figures([self.corpus.vocab.encode(chars)], self._index, PROBE_SPANS)
        shares = {f"copied_{k}": round(v, 4) for k, v in f.copied_share.items()}
        return {
            "copy_longest": f.longest.length,
            **shares,
            "copy_probe_s": round(time.perf_counter() - started, 3),
        }
