"""Fast inference one character at a time, for generation and for checking reduced-precision weights.

The fused recurrent kernels pay a large fixed cost per call, which dominates when each call advances one
character. StepModel instead precomputes the first layer's input product for every character (a
vocabulary-by-gates table, so the embedding and input weights cost nothing per step) and runs each step as
one matrix product per layer plus the cell's pointwise math. The recurrent matrices can be kept in fp32,
bf16, or int8 with one scale per output row. With int8 weights the activations stay in floating point
(PyTorch's product, bf16) or, on CPUs with AMX, are scaled to 16-bit integers per row (int8.c's product,
whose sums are exact): to 1/32767 of the row's largest, and the same bits wherever it runs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from charnn.config import WEIGHT_FORMATS
from charnn.device import cpu_kind
from charnn.errors import ConfigError
from charnn.nn import lookup
from charnn.nn.cpu_lstm import packed_product
from charnn.nn.model import CELLS, CharRNN, State
from charnn.nn.native import Compiled, compiled

PACKED_ROWS = 64  # the rows bf16 weights are laid out for (batched generation); any number works
INT8_WIDTH_MULTIPLE = 16  # the input widths PyTorch's int8 product reads right


def quantize_int8(weight: Tensor) -> tuple[Tensor, Tensor]:
    """A weight (out, in) as int8 (contiguous) and one fp32 scale per output row: its largest magnitude
    maps to 127."""
    w = weight.detach().float()
    scales = (w.abs().amax(dim=1) / 127.0).clamp_min(1e-12)
    return torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8).contiguous(), scales


def _matmul(
    weight: Tensor, fmt: str, widen: bool = True, native: Compiled | None = None
) -> Callable[[Tensor], Tensor]:
    """x (N, in) -> x @ weight.T (N, out) in fp32 (bf16 and int8 weights: in bf16 unless `widen`), with
    the weight stored in format `fmt`; int8 weights multiplied by `native`'s product where given."""
    if fmt == "fp32":
        wt = weight.detach().float().t().contiguous()
        return lambda x: x @ wt
    if fmt == "bf16":
        # packed once in oneDNN's layout: 1.6x the plain product at 64 rows on AMX, the same results
        product = packed_product(weight.detach().to(torch.bfloat16).contiguous(), PACKED_ROWS)
        if not widen:
            return lambda x: product(x.to(torch.bfloat16))
        return lambda x: product(x.to(torch.bfloat16)).float()
    if fmt == "int8":
        q, scales = quantize_int8(weight)
        if native is not None:

            def exact(x: Tensor) -> Tensor:
                return native.int8_product(x.float().contiguous(), q, scales)

            return exact if not widen else lambda x: exact(x).float()
        # PyTorch's int8 product reads its inputs 16 at a time: at other widths it returns garbage or
        # crashes (torch 2.13), so those are padded with zeros, which add nothing to the product
        pad = -q.shape[1] % INT8_WIDTH_MULTIPLE
        q, scales = torch.nn.functional.pad(q, (0, pad)).contiguous(), scales.to(torch.bfloat16)

        def product(x: Tensor) -> Tensor:
            x = x.to(torch.bfloat16)
            return torch._weight_int8pack_mm(torch.nn.functional.pad(x, (0, pad)) if pad else x, q, scales)

        return product if not widen else lambda x: product(x).float()
    raise ConfigError(f"weight format must be one of {', '.join(WEIGHT_FORMATS)}, got {fmt!r}")


