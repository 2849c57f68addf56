"""One optimizer step: forward and backward in the compute dtype, fp32 master weights, clipping, the step.

On a CPU, autocast does not reach the fused recurrent kernels, so low precision runs on a cast copy of the
model while the optimizer updates the fp32 originals; on CUDA autocast does it (with a gradient scaler for
fp16). A bf16 LSTM on a CPU can run on PyTorch's fused kernel or on charnn's own layer; which one trains
right and faster depends on the sizes and the CPU, so `choose_lstm_kernel` checks and times them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from charnn.config import ModelConfig, TrainConfig
from charnn.device import keep_freed_memory, memory_bytes, resolve_precision
from charnn.errors import ConfigError, TrainingError
from charnn.nn import cpu_lstm
from charnn.nn.model import CharRNN, State, count_parameters, layers_get_ids
from charnn.training import curriculum, distributed, kernels, rng
from charnn.training.distributed import Ranks
from charnn.training.mixed_precision import LowPrecisionCopy


class NonFiniteLoss(TrainingError):
    """The loss or the gradients became NaN or infinite; the step was not taken."""

    def __init__(self, value: float):
        super().__init__(f"the loss became {value}")
        self.value = value


@dataclass(frozen=True)
class StepResult:
    loss: float
    grad_norm: float
    state: State  # the recurrent state after the batch (detached), for batches that carry it


def check_fits_in_memory(config: ModelConfig) -> None:
    """Refuse a model whose weights, gradients and Adam state alone exceed this machine's memory."""
    params = count_parameters(config)
    need, have = params * 4 * 4, memory_bytes()
    if have is not None and need > have:
        raise ConfigError(
            f"the model has {params:,} parameters and needs over {need / 2**30:.1f} GiB to train, more than "
            f"this machine's {have / 2**30:.1f} GiB; lower --hidden, --layers or --embedding"
        )


class TrainStep:
    """A model seeded from `cfg.seed`, its optimizer, and one training step on a batch."""

    def __init__(
        self, model_cfg: ModelConfig, cfg: TrainConfig, device: torch.device, ranks: Ranks | None = None
    ):
        self.cfg, self.device = cfg, device
        self.ranks = ranks = ranks or Ranks()
        self.rows = ranks.rows(cfg.batch_size)  # this process's share of each global batch
        self.dtype = resolve_precision(cfg.precision, device)
        rng.seed_all(cfg.seed)
        check_fits_in_memory(model_cfg)
        if device.type == "cpu":
            keep_freed_memory()
        self.model = CharRNN(model_cfg).to(device)
        cast = device.type == "cpu" and self.dtype != torch.float32
        self.cast = LowPrecisionCopy(self.model, self.dtype) if cast else None
        self.compute = self.cast.module if self.cast else self.model
        # Only a bf16 LSTM on a CPU has a choice of kernel: None until chosen (a resumed run keeps its own).
        self.lstm_kernel: str | None = None if self.cast and model_cfg.cell == "lstm" else "pytorch"
        self._buffers = cpu_lstm.BufferPool()
        self.parallel = distributed.wrap(self.compute, ranks, device)
        self.autocast = device.type == "cuda" and self.dtype != torch.float32
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        optim_cls = torch.optim.AdamW if cfg.weight_decay else torch.optim.Adam
        self.optimizer = optim_cls(
            self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, fused=True
        )

    def __call__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        lr: float,
        state: State | None = None,
        mix: float = 0.0,
        step: int = 0,
    ) -> StepResult:
        """Train on inputs `x` and targets `y` (the global batch; this rank takes its rows) at rate `lr`,
        starting from recurrent `state` (None: zeros), with inputs mixed with the model's own samples with
        probability `mix` (scheduled sampling; draws seeded by `step`). Raises NonFiniteLoss before
        stepping on NaN."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        batch = x.shape[0]
        x = x[self.rows].to(self.device, non_blocking=True)
        y = y[self.rows].to(self.device, non_blocking=True)
        if mix > 0:
            x = self._mixed(x, state, mix, step, batch)
        try:
            with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
                logits, new_state = self.parallel(x, state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1))
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        except RuntimeError as e:  # gradients are averaged in a collective: a dead rank shows here
            if distributed.is_peer_failure(e, self.ranks):
                raise distributed.peer_failure(e) from None
            raise
        if self.cast:
            self.cast.grads_to_master()
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        max_norm = self.cfg.clip if self.cfg.clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        value = loss.item()
        # Gradients are averaged over ranks, so a NaN anywhere shows in grad_norm everywhere: all stop
        # together. (With fp16's gradient scaler, infinite gradients only skip a step.)
        if not math.isfinite(value) or (not self.scaler and not math.isfinite(grad_norm)):
            raise NonFiniteLoss(value if not math.isfinite(value) else grad_norm)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        if self.cast:
            self.cast.weights_from_master()
        else:
            self.optimizer.zero_grad(set_to_none=True)
        return StepResult(value, grad_norm, tuple(s.detach() for s in new_state))

    def _mixed(self, x: torch.Tensor, state: State | None, mix: float, step: int, batch: int) -> torch.Tensor:
        """`x` with the model's own samples mixed in (curriculum.py), from a pass without gradients."""
        with torch.no_grad(), torch.autocast(self.device.type, dtype=self.dtype, enabled=self.autocast):
            logits, _ = self.compute(x, state)
        return curriculum.mix_inputs(x, logits, mix, self.cfg.seed, step, self.rows, batch)

    def choose_lstm_kernel(self, setting: str, seq_len: int) -> str:
        """Settle the LSTM kernel (training/kernels.py: one whose bf16 gradients pass the check here, then
        the faster; a resumed run keeps its own where it passes) and compute with it from now on. Returns a
        line for the user where there is something to say, else ""."""
        note = ""
        if self.cast and self.model.config.cell == "lstm":
            c, rows = self.model.config, len(range(self.cfg.batch_size)[self.rows])
            vocab = c.vocab_size if layers_get_ids(c, training=True) else 0
            sizes = kernels.Sizes(c.embedding, c.hidden, c.layers, rows, seq_len, vocab)
            self.lstm_kernel, note = kernels.settle(self.lstm_kernel, setting, sizes, self.ranks)
        own = self.lstm_kernel == "charnn-bf16"
        self.compute.rnn.training_layers = (
            functools.partial(cpu_lstm.lstm, pool=self._buffers) if own else None
        )
        return note

    def release_buffers(self) -> None:
        """Drop the LSTM layer's work buffers (before evaluating: the next step makes them again)."""
        self._buffers.clear()

    def weights_changed(self) -> None:
        """Call after loading weights into `model`, so that the compute copy follows."""
        if self.cast:
            self.cast.weights_from_master()

    def scaler_state(self) -> dict | None:
        """The fp16 gradient scaler's state, JSON-ready (None without a scaler)."""
        return dict(self.scaler.state_dict()) if self.scaler else None

    def load_scaler_state(self, state: dict | None) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
