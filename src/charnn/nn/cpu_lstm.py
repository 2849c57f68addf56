"""LSTM training in bf16 on a CPU: bf16 matrix products, fp32 cell arithmetic.

PyTorch's fused bf16 LSTM on CPU (oneDNN) runs its backward at under half the bf16 matrix-product rate
(benchmarks/lstm_kernels.py). This layer lays the sequence out time-major, so each step's slice is one
contiguous block; makes big products of everything that does not depend on the previous step (the input
part of all gates before the forward loop, the weight and input gradients after the backward loop), so one
product with the recurrent weights per step is left in each loop, with those weights packed once per call;
where the first layer's input is a character embedding, looks its input part up in a table (LSTMLayer) in
place of three of those big products; and does each step's pointwise work in one compiled pass
(lstm_steps.c, built by nn/native.py), or, where it cannot be built, as PyTorch operations (the backward's
derivatives in bulk, a chunk of steps at a time). On CPUs with AMX the loops themselves run in C, each
step's product on the matrix units (amx.c, `amx_weights`).
Compiled, on an Intel Xeon with AMX it trains the tutorial's model 1.4x as fast as with the PyTorch steps,
and its loops on the units 1.2-1.3x as fast again; the choice against the fused kernel is measured per run
(`speedup_over_fused`).
"""

from __future__ import annotations

import time

import torch
from torch import Tensor

from charnn.nn import lookup
from charnn.nn.dropout import dropout as drop
from charnn.nn.native import Compiled, compiled


def packed_product(w: Tensor, rows: int):
    """x -> x @ w.t() for many x of `rows` rows: with the weight packed once in oneDNN's blocked layout where
    this torch has oneDNN (about 1.5x faster than plain products at 64 x 1024 x 4096 on AVX-512 CPUs)."""
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w, rows)
    except (AttributeError, RuntimeError):
        return lambda x: torch.mm(x, w.t())
    return lambda x: torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")


def amx_weights(w_hh: Tensor, batch: int, native: Compiled | None, backward: bool = False) -> Tensor | None:
    """The recurrent weights packed for the AMX units (nn/amx.c), as the forward's product (x @ w_hh.t()) or
    the backward's (x @ w_hh) takes them, where this CPU has those units and the sizes fit their tiles; else
    None (the loops then take `packed_product`). With them the layer's loops run in C (Compiled.forward_loop,
    backward_loop): a training step of the tutorial's model 1.24-1.32x as fast on a Xeon with AMX."""
    hidden = w_hh.shape[1]
    if native is None or not native.amx or w_hh.dtype != torch.bfloat16 or batch % 16 or hidden % 32:
        return None
    return native.amx_pack(w_hh, transposed=backward)


