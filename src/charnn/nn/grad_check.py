"""How far a bf16 recurrent kernel's gradients are from fp32 on this CPU, at given sizes.

A fast bf16 kernel is only worth taking if it trains on the right gradients. On Intel Xeons with AMX,
oneDNN's fused bf16 LSTM backward (PyTorch's CPU kernel) returns gradients 20-100% off fp32 at hidden 1024
while its forward is within 0.5% (benchmarks/bf16_gradients.py maps where); on AVX-512 bf16 CPUs without AMX
the same call is within 0.5%. So the error is measured on the machine, at a run's own sizes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from charnn.nn import cpu_lstm, lookup

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
KERNELS = {"lstm": ("pytorch", "charnn-bf16"), "gru": ("pytorch",), "rnn": ("pytorch",)}
MAX_ERROR = (
    0.03  # bf16 rounding over a window of steps gives 0.3-1.5%; a broken backward is off by 20% or more
)
MAX_STEPS = 50  # the error settles within a few dozen steps; longer checks only cost time
# of what the check runs (2: rows looked up as nn/lookup.py does; 3: the layer's products on AMX units),
# so that kept results follow it
VERSION = 3


def random_weights(
    cell: str, input_size: int, hidden: int, layers: int, gen: torch.Generator
) -> list[Tensor]:
    """fp32 weights in PyTorch's fused order (w_ih, w_hh, b_ih, b_hh per layer), as a fresh model's:
    uniform in +-1/sqrt(hidden)."""
    bound, rows = hidden**-0.5, GATES[cell] * hidden
    weights = []
    for k in range(layers):
        fan_in = input_size if k == 0 else hidden
        for shape in ((rows, fan_in), (rows, hidden), (rows,), (rows,)):
            weights.append((torch.rand(shape, generator=gen) * 2 - 1) * bound)
    return weights


def _run(
    cell: str, kernel: str, x: Tensor, weights: list[Tensor], layers: int, embedding: Tensor | None
) -> Tensor:
    """The outputs; where `embedding` is given, x is ids into it."""
    zeros = torch.zeros(layers, x.shape[0], weights[1].shape[1], dtype=weights[1].dtype)
    if kernel == "charnn-bf16":
        return cpu_lstm.lstm(x, (zeros, zeros), weights, 0.0, True, embedding=embedding)[0]
    if embedding is not None:
        x = lookup.rows(x, embedding)
    if cell == "lstm":
        return torch.lstm(x, (zeros, zeros), weights, True, layers, 0.0, True, False, True)[0]
    fused = torch.gru if cell == "gru" else torch.rnn_tanh
    return fused(x, zeros, weights, True, layers, 0.0, True, False, True)[0]


def gradient_error(
    cell: str,
    kernel: str,
    input_size: int,
    hidden: int,
    layers: int,
    batch: int,
    steps: int,
    vocab: int = 0,
) -> float:
    """The largest relative error (L2 norm) of any weight's gradient, and of the input's, when `kernel` runs
    forward and backward in bf16, against PyTorch's fused kernel in fp32: random weights as a fresh model's,
    random inputs and output gradients, seeded, over at most MAX_STEPS steps. Where `vocab` is given, the
    input is ids into an embedding of that many rows, as a model's first layer takes them (charnn's layer
    may then take its input table, cpu_lstm.LSTMLayer), and the embedding's gradient counts as the input's."""
    if kernel not in KERNELS[cell]:
        raise ValueError(f"no kernel {kernel!r} for a {cell}")
    gen = torch.Generator().manual_seed(0)
    weights = random_weights(cell, input_size, hidden, layers, gen)
    length = min(steps, MAX_STEPS)
    vocab = cpu_lstm.trial_vocab(vocab, batch, steps, length)
    # the input, or where ids are the input, the embedding
    x = torch.randn(*((vocab,) if vocab else (batch, length)), input_size, generator=gen)
    ids = torch.randint(0, vocab, (batch, length), generator=gen) if vocab else None
    grad = torch.randn(batch, length, hidden, generator=gen)
    grads = []
    for dtype, name in ((torch.float32, "pytorch"), (torch.bfloat16, kernel)):
        leaves = [t.detach().to(dtype).requires_grad_() for t in (x, *weights)]
        if ids is None:
            out = _run(cell, name, leaves[0], leaves[1:], layers, None)
        else:
            out = _run(cell, name, ids, leaves[1:], layers, leaves[0])
        out.backward(grad.to(dtype))
        grads.append([t.grad.float() for t in leaves])
    return max(float((g - e).norm() / e.norm()) for g, e in zip(grads[1], grads[0], strict=True))
