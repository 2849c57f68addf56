"""The model: Embedding -> stacked LSTM/GRU/RNN cells -> Linear, with the recurrent state in and out."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from charnn.config import ModelConfig
from charnn.nn import lookup
from charnn.nn.dropout import dropout as drop
from charnn.nn.dropout import per_rank as dropout_per_rank

State = tuple[Tensor, ...]
# Another implementation of a stack of recurrent layers, taking the fused kernel's arguments:
# (x batch-first, state as one tensor or an (h, c) pair, flat weights, dropout, training) -> (out, new state),
# and the keyword `embedding`: where given, x is ids (B, T) whose rows of it are the input.
LayerStack = Callable[..., tuple[Tensor, State]]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode for the block, then in the mode it was in: a caller who samples or evaluates
    between training steps of their own trains on with dropout."""
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


@dataclass(frozen=True)
class CellKind:
    """How one kind of recurrent cell maps onto PyTorch's fused recurrent kernels."""

    kernel: object
    gates: int
    biases: int  # 1 where the input and recurrent biases only ever appear summed (Keras keeps one)
    states: int


CELLS: dict[str, CellKind] = {
    "lstm": CellKind(torch.lstm, gates=4, biases=1, states=2),
    "gru": CellKind(torch.gru, gates=3, biases=2, states=1),
    "rnn": CellKind(torch.rnn_tanh, gates=1, biases=1, states=1),
}


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Name and shape of every weight of a model with this config, without building it."""
    kind = CELLS[config.cell]
    width = kind.gates * config.hidden
    shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (config.vocab_size, config.embedding)}
    for k in range(config.layers):
        shapes[f"rnn.weight_ih_l{k}"] = (width, config.embedding if k == 0 else config.hidden)
        shapes[f"rnn.weight_hh_l{k}"] = (width, config.hidden)
        biases = ("bias_ih", "bias_hh") if kind.biases == 2 else ("bias",)
        shapes.update({f"rnn.{b}_l{k}": (width,) for b in biases})
    shapes["head.weight"] = (config.vocab_size, config.hidden)
    shapes["head.bias"] = (config.vocab_size,)
    return shapes


def count_parameters(config: ModelConfig) -> int:
    return sum(math.prod(shape) for shape in parameter_shapes(config).values())


class Recurrent(nn.Module):
    """Stacked recurrent layers run by PyTorch's fused kernel (oneDNN on CPU, cuDNN on CUDA).

    LSTM and RNN layers keep a single bias per gate, as Keras does; the kernel's second bias is a
    constant zero buffer, so the parameter count matches the tutorial's exactly.
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden: int,
        layers: int,
        dropout: float,
        init: bool,
        weight_dropout: float = 0.0,
    ):
        super().__init__()
        self.kind = CELLS[cell]
        self.hidden, self.layers, self.dropout = hidden, layers, dropout
        self.weight_dropout = weight_dropout
        width = self.kind.gates * hidden
        for k in range(layers):
            fan_in = input_size if k == 0 else hidden
            self.register_parameter(f"weight_ih_l{k}", nn.Parameter(torch.empty(width, fan_in)))
            self.register_parameter(f"weight_hh_l{k}", nn.Parameter(torch.empty(width, hidden)))
            if self.kind.biases == 2:
                self.register_parameter(f"bias_ih_l{k}", nn.Parameter(torch.zeros(width)))
                self.register_parameter(f"bias_hh_l{k}", nn.Parameter(torch.zeros(width)))
            else:
                self.register_parameter(f"bias_l{k}", nn.Parameter(torch.zeros(width)))
        self.register_buffer("zero_bias", torch.zeros(width), persistent=False)
        # Where set, runs the layers while gradients are recorded (training puts charnn's own bf16 CPU LSTM
        # layer here when it measured faster than the fused kernel); evaluation always uses the fused one.
        self.training_layers: LayerStack | None = None
        if init:
            self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras's initialisers: Glorot-uniform input, orthogonal recurrent weights, unit forget bias."""
        for name, p in self.named_parameters():
            if name.startswith("weight_ih"):
                bound = math.sqrt(6.0 / (p.shape[0] + p.shape[1]))
                nn.init.uniform_(p, -bound, bound)
            elif name.startswith("weight_hh"):
                nn.init.orthogonal_(p)
            else:
                nn.init.zeros_(p)
                if self.kind.gates == 4:  # LSTM: forget gate starts open
                    p.data[self.hidden : 2 * self.hidden] = 1.0

    def flat_weights(self) -> list[Tensor]:
        """Weights in the order the fused kernels take them: w_ih, w_hh, b_ih, b_hh per layer."""
        out = []
        for k in range(self.layers):
            w_ih, w_hh = getattr(self, f"weight_ih_l{k}"), getattr(self, f"weight_hh_l{k}")
            if self.kind.biases == 2:
                out += [w_ih, w_hh, getattr(self, f"bias_ih_l{k}"), getattr(self, f"bias_hh_l{k}")]
            else:
                out += [w_ih, w_hh, getattr(self, f"bias_l{k}"), self.zero_bias.to(w_ih.dtype)]
        return out

    def forward(self, x: Tensor, state: State, embedding: Tensor | None = None) -> tuple[Tensor, State]:
        """The layers over x (B, T, E), or where `embedding` is given, over the rows of it that ids x (B, T)
        pick (so that `training_layers` may fold it into the first layer's input weights)."""
        hx = state if self.kind.states == 2 else state[0]
        dropout = self.dropout if self.layers > 1 else 0.0
        weights = self.flat_weights()
        if self.training and self.weight_dropout:
            # DropConnect as in AWD-LSTM: one mask over each recurrent matrix for the whole batch and window,
            # so the fused kernels still run; it drops weights, not the state.
            weights = [drop(w, self.weight_dropout, True) if k % 4 == 1 else w for k, w in enumerate(weights)]
        if self.training_layers is not None and torch.is_grad_enabled():
            return self.training_layers(x, hx, weights, dropout, self.training, embedding=embedding)
        if embedding is not None:
            x = lookup.rows(x, embedding)
        if dropout and self.training and (x.device.type == "cpu" or dropout_per_rank()):
            return self._layer_by_layer(x, hx, weights, dropout)  # cuDNN's masks would be alike on every rank
        out, *new_state = self.kind.kernel(
            x, hx, weights, True, self.layers, dropout, self.training, False, True
        )
        return out, tuple(new_state)

    def _layer_by_layer(
        self, x: Tensor, hx: Tensor | State, weights: list[Tensor], dropout: float
    ) -> tuple[Tensor, State]:
        """The fused kernel a layer at a time with charnn's dropout between them (nn/dropout.py): the
        kernel's own dropout on a CPU costs more than the layer it follows, and under torchrun on a GPU
        cuDNN's would drop the same elements on every rank."""
        states = []
        for k in range(self.layers):
            layer_hx = tuple(h[k : k + 1] for h in hx) if isinstance(hx, tuple) else hx[k : k + 1]
            x = drop(x, dropout, True) if k else x
            layer = weights[4 * k : 4 * k + 4]
            x, *state = self.kind.kernel(x, layer_hx, layer, True, 1, 0.0, True, False, True)
            states.append(state)
        return x, tuple(torch.cat(parts) for parts in zip(*states, strict=True))


