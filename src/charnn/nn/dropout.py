"""Dropout for training on a CPU: compiled where it can be (dropout.c, many times PyTorch's speed), else
PyTorch's.

Whether an element is kept is a hash of a seed and the element's place in memory, so nothing but the seed
is kept for the backward, which applies the same function to the gradient. The seed is drawn from PyTorch's
generator, so runs are as repeatable, and resume as exactly, as with PyTorch's dropout (the masks differ);
under torchrun each rank mixes its rank into it, so that no two ranks drop the same elements of their rows.
Where PyTorch's dropout runs instead (no C compiler, a GPU) every rank's generator is seeded alike too, so
under torchrun its masks are drawn from a generator of the call's own, seeded the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from charnn.nn.native import Compiled, compiled

_MOST = 2**32  # elements one call may take: the hash counts them in 32 bits
_MIX = 0x9E3779B97F4A7C15  # a rank's share of its seeds: rank * _MIX, as 63 bits
_stream: int | None = None  # this process's rank under torchrun (None: alone): the same draws, its own masks


def set_stream(rank: int, world: int = 1) -> None:
    """Make the masks of this process (rank `rank` of `world` processes of a torchrun job) its own; rank
    0's compiled masks are a single process's."""
    global _stream
    _stream = rank if world > 1 else None


def per_rank() -> bool:
    """Whether this process is one of several training together (and must draw masks of its own)."""
    return _stream is not None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Zero each element with probability p and scale the rest by 1 / (1 - p), as F.dropout does."""
    if not training or p == 0:
        return x
    fits = x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and x.numel() < _MOST
    lib = compiled()[0] if fits and p < 1 else None
    if lib is None:
        return F.dropout(x, p, training) if _stream is None else _own_generator(x, p)
    return _Dropout.apply(x if _flat(x) is not None else x.contiguous(), p, _seed(), lib)


def _seed() -> int:
    """One draw from PyTorch's generator (the same on every rank, which keeps them in step), mixed with the
    rank."""
    return int(torch.randint(0, 2**63 - 1, (1,))) ^ ((_stream or 0) * _MIX % 2**63)


def _own_generator(x: Tensor, p: float) -> Tensor:
    """PyTorch's dropout with its mask drawn from a generator seeded by _seed(), on x's device."""
    if p >= 1:
        return x * 0
    keep = torch.empty_like(x).bernoulli_(1 - p, generator=torch.Generator(x.device).manual_seed(_seed()))
    return x * keep * (1.0 / (1.0 - p))


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float, seed: int, lib: Compiled):
        ctx.p, ctx.seed, ctx.lib, ctx.layout = p, seed, lib, (x.shape, x.stride())
        return _masked(lib, x, p, seed)

    @staticmethod
    def backward(ctx, grad: Tensor):
        shape, stride = ctx.layout
        if grad.stride() != stride:  # the mask follows the input's memory order
            grad = torch.empty_strided(shape, stride, dtype=grad.dtype).copy_(grad)
        return _masked(ctx.lib, grad, ctx.p, ctx.seed), None, None, None


def _masked(lib: Compiled, x: Tensor, p: float, seed: int) -> Tensor:
    out = torch.empty_like(x)  # x fills its memory without gaps, so out takes the same layout
    lib.dropout(_flat(x), _flat(out), min(int(p * _MOST), _MOST - 1), 1.0 / (1.0 - p), seed)
    return out


def _flat(t: Tensor) -> Tensor | None:
    """t's elements as one flat view in memory order; None where they do not fill its memory without gaps."""
    order = sorted(range(t.dim()), key=lambda d: t.stride(d), reverse=True)
    view = t.permute(order)
    return view.view(-1) if view.is_contiguous() else None
