"""Characters' rows of an embedding, with their gradient summed in fp32 where the embedding is bf16."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_NARROW = (torch.bfloat16, torch.float16)


def check_ids(ids: Tensor, rows: int) -> None:
    """Refuse (IndexError) ids outside a table of `rows` rows, as F.embedding does: for compiled code that
    reads rows by id, which would read past the table instead."""
    low, high = torch.aminmax(ids) if ids.numel() else (0, 0)
    if not 0 <= int(low) <= int(high) < rows:
        raise IndexError(f"ids out of range for an embedding of {rows} rows")


def rows(ids: Tensor, embedding: Tensor) -> Tensor:
    """F.embedding(ids, embedding), whose gradient, for a 16-bit embedding, is summed in fp32.

    PyTorch's backward of a bf16 lookup sums each character's rows in bf16: the tutorial model's embedding
    gradient came out 12.7% off fp32 on a batch of Shakespeare (a space is a sixth of it). Looked up in fp32
    and narrowed after, the rows are the same and their gradient is rounded once."""
    if embedding.dtype not in _NARROW or not (embedding.requires_grad and torch.is_grad_enabled()):
        return F.embedding(ids, embedding)
    return F.embedding(ids, embedding.float()).to(embedding.dtype)
