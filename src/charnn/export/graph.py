"""The ONNX step graph: (ids[batch], state...) -> (logits[batch, vocab], state...), fp32, dynamic batch.

The cells are written out as matrix products and pointwise math (the same arithmetic as the fp32
StepModel), not as ONNX's LSTM/GRU/RNN operators: nothing depends on an exporter mapping PyTorch's GRU onto
ONNX's `linear_before_reset` correctly, and the parity tests against PyTorch decide that it is right.
"""

from __future__ import annotations

import io
import warnings

import torch
from torch import Tensor, nn

from charnn.errors import CharnnError
from charnn.nn.model import CELLS, CharRNN

OPSET = 17
EXTRA_HINT = "pip install 'charnn[export]'"


def require_onnx() -> None:
    """Refuse (one line naming the extra) where the export packages are not installed."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise CharnnError(f"exporting to ONNX needs the onnx package: {EXTRA_HINT}") from None


def state_names(cell: str) -> list[str]:
    """Names of the state inputs, each (layers, batch, hidden): h, and c for an LSTM."""
    return ["h", "c"] if CELLS[cell].states == 2 else ["h"]


class StepGraph(nn.Module):
    """One character per sequence through a CharRNN's weights, in fp32, traced into the ONNX graph."""

    def __init__(self, model: CharRNN):
        super().__init__()
        cfg = model.config
        self.cell, self.layers = cfg.cell, cfg.layers
        flat = [w.detach().float().cpu() for w in model.rnn.flat_weights()]
        self.embedding = nn.Parameter(model.embedding.weight.detach().float().cpu())
        self.w_ih = nn.ParameterList([nn.Parameter(flat[4 * k].t().contiguous()) for k in range(self.layers)])
        self.w_hh = nn.ParameterList(
            [nn.Parameter(flat[4 * k + 1].t().contiguous()) for k in range(self.layers)]
        )
        self.b_ih = nn.ParameterList([nn.Parameter(flat[4 * k + 2]) for k in range(self.layers)])
        self.b_hh = nn.ParameterList([nn.Parameter(flat[4 * k + 3]) for k in range(self.layers)])
        self.head_w = nn.Parameter(model.head.weight.detach().float().cpu().t().contiguous())
        self.head_b = nn.Parameter(model.head.bias.detach().float().cpu())

    def forward(self, ids: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        x = self.embedding[ids]
        hs, cs = [], []
        for k in range(self.layers):
            gi = x @ self.w_ih[k] + self.b_ih[k]
            gh = state[0][k] @ self.w_hh[k] + self.b_hh[k]
            if self.cell == "lstm":
                i, f, g, o = (gi + gh).chunk(4, dim=1)
                c = torch.sigmoid(f) * state[1][k] + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                cs.append(c)
            elif self.cell == "gru":
                i_r, i_z, i_n = gi.chunk(3, dim=1)
                h_r, h_z, h_n = gh.chunk(3, dim=1)
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                n = torch.tanh(i_n + r * h_n)
                h = n + z * (state[0][k] - n)
            else:
                h = torch.tanh(gi + gh)
            hs.append(h)
            x = h
        logits = x @ self.head_w + self.head_b
        new_state = (torch.stack(hs),) + ((torch.stack(cs),) if cs else ())
        return (logits, *new_state)


def onnx_bytes(model: CharRNN) -> bytes:
    """The model's step graph as a serialised ONNX model."""
    require_onnx()
    graph = StepGraph(model).eval()
    cfg = model.config
    names = state_names(cfg.cell)
    example = (torch.zeros(2, dtype=torch.int64), *(torch.zeros(cfg.layers, 2, cfg.hidden) for _ in names))
    batch = {0: "batch"}
    axes = {"ids": batch, "logits": batch}
    axes.update({n: {1: "batch"} for n in names} | {f"{n}_out": {1: "batch"} for n in names})
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter(
            "ignore"
        )  # the TorchScript exporter's deprecation notice: it exports this cleanly
        torch.onnx.export(
            graph,
            example,
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=["ids", *names],
            output_names=["logits", *(f"{n}_out" for n in names)],
            dynamic_axes=axes,
        )
    return buffer.getvalue()
