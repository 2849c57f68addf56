"""Data-parallel training with torchrun and DistributedDataParallel: ranks, sharding, agreement.

`torchrun --nproc_per_node N -m charnn train ...` starts N copies of the same command; torchrun tells each
its RANK, WORLD_SIZE and LOCAL_RANK. Every rank builds the same model from the same seed, takes its own
slice of each global batch (or its own streams), and DistributedDataParallel averages the gradients, so a
step with N ranks of batch B/N is the step one process takes with batch B. Only rank 0 writes files.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from charnn.config import torchrun_ranks
from charnn.errors import CharnnError, ConfigError, TrainingError
from charnn.nn import dropout

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """Where this process stands in a torchrun job (a single process is rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a global batch."""
        if batch_size % self.world:
            counts = ", ".join(str(n) for n in range(1, min(batch_size, 64) + 1) if batch_size % n == 0)
            raise ConfigError(
                f"--batch-size {batch_size} does not split evenly over {self.world} processes (it is the "
                f"global batch): run {counts} processes, or, for a new run, a multiple of {self.world}"
            )
        per = batch_size // self.world
        return slice(self.rank * per, (self.rank + 1) * per)


def ranks_from_env() -> Ranks:
    """The ranks torchrun set in the environment (rank 0 of 1 outside torchrun)."""
    rank, world, local = torchrun_ranks()
    if not 0 <= rank < world or local < 0:
        raise ConfigError(
            f"RANK {rank} and WORLD_SIZE {world} must have 0 <= RANK < WORLD_SIZE (torchrun sets them)"
        )
    return Ranks(rank, world, local)


def start(ranks: Ranks, device: torch.device, timeout_s: float) -> torch.device:
    """Join the process group (gloo on CPU, nccl on CUDA), its collectives giving up after `timeout_s`;
    the device this rank computes on."""
    dropout.set_stream(ranks.rank, ranks.world)
    if not ranks.enabled:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError) as e:  # torch's DistError is a RuntimeError
            first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise TrainingError(
                f"the {ranks.world} processes of this run did not all join within --dist-timeout; another "
                f"one failed before it joined, or cannot be reached ({first_line[:160]})"
            ) from None
    return device


def finish(ranks: Ranks, clean: bool) -> None:
    """Leave the process group; after a clean end, wait for every rank first (rank 0 saves last)."""
    if not (ranks.enabled and dist.is_initialized()):
        return
    if clean:
        _collective(dist.barrier)
    dist.destroy_process_group()


def wrap(module: nn.Module, ranks: Ranks, device: torch.device) -> nn.Module:
    """`module` under DistributedDataParallel when there are several ranks."""
    if not ranks.enabled:
        return module
    ddp = nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None
    )
    if next(module.parameters()).dtype == torch.bfloat16:
        ddp.register_comm_hook(None, _allreduce_in_fp32)
    return ddp


def _allreduce_in_fp32(_, bucket):  # no annotations: DDP checks them, and here they would be strings
    """Average bf16 gradients in fp32: gloo has no bf16 sum, and fp32 sums lose less."""
    grads = bucket.buffer()
    wide = grads.float().div_(dist.get_world_size())
    return dist.all_reduce(wide, async_op=True).get_future().then(lambda done: grads.copy_(done.value()[0]))


def agree(value: float, ranks: Ranks) -> float:
    """The largest of every rank's `value` (e.g. a stop request), the same on all ranks."""
    if not ranks.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    _collective(lambda: dist.all_reduce(t, op=dist.ReduceOp.MAX))
    return float(t.item())


def sum_all(values: list[float], ranks: Ranks) -> list[float]:
    """Element-wise sums of every rank's `values`."""
    if not ranks.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    _collective(lambda: dist.all_reduce(t))
    return t.tolist()


def gather_rows(t: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """Every rank's rows of `t` (layers, rows, ...) in rank order: the whole batch's, on every rank."""
    if not ranks.enabled:
        return t
    parts = [torch.empty_like(t) for _ in range(ranks.world)]
    _collective(lambda: dist.all_gather(parts, t.contiguous()))
    return torch.cat(parts, dim=1)


def _collective(call: Callable[[], object]) -> None:
    try:
        call()
    except RuntimeError as e:
        raise peer_failure(e) from None


def peer_failure(e: RuntimeError) -> TrainingError:
    """The error to show when a collective failed because another rank died or is unreachable."""
    first_line = str(e).splitlines()[0] if str(e) else type(e).__name__
    return TrainingError(f"another process of this run stopped or cannot be reached ({first_line[:160]})")


def is_peer_failure(e: BaseException, ranks: Ranks) -> bool:
    """True for the errors gloo and NCCL raise when another rank has gone."""
    text = str(e)
    return ranks.enabled and (
        isinstance(e, dist.DistBackendError)
        or any(said in text for said in ("Connection closed by peer", "Connection reset by peer", "NCCL"))
    )


def together(ranks: Ranks, step: Callable[[], T]) -> T | None:
    """Run `step` on every rank and return what it returned; if it fails on any, fail on all (no rank left
    waiting in a collective)."""
    error: CharnnError | None = None
    result = None
    try:
        result = step()
    except CharnnError as e:
        error = e
    failed = agree(1.0 if error else 0.0, ranks)
    if error is not None:
        raise error
    if failed:
        raise TrainingError("another process of this run failed while starting; its message says why")
    return result
