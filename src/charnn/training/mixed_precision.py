"""Training in bf16 on a CPU: a bf16 copy of the model computes, fp32 master weights take the steps."""

from __future__ import annotations

import copy

import torch

from charnn.nn.model import CharRNN


class LowPrecisionCopy:
    """A bf16 copy of a model for forward and backward; the fp32 master weights take the optimizer steps."""

    def __init__(self, master: CharRNN, dtype: torch.dtype):
        self.module = copy.deepcopy(master).to(dtype)
        self.masters = list(master.parameters())
        self.lows = list(self.module.parameters())

    def grads_to_master(self) -> None:
        """Copy (and widen) the copy's gradients into the masters' gradients."""
        for m in self.masters:
            if m.grad is None:
                m.grad = torch.empty_like(m)
        torch._foreach_copy_([m.grad for m in self.masters], [low.grad for low in self.lows])
        for low in self.lows:
            low.grad = None

    @torch.no_grad()
    def weights_from_master(self) -> None:
        torch._foreach_copy_(self.lows, self.masters)
