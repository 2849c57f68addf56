"""Curricula, as pure functions of the step: windows that grow to --seq-len, and scheduled sampling.

Sequence-length warm-up (`--seq-len-warmup N`): for the first N steps each window is cut to a length that
grows linearly from MIN_LEN to --seq-len (in steps of MIN_LEN), so the early steps are cheaper; with stream
batching the state is not carried while windows are cut, since a cut window does not end where the next
one starts.

Scheduled sampling (`--scheduled-sampling P`, Bengio et al. 2015): at each position after the first, the input
is, with a probability rising linearly from 0 to P over the planned steps, the model's own sample from its
prediction at the position before, instead of the true character. The samples come from one extra forward
pass without gradients over the true window (the one-pass form of parallel scheduled sampling, Duckworth et
al. 2019), so the fused kernels still run over whole windows; a sequential form would step the model one
character at a time. The random draws are a pure function of (seed, step) over the global batch, so a
resumed run and any number of torchrun processes draw the same.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from charnn.config import TrainConfig

MIN_LEN = 8


def seq_len_at(step: int, cfg: TrainConfig) -> int:
    """Window length for optimizer step `step` (0-based)."""
    return _length(step, cfg.seq_len, cfg.seq_len_warmup)


def _length(step: int, seq_len: int, warmup: int) -> int:
    if step >= warmup:
        return seq_len
    grown = seq_len * (step + 1) / warmup
    return min(seq_len, max(MIN_LEN, MIN_LEN * math.ceil(grown / MIN_LEN)))


def chars_before(step: int, cfg: TrainConfig) -> int:
    """Characters per batch row trained on in steps 0 .. step-1 (as the sum of seq_len_at over them)."""
    total, warm = 0, min(step, cfg.seq_len_warmup)
    for first, end, length in _runs(cfg.seq_len, cfg.seq_len_warmup):
        if first >= warm:
            break
        total += (min(end, warm) - first) * length
    return total + (step - warm) * cfg.seq_len


@functools.cache
def _runs(seq_len: int, warmup: int) -> tuple[tuple[int, int, int], ...]:
    """The warm-up as runs of steps of one window length, (first step, end, length): a few, found by
    bisection, since the length never shrinks (so counting chars costs the same at any step)."""
    runs, first = [], 0
    while first < warmup:
        length = _length(first, seq_len, warmup)
        lo, hi = first, warmup  # the run ends at the first step past `lo` with a longer window, or `hi`
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _length(mid, seq_len, warmup) == length else (lo, mid)
        runs.append((first, hi, length))
        first = hi
    return tuple(runs)


def sampling_prob(step: int, cfg: TrainConfig, planned_steps: int) -> float:
    """Probability of feeding the model's own sample at a position, at step `step` of `planned_steps`
    (0 until the plan is known, as under a time budget before its first estimate)."""
    if not cfg.scheduled_sampling or not planned_steps:
        return 0.0
    return cfg.scheduled_sampling * min(1.0, step / planned_steps)


def mix_inputs(
    x: Tensor, logits: Tensor, prob: float, seed: int, step: int, rows: slice, batch: int
) -> Tensor:
    """`x` (this process's `rows` of a global batch of `batch`) with each position after the first replaced,
    with probability `prob`, by a sample from `logits` at the position before (Gumbel-max)."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    steps, vocab = x.shape[1], logits.shape[-1]
    chosen = (torch.rand(batch, steps - 1, generator=gen) < prob)[rows].to(x.device)
    noise = torch.rand(batch, steps - 1, vocab, generator=gen)[rows].to(x.device)
    gumbel = -torch.log(-torch.log(noise.clamp_min(1e-20)))
    samples = (logits[:, :-1].float() + gumbel).argmax(-1)
    mixed = x.clone()
    mixed[:, 1:] = torch.where(chosen, samples, x[:, 1:])
    return mixed
