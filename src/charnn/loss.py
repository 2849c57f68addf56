"""Exact loss of a model over a whole text, in nats per char, bits per char and perplexity."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from charnn.errors import DataError
from charnn.model import CharRNN, State

EVAL_WINDOW = 100
_CHUNK = 256


@dataclass(frozen=True)
class LossReport:
    """Mean cross-entropy over `chars` predicted characters."""

    nats: float
    chars: int

    @property
    def bits(self) -> float:
        return self.nats / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nats)

    def to_dict(self) -> dict:
        return {
            "nats_per_char": self.nats,
            "bits_per_char": self.bits,
            "perplexity": self.perplexity,
            "chars": self.chars,
        }


def _summed_loss(model: CharRNN, x: Tensor, y: Tensor, state: State | None) -> tuple[float, State]:
    logits, state = model(x, state)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1), reduction="sum")
    return float(loss), state


def _as_tensor(ids: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.asarray(ids, dtype=np.int64)).to(device)


def _check_length(ids: np.ndarray) -> None:
    if len(ids) < 2:
        raise DataError(f"the text to evaluate has {len(ids)} chars; at least 2 are needed")


@torch.no_grad()
def loss_carried(model: CharRNN, ids: np.ndarray, streams: int = 32, burn_in: int = 200) -> LossReport:
    """Loss of predicting every char from all that precede it, the recurrent state carried throughout.

    For speed the text is cut into `streams` contiguous pieces run side by side; each piece except
    the first starts from the state left by reading the `burn_in` chars before it (not scored), which
    makes the result match one unbroken pass to well under 1e-3 nats. Ids are read a chunk at a time,
    so a memory-mapped text is never copied whole.
    """
    _check_length(ids)
    model.eval()
    device = model.device
    targets = len(ids) - 1
    streams = max(1, min(streams, targets // max(4 * burn_in, 1)))
    per = targets // streams
    starts = [k * per for k in range(streams)]

    def rows(offset: int, length: int, first: int = 0) -> Tensor:
        return _as_tensor(np.stack([ids[s + offset : s + offset + length] for s in starts[first:]]), device)

    state = model.init_state(streams)
    if streams > 1 and burn_in > 0:
        _, warm_state = model(rows(-burn_in, burn_in, first=1))
        state = tuple(torch.cat([s0[:, :1], s1], dim=1) for s0, s1 in zip(state, warm_state, strict=True))
    total = 0.0
    for t in range(0, per, _CHUNK):
        n = min(_CHUNK, per - t)
        loss, state = _summed_loss(model, rows(t, n), rows(t + 1, n), state)
        total += loss
    done = streams * per
    if done < targets:
        last_state = tuple(s[:, -1:].contiguous() for s in state)
        rest = _as_tensor(ids[done:], device).unsqueeze(0)
        total += _summed_loss(model, rest[:, :-1], rest[:, 1:], last_state)[0]
    return LossReport(total / targets, targets)


@torch.no_grad()
def loss_windows(
    model: CharRNN, ids: np.ndarray, window: int = EVAL_WINDOW, batch_size: int = 64
) -> LossReport:
    """Loss with the text cut into consecutive `window`-char pieces, each read from a zero state."""
    _check_length(ids)
    model.eval()
    device = model.device
    targets = len(ids) - 1
    total = 0.0
    for first in range(0, targets, window * batch_size):
        piece = _as_tensor(ids[first : min(first + window * batch_size, targets) + 1], device)
        full = (len(piece) - 1) // window
        if full:
            x = piece[: full * window].view(full, window)
            y = piece[1 : full * window + 1].view(full, window)
            total += _summed_loss(model, x, y, None)[0]
        if full * window < len(piece) - 1:
            rest = piece[full * window :].unsqueeze(0)
            total += _summed_loss(model, rest[:, :-1], rest[:, 1:], None)[0]
    return LossReport(total / targets, targets)