class StepModel:
    """A CharRNN's weights laid out for stepping: forward(x, state) like the model, one char at a time."""

    def __init__(self, model: CharRNN, weights: str = "fp32", compiled_steps: bool = True):
        cfg, rnn = model.config, model.rnn
        self.config, self.weights, self.cell = cfg, weights, cfg.cell
        self.device = model.embedding.weight.device
        self.hidden, self.layers = cfg.hidden, cfg.layers
        # On CPUs with native bf16, an LSTM's or GRU's step after each recurrent product is one compiled
        # pass (lstm_steps.c, where `compiled_steps` and it builds) that reads the product's bf16 (bf16
        # weights, and int8 weights, whose product comes out in bf16) and the table's row by id: for 64
        # samples of the tutorial's model a step took 593 us instead of 763, the shipped GRU's 1.36x less
        # time; one sample of the shipped GRU with int8 weights 1.15x the chars/s (the tutorial's LSTM, whose
        # step is mostly its int8 product, 1.01x). Without native bf16 (AVX2, where bf16 weights are never
        # used) int8 keeps PyTorch's operations: its results there are recorded bit for bit, and the
        # compiled pass has not been measured there. On CPUs with AMX, int8 weights are multiplied by
        # compiled C (int8.c, where `compiled_steps` and it builds: exact integer sums, the same bits wherever
        # it runs): the tutorial's recurrent product in 82 us instead of PyTorch's 113 (2 threads;
        # benchmarks/int8_product.py). Elsewhere it is PyTorch's product, measured at 63 us on the AMD
        # machine with AVX-512 bf16 (int8.c not yet timed there).
        kind = cpu_kind()
        uses_native = self.device.type == "cpu" and compiled_steps and weights in ("bf16", "int8")
        native = compiled()[0] if uses_native else None  # not built for fp32 weights, which never use it
        takes_steps = weights == "bf16" or (weights == "int8" and kind != "fp32")
        self._steps = native if takes_steps and cfg.cell in ("lstm", "gru") else None
        int8 = native if kind == "amx" else None
        with torch.no_grad():
            flat = [w.detach().float() for w in rnn.flat_weights()]
            w_ih, b_ih, b_hh = flat[0], flat[2], flat[3]
            # GRU's recurrent bias sits inside the reset gate, so only LSTM and RNN fold it into the table.
            fold = b_ih + b_hh if cfg.cell != "gru" else b_ih
            self.table = model.embedding.weight.detach().float() @ w_ih.t() + fold
            self.input_mm = [_matmul(flat[4 * k], weights, native=int8) for k in range(1, cfg.layers)]
            self.input_bias = [
                flat[4 * k + 2] + (flat[4 * k + 3] if cfg.cell != "gru" else 0) for k in range(1, cfg.layers)
            ]
            widen = self._steps is None
            self.recurrent_mm = [_matmul(flat[4 * k + 1], weights, widen, int8) for k in range(cfg.layers)]
            self.recurrent_bias = [flat[4 * k + 3] for k in range(cfg.layers)]  # used by GRU only
            self.head_w = model.head.weight.detach().float().t().contiguous()
            self.head_b = model.head.bias.detach().float()

    def init_state(self, batch_size: int) -> State:
        shape = (self.layers, batch_size, self.hidden)
        return tuple(torch.zeros(shape, device=self.device) for _ in range(CELLS[self.cell].states))

    def eval(self) -> StepModel:
        return self

    @torch.no_grad()
    def step(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        """Logits (N, vocab) after reading one char per sequence, ids (N,), and the new state."""
        hs = list(state[0].unbind(0))
        cs = list(state[1].unbind(0)) if self.cell == "lstm" else []
        if self._steps is not None:
            return self._compiled_step(ids, hs, cs)
        x = None
        for k in range(self.layers):
            # index_select: a plain gather, several times cheaper per call than indexing with a tensor
            gi = (
                self.table.index_select(0, ids)
                if k == 0
                else self.input_mm[k - 1](x).add_(self.input_bias[k - 1])
            )
            gh = self.recurrent_mm[k](hs[k])
            if self.cell == "lstm":
                hs[k], cs[k] = _lstm_cell(gi.add_(gh), cs[k])
            elif self.cell == "gru":
                hs[k] = _gru_cell(gi, gh.add_(self.recurrent_bias[k]), hs[k])
            else:
                hs[k] = gi.add_(gh).tanh_()
            x = hs[k]
        logits = torch.addmm(self.head_b, x, self.head_w)
        return logits, (_layers(hs),) if self.cell != "lstm" else (_layers(hs), _layers(cs))

    def _compiled_step(self, ids: Tensor, hs: list[Tensor], cs: list[Tensor]) -> tuple[Tensor, State]:
        """`step` for an LSTM or GRU, each layer's pointwise part one compiled pass (see `_steps`)."""
        ids = ids.to(torch.int64).contiguous()  # their number against the state's: the step checks
        lookup.check_ids(ids, self.table.shape[0])
        for k in range(self.layers):
            if k == 0:
                x_part, by_id = self.table, ids
            else:
                x_part, by_id = self.input_mm[k - 1](hs[k - 1]).add_(self.input_bias[k - 1]), None
            gh = self.recurrent_mm[k](hs[k])
            if self.cell == "lstm":
                hs[k], cs[k] = self._steps.lstm_generate_step(x_part, by_id, gh, cs[k].float().contiguous())
            else:
                h = hs[k].float().contiguous()
                hs[k] = self._steps.gru_generate_step(x_part, by_id, gh, self.recurrent_bias[k], h)
        logits = torch.addmm(self.head_b, hs[-1], self.head_w)
        return logits, (_layers(hs),) if self.cell != "lstm" else (_layers(hs), _layers(cs))

    def __call__(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Like CharRNN.forward: logits (N, T, vocab) for ids (N, T), stepping through time."""
        if state is None:
            state = self.init_state(x.shape[0])
        state = tuple(s.float() for s in state)
        outs = []
        for t in range(x.shape[1]):
            logits, state = self.step(x[:, t], state)
            outs.append(logits)
        return torch.stack(outs, dim=1), state


def _layers(per_layer: list[Tensor]) -> Tensor:
    """(layers, N, H) from each layer's (N, H): a view of one layer's new tensor, else a copy of all."""
    return per_layer[0].unsqueeze(0) if len(per_layer) == 1 else torch.stack(per_layer)


def _lstm_cell(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f).mul_(c).addcmul_(torch.sigmoid(i), torch.tanh(g))
    return torch.sigmoid(o).mul_(torch.tanh(c)), c


def _gru_cell(gi: Tensor, gh: Tensor, h: Tensor) -> Tensor:
    i_r, i_z, i_n = gi.chunk(3, dim=1)
    h_r, h_z, h_n = gh.chunk(3, dim=1)
    r = torch.sigmoid(i_r.add_(h_r))
    z = torch.sigmoid(i_z.add_(h_z))
    n = torch.tanh(i_n.addcmul_(r, h_n))
    return n.add_(z.mul_(h - n))


# Where each weight format is fastest: int8 moves the least memory per step (batch 1); at larger batches the
# products become compute-bound and bf16 runs on the CPU's bf16 units. Formats are only picked where the
# model's recorded check shows them within TOLERANCE_NATS of fp32.
TOLERANCE_NATS = 0.01
# Without native bf16 (AVX2 only) bf16 is never used, and int8 only at batch 1, where memory traffic rules.
_PREFERENCE = {
    (True, "single"): ("int8", "bf16", "fp32"),
    (True, "batch"): ("bf16", "int8", "fp32"),
    (False, "single"): ("int8", "fp32"),
    (False, "batch"): ("fp32",),
}


def choose_weights(requested: str, checks: dict, batch: int, device: torch.device) -> str:
    """The weight format to generate with: `requested`, or for `auto` the fastest one the checks allow."""
    if requested != "auto":
        if requested not in WEIGHT_FORMATS:
            raise ConfigError(f"--weights must be auto, fp32, bf16 or int8, got {requested!r}")
        if requested == "bf16" and device.type == "cpu" and cpu_kind() == "fp32":
            raise ConfigError(
                "--weights bf16: this CPU has no native bf16, where bf16 is slow; use int8 or fp32"
            )
        return requested
    if device.type != "cpu":
        return "fp32"
    reference = checks.get("fp32")
    for fmt in _PREFERENCE[cpu_kind() != "fp32", "single" if batch == 1 else "batch"]:
        loss = checks.get(fmt)
        if fmt == "fp32" or (
            reference is not None and loss is not None and loss - reference <= TOLERANCE_NATS
        ):
            return fmt
    return "fp32"
