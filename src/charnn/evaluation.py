"""Exact loss of a model over a whole text (nats per char, bits per char, perplexity), carried or per window,
and the check of reduced-precision weights that generation reads to pick its weight format."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from charnn.config import WEIGHT_FORMATS
from charnn.device import cpu_kind
from charnn.errors import DataError
from charnn.nn.model import CharRNN, State, eval_mode
from charnn.nn.stepper import StepModel

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
        return math.exp(self.nats) if self.nats < 709 else math.inf  # past a float's range

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
def loss_carried(
    model: CharRNN,
    ids: np.ndarray,
    streams: int = 32,
    burn_in: int = 200,
    shard: tuple[int, int] = (0, 1),
    reduce: Callable[[list[float]], list[float]] | None = None,
) -> LossReport:
    """Loss of predicting every char from all that precede it, the recurrent state carried throughout.

    For speed the text is cut into `streams` contiguous pieces run side by side; each piece except
    the first starts from the state left by reading the `burn_in` chars before it (not scored), which
    makes the result match one unbroken pass to well under 1e-3 nats. Ids are read a chunk at a time,
    so a memory-mapped text is never copied whole. With `shard=(rank, world)` this process takes every
    world-th piece and `reduce` sums the partial totals over processes: the same figure as one process.
    """
    _check_length(ids)
    with eval_mode(model):
        targets = len(ids) - 1
        streams = max(1, min(streams, targets // max(4 * burn_in, 1)))
        per = targets // streams
        mine = list(range(shard[0], streams, shard[1]))
        total = 0.0
        if mine:
            total, last = _pieces(model, ids, [k * per for k in mine], per, burn_in)
            done = streams * per
            if mine[-1] == streams - 1 and done < targets:  # the leftover tail continues the last piece
                total += _pieces(model, ids, [done], targets - done, 0, last)[0]
        if reduce is not None:
            total = reduce([total])[0]
        return LossReport(total / targets, targets)


def _pieces(
    model: CharRNN, ids: np.ndarray, starts: list[int], length: int, burn_in: int, state: State | None = None
) -> tuple[float, State]:
    """Summed loss of `length` predictions from each start, side by side, and the last piece's final state.

    Without a given `state`, pieces that do not start the text first read `burn_in` chars unscored.
    """
    device = model.device

    def rows(offset: int, n: int, which: list[int]) -> Tensor:
        return _as_tensor(np.stack([ids[starts[i] + offset : starts[i] + offset + n] for i in which]), device)

    warm = [i for i, s in enumerate(starts) if s > 0 and burn_in > 0] if state is None else []
    state = state if state is not None else model.init_state(len(starts))
    if warm:
        _, warm_state = model(rows(-burn_in, burn_in, warm))
        for full, part in zip(state, warm_state, strict=True):
            full[:, warm] = part
    everyone = list(range(len(starts)))
    total = 0.0
    for t in range(0, length, _CHUNK):
        n = min(_CHUNK, length - t)
        loss, state = _summed_loss(model, rows(t, n, everyone), rows(t + 1, n, everyone), state)
        total += loss
    return total, tuple(s[:, -1:].contiguous() for s in state)


@torch.no_grad()
def loss_windows(
    model: CharRNN, ids: np.ndarray, window: int = EVAL_WINDOW, batch_size: int = 64
) -> LossReport:
    """Loss with the text cut into consecutive `window`-char pieces, each read from a zero state."""
    _check_length(ids)
    with eval_mode(model):
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


def weight_checks(model: CharRNN, ids: np.ndarray) -> dict[str, float]:
    """Loss (state carried) over `ids` with each weight format this CPU runs well, for choose_weights."""
    formats = [f for f in WEIGHT_FORMATS if f != "bf16" or cpu_kind() != "fp32"]
    return {fmt: loss_carried(StepModel(model, fmt) if fmt != "fp32" else model, ids).nats for fmt in formats}
