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
    makes the result match one unbroken pass to well under 1e-3 nats.
    """
    _check_length(ids)
    model.eval()
    device = model.embedding.weight.device
    data = _as_tensor(ids, device)
    targets = len(ids) - 1
    streams = max(1, min(streams, targets // max(4 * burn_in, 1)))
    per = targets // streams
    starts = torch.arange(streams, device=device) * per
    state = model.init_state(streams)
    if streams > 1 and burn_in > 0:
        warm = torch.stack([data[s - burn_in : s] for s in starts[1:].tolist()])
        _, warm_state = model(warm)
        state = tuple(torch.cat([s0[:, :1], s1], dim=1) for s0, s1 in zip(state, warm_state, strict=True))
    inputs = torch.stack([data[s : s + per] for s in starts.tolist()])
    outputs = torch.stack([data[s + 1 : s + 1 + per] for s in starts.tolist()])
    total = 0.0
    for t in range(0, per, _CHUNK):
        loss, state = _summed_loss(model, inputs[:, t : t + _CHUNK], outputs[:, t : t + _CHUNK], state)
        total += loss
    done = streams * per
    if done < targets:
        last_state = tuple(s[:, -1:].contiguous() for s in state)
        loss, _ = _summed_loss(model, data[done:-1].unsqueeze(0), data[done + 1 :].unsqueeze(0), last_state)
        total += loss
    return LossReport(total / targets, targets)


@torch.no_grad()
def loss_windows(
    model: CharRNN, ids: np.ndarray, window: int = EVAL_WINDOW, batch_size: int = 64
) -> LossReport:
    """Loss with the text cut into consecutive `window`-char pieces, each read from a zero state."""
    _check_length(ids)
    model.eval()
    device = model.embedding.weight.device
    data = _as_tensor(ids, device)
    targets = len(ids) - 1
    full = targets // window
    total = 0.0
    if full:
        inputs = data[: full * window].view(full, window)
        outputs = data[1 : full * window + 1].view(full, window)
        for i in range(0, full, batch_size):
            total += _summed_loss(model, inputs[i : i + batch_size], outputs[i : i + batch_size], None)[0]
    if full * window < targets:
        rest = slice(full * window, targets)
        total += _summed_loss(model, data[rest].unsqueeze(0), data[rest.start + 1 :].unsqueeze(0), None)[0]
    return LossReport(total / targets, targets)
