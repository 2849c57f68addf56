"""One pass of a model over a text: the surprisal of each char, the top guesses for it, and the hidden
activations of every layer after reading it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from charnn.config import MAX_INSPECT_CHARS
from charnn.errors import DataError
from charnn.nn.model import CharRNN, eval_mode
from charnn.text.vocab import Vocab

TOP = 5
START = "\n"  # what a text is read after, as generation starts: the start of a line


@dataclass(frozen=True)
class Trace:
    """surprisal[i] (nats; NaN where nothing came before), the top guesses for char i as (char, p), and
    layers[k][i]: layer k's hidden units after reading char i."""

    text: str
    surprisal: np.ndarray
    guesses: list[list[tuple[str, float]]]
    layers: list[np.ndarray]


def check_text(vocab: Vocab, text: str, limit: int = MAX_INSPECT_CHARS) -> np.ndarray:
    """Ids of a text to inspect; DataError when it is empty, too long or holds unknown chars."""
    if not text:
        raise DataError("the text is empty; give some text to look inside")
    if len(text) > limit:
        raise DataError(f"the text holds {len(text):,} chars; at most {limit:,} at once (cut it into parts)")
    unknown = vocab.unknown(text)
    if unknown:
        shown = " ".join(repr(c) for c in unknown[:20])
        raise DataError(f"the text holds characters the model never saw: {shown}")
    return vocab.encode(text)


@torch.no_grad()
def trace(model: CharRNN, vocab: Vocab, text: str, limit: int = MAX_INSPECT_CHARS) -> Trace:
    """Run `model` over `text` (read after a newline where the vocabulary has one)."""
    ids = check_text(vocab, text, limit)
    prefix = vocab.encode(START).tolist() if START in vocab.chars else []
    with eval_mode(model):
        x = torch.tensor([prefix + ids.tolist()], device=model.device)
        outputs = _layer_outputs(model, x)
        logp = torch.log_softmax(model.head(outputs[-1])[0].float(), dim=-1)
        shift = len(prefix)
        target = torch.as_tensor(ids, device=logp.device).long()
        surprisal = torch.full((len(ids),), float("nan"))
        guesses: list[list[tuple[str, float]]] = [[] for _ in range(shift == 0)]
        rows = logp[: len(ids) - 1 + shift]  # rows[j] predicts char j + 1 - shift
        first = 1 - shift
        surprisal[first:] = -rows.gather(1, target[first:, None])[:, 0].cpu()
        top = rows.topk(min(TOP, len(vocab)), dim=-1)
        for values, indices in zip(top.values.exp().tolist(), top.indices.tolist(), strict=True):
            guesses.append([(vocab.chars[i], p) for i, p in zip(indices, values, strict=True)])
        layers = [o[0, shift:].float().cpu().numpy() for o in outputs]
        return Trace(text, surprisal.numpy(), guesses, layers)


def _layer_outputs(model: CharRNN, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of each recurrent layer in turn (the fused kernel, one layer at a time)."""
    rnn = model.rnn
    flat = rnn.flat_weights()
    state = model.init_state(1)
    h = model.embedding(x)
    outputs = []
    for k in range(rnn.layers):
        hx = tuple(s[k : k + 1] for s in state)
        hx = hx if rnn.kind.states == 2 else hx[0]
        h, *_ = rnn.kind.kernel(h, hx, flat[4 * k : 4 * k + 4], True, 1, 0.0, False, False, True)
        outputs.append(h)
    return outputs