def layers_get_ids(config: ModelConfig, training: bool) -> bool:
    """Whether the model hands its recurrent layers ids and the embedding (charnn's training layer may fold
    it into its first input weights, nn/cpu_lstm.py) rather than looked-up rows: unless the rows drop out."""
    return not (config.io_dropout and training)


class CharRNN(nn.Module):
    """Embedding -> recurrent layers -> Linear over the vocabulary."""

    def __init__(self, config: ModelConfig, init: bool = True):
        """`init=False` skips initialising the weights, for a model whose weights are loaded next."""
        super().__init__()
        self.config = config
        c = config
        # PyTorch's layers draw their first weights from torch's global generator; a model whose weights
        # are loaded next leaves it as it was (a program that seeded it for its own use keeps its numbers).
        with contextlib.nullcontext() if init else torch.random.fork_rng(devices=[]):
            self.embedding = nn.Embedding(config.vocab_size, config.embedding)
            self.rnn = Recurrent(c.cell, c.embedding, c.hidden, c.layers, c.dropout, init, c.weight_dropout)
            self.head = nn.Linear(config.hidden, config.vocab_size)
        if not init:
            return
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
        bound = math.sqrt(6.0 / (config.hidden + config.vocab_size))
        nn.init.uniform_(self.head.weight, -bound, bound)
        nn.init.zeros_(self.head.bias)

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def init_state(self, batch_size: int) -> State:
        """An all-zero recurrent state for `batch_size` sequences."""
        w = self.embedding.weight
        shape = (self.config.layers, batch_size, self.config.hidden)
        return tuple(w.new_zeros(shape) for _ in range(self.rnn.kind.states))

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """Logits (batch, time, vocab) for ids x (batch, time), and the state after the last step."""
        if state is None:
            state = self.init_state(x.shape[0])
        p = self.config.io_dropout
        if layers_get_ids(self.config, self.training):  # the layers look the rows up, or fold them in
            out, state = self.rnn(x, state, embedding=self.embedding.weight)
        else:
            out, state = self.rnn(drop(lookup.rows(x, self.embedding.weight), p, True), state)
        out = drop(out, p, self.training)
        time_major = out.transpose(0, 1)
        if out.dtype != torch.float32 and time_major.is_contiguous() and not out.is_contiguous():
            # The recurrent layers handed back a view of time-major outputs: the head takes them as they
            # lie, and its narrow logits are turned round instead of the wide outputs (and their gradient).
            # Not in fp32, whose results are recorded bit for bit per CPU kind (tests/behaviour_records.json)
            # and would move in the last bits (the head's gradient sums its rows in another order).
            return self.head(time_major).transpose(0, 1), state
        return self.head(out), state

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