class BufferPool:
    """The layer's big work tensors, kept from one training step for the next. Fresh blocks of this size come
    from the kernel as new pages (glibc maps every block over 32 MiB afresh; smaller ones stay on its heap,
    device.keep_freed_memory), and their page faults cost about a quarter of a step; reused ones cost
    nothing. Its owner (a TrainStep) decides how long it lasts."""

    def __init__(self) -> None:
        self.free: dict[tuple, list[Tensor]] = {}

    def take(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        free = self.free.get((shape, dtype))
        return free.pop() if free else torch.empty(shape, dtype=dtype)

    def clear(self) -> None:
        self.free.clear()

    def give(self, *buffers: Tensor) -> None:
        """Hand buffers back once nothing will read them again."""
        for b in buffers:
            free = self.free.setdefault((tuple(b.shape), b.dtype), [])
            if len(free) < _POOL_DEPTH:
                free.append(b)


_POOL_DEPTH = 8  # buffers kept per shape: two per layer of a deep model


def _tanh(x: Tensor, out: Tensor) -> Tensor:
    """tanh as 2 sigmoid(2x) - 1: PyTorch's fp32 sigmoid on CPU is several times faster than its tanh."""
    return torch.mul(x, 2, out=out).sigmoid_().mul_(2).sub_(1)


class LSTMLayer(torch.autograd.Function):
    """One LSTM layer over a time-major sequence: x (T, B, E), state (B, H) each, weights in PyTorch's layout
    (gates i, f, g, o). Returns the outputs (T, B, H) and the last state, all in the weights' dtype.

    Where `embedding` (V, E) is given (compiled steps only), x is ids (T, B) and the layer's input their rows
    of it: the input part of the gates is then a table, embedding @ w_ih.t(), a row per id, which the steps
    look up, and the backward sums the gates' gradient per id into the table's gradient, which gives those
    of the embedding and of w_ih in two small products. For a character vocabulary this replaces three
    products as big as the sequence (the input part, and the gradients of the input and of w_ih; a fifth of
    the tutorial model's work) with ones the size of the vocabulary."""

    @staticmethod
    def forward(
        ctx,
        x: Tensor,
        h0: Tensor,
        c0: Tensor,
        w_ih: Tensor,
        w_hh: Tensor,
        bias: Tensor,
        pool: BufferPool,
        native: Compiled | None,
        embedding: Tensor | None = None,
    ):
        if embedding is not None and native is None:
            raise ValueError("the input table needs the compiled steps")
        steps, batch = x.shape[:2]
        hidden = w_hh.shape[1]
        if embedding is None:
            x_flat = x.reshape(steps * batch, -1)
            # The input part of the gates for all steps at once; the loop adds the recurrent part, activates.
            x_part = torch.mm(x_flat, w_ih.t(), out=pool.take((steps * batch, 4 * hidden), x.dtype))
        else:
            x_flat, x_part = x.contiguous(), torch.mm(embedding, w_ih.t())
        gates = pool.take((steps, batch, 4, hidden))
        cells, tanh_cells = pool.take((steps, batch, hidden)), pool.take((steps, batch, hidden))
        out = torch.empty(steps, batch, hidden, dtype=w_hh.dtype)
        # Each step's input state again, transposed side by side (H, T*B): the recurrent weights' gradient is
        # then one product of contiguous matrices, twice as fast on AMX as one with a transposed operand.
        h_before = pool.take((hidden, steps * batch), w_hh.dtype)
        packed = amx_weights(w_hh, batch, native)
        if native is None:
            # not a mixed add: it widens
            gates.view(steps * batch, 4 * hidden).copy_(x_part).add_(bias.float())
            recurrent = packed_product(w_hh, batch)
            _forward_loop(gates, cells, tanh_cells, out, h_before, recurrent, h0, c0.float())
        else:
            h_before[:, :batch].copy_(h0.t())
            h, c, b = h0.to(w_hh.dtype).contiguous(), c0.float().contiguous(), bias.float().contiguous()
            if packed is not None:
                ids = None if embedding is None else x_flat
                native.forward_loop(gates, x_part, ids, b, packed, h, c, cells, tanh_cells, out, h_before)
            else:
                recurrent = packed_product(w_hh, batch)
                for t in range(steps):
                    h_t = h_before[:, (t + 1) * batch :] if t + 1 < steps else None
                    ids = None if embedding is None else x_flat[t]
                    x_t = x_part if embedding is not None else x_part[t * batch : (t + 1) * batch]
                    step = (gates[t], x_t, b, recurrent(h), c, cells[t], tanh_cells[t], out[t], h_t, ids)
                    native.forward(*step)
                    h, c = out[t], cells[t]
        if embedding is None:
            pool.give(x_part)
        ctx.save_for_backward(x_flat, out, h0, c0, w_ih, w_hh, gates, cells, tanh_cells, h_before, embedding)
        ctx.pool, ctx.native = pool, native
        return out, out[-1].clone(), cells[-1].to(c0.dtype, copy=True)

    @staticmethod
    def backward(ctx, d_out: Tensor, d_hn: Tensor | None, d_cn: Tensor | None):
        x_flat, out, h0, c0, w_ih, w_hh, gates, cells, tanh_cells, h_before, embedding = ctx.saved_tensors
        steps, batch, hidden = out.shape
        d_out = d_out.contiguous()
        dz = ctx.pool.take((steps, batch, 4, hidden), w_hh.dtype)
        dh_next = torch.zeros(batch, hidden, dtype=w_hh.dtype) if d_hn is None else d_hn.to(w_hh.dtype)
        dc = torch.zeros(batch, hidden) if d_cn is None else d_cn.float()
        transposed = _transposed if ctx.native is None else ctx.native.transposed
        packed = amx_weights(w_hh, batch, ctx.native, backward=True)
        recurrent = packed_product(transposed(w_hh), batch) if packed is None else None
        if ctx.native is None:
            dh_next, dc = _backward_loop(
                gates, cells, tanh_cells, c0.float(), d_out, dh_next, dc, dz, recurrent
            )
            # a product: sum(0) would widen all of dz first
            ones = torch.ones(1, steps * batch, dtype=dz.dtype)
            d_bias = (ones @ dz.view(steps * batch, 4 * hidden)).view(-1)
        else:
            # The bias's gradient, or with an embedding the input table's: a block per thread (lstm_steps.c).
            rows = 1 if embedding is None else embedding.shape[0]
            sums = ctx.pool.take((torch.get_num_threads(), rows, 4 * hidden)).zero_()
            dh_next, dc, c_first = dh_next.contiguous(), dc.contiguous().clone(), c0.float().contiguous()
            if packed is not None:
                dh_next = dh_next.clone()  # the loop writes each step's into it
                ids = None if embedding is None else x_flat
                step = (gates, cells, c_first, tanh_cells, d_out, dh_next, dc, dz, sums, ids, packed)
                ctx.native.backward_loop(*step)
            else:
                for t in range(steps - 1, -1, -1):
                    c_before = cells[t - 1] if t else c_first
                    ids = None if embedding is None else x_flat[t]
                    step = (gates[t], c_before, tanh_cells[t], d_out[t], dh_next, dc, dz[t], sums, ids)
                    ctx.native.backward(*step)
                    dh_next = recurrent(dz[t].view(batch, 4 * hidden))
            d_table = sums.sum(0)
            d_bias = d_table.sum(0)
            ctx.pool.give(sums)
        dz_flat = dz.view(steps * batch, 4 * hidden)
        d_embedding = None
        if embedding is not None:
            # fp32 products of the table's gradient, the size of the vocabulary
            d_embedding = (d_table @ w_ih.float()).to(embedding.dtype)
            d_w_ih = (d_table.t() @ embedding.float()).to(w_ih.dtype)
            dx = None
        else:
            dx = (dz_flat @ w_ih).view(steps, batch, -1) if ctx.needs_input_grad[0] else None
            # Weight gradients as products of contiguous matrices (see h_before), transposed after into the
            # weights' own layout, which autograd then keeps instead of copying them there (its copy of a
            # transposed bf16 view is twice as slow as `_transposed`, and several times the compiled one).
            d_w_ih = transposed(transposed(x_flat) @ dz_flat)
        d_weights = (d_w_ih, transposed(h_before @ dz_flat), d_bias.to(w_ih.dtype))
        ctx.pool.give(gates, cells, tanh_cells, dz, h_before)
        return dx, dh_next.to(h0.dtype), dc.to(c0.dtype), *d_weights, None, None, d_embedding


def _transposed(w: Tensor) -> Tensor:
    """w.t(), contiguous: bf16 moved as 16-bit integers, twice as fast as PyTorch's bf16 transpose on AMX."""
    if w.dtype == torch.bfloat16:
        return w.view(torch.int16).t().contiguous().view(torch.bfloat16)
    return w.t().contiguous()


def _forward_loop(gates, cells, tanh_cells, out, h_before, recurrent, h: Tensor, c: Tensor) -> None:
    """The forward's steps as PyTorch operations (where the compiled ones are not available)."""
    batch = h.shape[0]
    for t in range(gates.shape[0]):
        h_before[:, t * batch : (t + 1) * batch].copy_(h.t())
        a = gates[t]
        a.view(batch, -1).add_(recurrent(h))
        i, f, g, o = a.unbind(1)
        g.mul_(2)
        a.sigmoid_()
        g.mul_(2).sub_(1)  # one sigmoid for all four gates: tanh(z) = 2 sigmoid(2z) - 1
        c_next = torch.mul(i, g, out=cells[t]).addcmul_(f, c)
        h = torch.mul(o, _tanh(c_next, out=tanh_cells[t]), out=out[t])
        c = c_next


def _backward_loop(
    gates, cells, tanh_cells, c0: Tensor, d_out, dh_next: Tensor, dc_next: Tensor, dz, recurrent
):
    """The backward's steps as PyTorch operations: the gradient of the first state (h, c); dz filled in."""
    steps, batch, hidden = d_out.shape
    dh, dc = torch.empty(batch, hidden), torch.empty(batch, hidden)
    for end in range(steps, 0, -_CHUNK):
        start = max(end - _CHUNK, 0)
        c_before = cells[start - 1] if start else c0
        local, dc_from_dh, forget = _local_derivatives(
            gates[start:end], cells[start:end], tanh_cells[start:end], c_before
        )
        for t in range(end - start - 1, -1, -1):
            torch.add(d_out[start + t], dh_next, out=dh)
            torch.addcmul(dc_next, dh, dc_from_dh[t], out=dc)
            z = dz[start + t]
            torch.mul(local[t, :, :3], dc[:, None], out=z[:, :3])
            torch.mul(local[t, :, 3], dh, out=z[:, 3])
            dc_next = dc * forget[t]
            dh_next = recurrent(z.view(batch, 4 * hidden))
    return dh_next, dc_next


_CHUNK = 16  # steps whose local derivatives are formed at once: big enough for fast bulk ops, small in memory


def _local_derivatives(gates: Tensor, cells: Tensor, tanh_cells: Tensor, c_before: Tensor):
    """For a run of steps, from the forward's values: the gates' pre-activation derivatives (i, f, g per unit
    of d cell; o per unit of d output), written over `gates`, which is not needed again; d cell / d output;
    and the forget gate."""
    i, f, g, o = gates.unbind(2)
    dc_from_dh = torch.addcmul(o, o, tanh_cells * tanh_cells, value=-1)  # o (1 - tanh(c)^2)
    forget = f.clone()
    c_prev = torch.cat([c_before[None], cells[:-1]])
    torch.mul(tanh_cells, o - o * o, out=o)
    d_i = g * (i - i * i)
    torch.addcmul(i, i, g * g, value=-1, out=g)  # i (1 - g^2)
    i.copy_(d_i)
    torch.mul(c_prev, f - f * f, out=f)
    return gates, dc_from_dh, forget


def lstm(
    x: Tensor,
    state: tuple[Tensor, Tensor],
    weights: list[Tensor],
    dropout: float,
    training: bool,
    pool: BufferPool | None = None,
    compiled_steps: bool = True,
    embedding: Tensor | None = None,
):
    """Stacked LSTM layers over x (B, T, E), batch first, taking the fused kernel's arguments: the state as
    (layers, B, H) tensors, weights as w_ih, w_hh, b_ih, b_hh per layer, dropout between layers; work
    buffers from `pool` (a new one per call if not given); each time step compiled (nn/native.py) where
    `compiled_steps`, the tensors are bf16 and this machine could build it, else as PyTorch operations.
    Where `embedding` is given, x is ids (B, T) whose rows of it are the input (see LSTMLayer)."""
    pool = pool or BufferPool()
    bf16 = all(w.dtype == torch.bfloat16 for w in [*weights, x if embedding is None else embedding])
    native = compiled()[0] if compiled_steps and bf16 else None
    if embedding is not None and (native is None or not takes_table(embedding.shape[0], x.numel())):
        x, embedding = lookup.rows(x, embedding), None
    elif embedding is not None:
        lookup.check_ids(x, embedding.shape[0])
        x = x.long()  # the compiled steps read int64
    h0, c0 = state
    layers = len(weights) // 4
    seq = x.transpose(0, 1).contiguous()
    last_h, last_c = [], []
    for k in range(layers):
        w_ih, w_hh, b_ih, b_hh = weights[4 * k : 4 * k + 4]
        if k > 0:
            seq = drop(seq, dropout, training)
        table = embedding if k == 0 else None
        seq, h, c = LSTMLayer.apply(seq, h0[k], c0[k], w_ih, w_hh, b_ih + b_hh, pool, native, table)
        last_h.append(h)
        last_c.append(c)
    return seq.transpose(0, 1), (torch.stack(last_h), torch.stack(last_c))


# The input table (LSTMLayer) is taken where the vocabulary is at most this share of a batch's characters:
# it then costs a small part of the products it replaces.
_TABLE_SHARE = 16


def takes_table(vocab: int, chars: int) -> bool:
    """Whether `lstm` looks its first layer's input part up in a table for a batch of `chars` ids into an
    embedding of `vocab` rows: where that is cheap, and the table's gradient, fp32 and a copy per thread,
    is at most the size of the gates' gradient it is summed from (bf16, a row per character)."""
    return vocab <= _table_rows(chars)


def _table_rows(chars: int) -> int:
    return chars // max(_TABLE_SHARE, 2 * torch.get_num_threads())


def trial_vocab(vocab: int, batch: int, steps: int, trial_steps: int) -> int:
    """For a trial of the layer over fewer steps than a run's (a timing, a gradient check): a vocabulary
    that the trial's table takes where the run's table takes `vocab`, else 0 (the trial looks rows up)."""
    return min(vocab, _table_rows(batch * trial_steps)) if takes_table(vocab, batch * steps) else 0


def random_weights(
    input_size: int, hidden: int, layers: int, gen: torch.Generator, bias_scale: float = 0.0
) -> list[Tensor]:
    """fp32 weights in the fused kernel's order (w_ih, w_hh, b_ih, b_hh per layer), scaled by 1/sqrt(fan-in);
    normal biases times `bias_scale`."""
    weights = []
    for k in range(layers):
        fan_in = input_size if k == 0 else hidden
        weights += [
            torch.randn(4 * hidden, fan_in, generator=gen) * fan_in**-0.5,
            torch.randn(4 * hidden, hidden, generator=gen) * hidden**-0.5,
            torch.randn(4 * hidden, generator=gen) * bias_scale,
            torch.randn(4 * hidden, generator=gen) * bias_scale,
        ]
    return weights


# The fused kernel's first few calls in a process run up to twice as slow as later ones (measured on AMX at
# 2 x 512, batch 128: 500, 290, 500, 400 ms, then 240 ms from the fifth on); a best of three after a single
# warm-up once picked the slower kernel for a whole run.
_WARM_UP, _TIMED = 3, 4


def speedup_over_fused(
    input_size: int, hidden: int, layers: int, batch: int, steps: int, vocab: int = 0
) -> float:
    """How many times faster `lstm` trains than PyTorch's fused bf16 kernel at these sizes on this machine:
    forward + backward on random data, the best of four each after three warm-ups, the two kernels
    alternating, over at most 50 steps (the cost per step barely changes with the length; the memory does);
    where `vocab` is given, the input is ids into an embedding of that many rows, as a model's first layer
    takes them (`lstm` may then look up its input part in a table; the fused kernel gets the rows).
    (It depends on the sizes and on whether the steps are compiled: with PyTorch steps this layer won at
    hidden 1024 and batch 64 on AVX-512 CPUs and lost at 512 and below, where the Python loop's per-step cost
    outweighs the faster products; compiled, on AMX it wins at 1024 and at 2 x 512, batch 128, too.)"""
    vocab = trial_vocab(vocab, batch, steps, min(steps, 50))
    steps = min(steps, 50)
    gen = torch.Generator().manual_seed(0)
    weights = [w.bfloat16().requires_grad_() for w in random_weights(input_size, hidden, layers, gen)]
    x = torch.randn(batch, steps, input_size, generator=gen).bfloat16().requires_grad_()
    embedding, ids = None, None
    if vocab:
        embedding = torch.randn(vocab, input_size, generator=gen).bfloat16().requires_grad_()
        ids = torch.randint(0, vocab, (batch, steps), generator=gen)
    state = (torch.zeros(layers, batch, hidden, dtype=torch.bfloat16),) * 2
    grad = torch.randn(batch, steps, hidden, generator=gen).bfloat16()
    pool = BufferPool()

    def inputs() -> Tensor:
        return x if embedding is None else lookup.rows(ids, embedding)

    runs = {
        "fused": lambda: torch.lstm(inputs(), state, weights, True, layers, 0.0, True, False, True)[0],
        "charnn": lambda: (
            lstm(x, state, weights, 0.0, True, pool)[0]
            if embedding is None
            else lstm(ids, state, weights, 0.0, True, pool, embedding=embedding)[0]
        ),
    }
    best = dict.fromkeys(runs, float("inf"))
    for attempt in range(_WARM_UP + _TIMED):
        for name, run in runs.items():
            start = time.perf_counter()
            run().backward(grad)
            if attempt >= _WARM_UP:
                best[name] = min(best[name], time.perf_counter() - start)
    return best["fused"] / best["charnn"]
