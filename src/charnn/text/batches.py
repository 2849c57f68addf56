"""Batches of training windows: the tutorial's shuffled windows, contiguous streams, or random windows.

A batch is a pure function of (seed, epoch, index), so a resumed run rebuilds exactly the batches it would
have seen.
"""

from __future__ import annotations

import numpy as np
import torch

from charnn.errors import ConfigError, DataError


class WindowBatches:
    """The tutorial's batching: non-overlapping windows of seq_len+1 chars, reshuffled each epoch.

    Input is a window without its last char, target the window without its first; a batch holds
    `batch_size` windows and the remainder of an epoch is dropped. The order of epoch e depends
    only on (seed, e), so any batch can be rebuilt from its position alone.
    """

    carries_state = False

    def __init__(self, ids: np.ndarray, seq_len: int, batch_size: int, seed: int, name: str = "corpus"):
        if seq_len < 1 or batch_size < 1:
            raise ConfigError("--seq-len and --batch-size must be at least 1")
        count = len(ids) // (seq_len + 1)
        if count < batch_size:
            need = batch_size * (seq_len + 1)
            raise DataError(
                f"{name}: the training text has {len(ids):,} chars but one batch needs {need:,} "
                f"({batch_size} windows of {seq_len + 1}); use more text or lower --batch-size / --seq-len"
            )
        self.windows = ids[: count * (seq_len + 1)].reshape(count, seq_len + 1)
        self.batch_size = batch_size
        self.seq_len = seq_len
        self.seed = seed
        self.steps_per_epoch = count // batch_size
        self._order: tuple[int, np.ndarray] | None = None

    def order(self, epoch: int) -> np.ndarray:
        """The shuffled window indices of an epoch."""
        if self._order is None or self._order[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._order = (epoch, rng.permutation(len(self.windows)))
        return self._order[1]

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of batch `index` of `epoch`, each (batch_size, seq_len) int64."""
        rows = self.order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        chunk = torch.from_numpy(self.windows[rows].astype(np.int64))
        return chunk[:, :-1], chunk[:, 1:]


class StreamBatches:
    """Stateful batching: the text cut into `batch_size` contiguous streams read window after window.

    Row b of every batch continues row b of the previous one, so the recurrent state is carried
    across batches (truncated back-propagation through time). Each epoch starts at a seeded offset
    below seq_len, so window boundaries move between epochs.
    """

    carries_state = True

    def __init__(self, ids: np.ndarray, seq_len: int, batch_size: int, seed: int, name: str = "corpus"):
        if seq_len < 1 or batch_size < 1:
            raise ConfigError("--seq-len and --batch-size must be at least 1")
        length = len(ids) // batch_size
        steps = (length - seq_len) // seq_len
        if steps < 1:
            need = batch_size * 2 * seq_len + batch_size
            raise DataError(
                f"{name}: the training text has {len(ids):,} chars but {batch_size} streams of "
                f"2 windows of {seq_len} need {need:,}; use more text or lower --batch-size / --seq-len"
            )
        self.streams = ids[: length * batch_size].reshape(batch_size, length)
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.steps_per_epoch = steps

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs and targets of window `index` of `epoch` for every stream."""
        offset = int(np.random.default_rng([self.seed, epoch]).integers(self.seq_len))
        start = offset + index * self.seq_len
        chunk = torch.from_numpy(self.streams[:, start : start + self.seq_len + 1].astype(np.int64))
        return chunk[:, :-1], chunk[:, 1:]


class RandomBatches:
    """Windows of seq_len+1 chars starting anywhere, drawn afresh for every batch (as nanoGPT samples).

    Batch `index` of epoch `e` depends only on (seed, e, index); an "epoch" is as many batches as the
    non-overlapping windows of the text would make.
    """

    carries_state = False

    def __init__(self, ids: np.ndarray, seq_len: int, batch_size: int, seed: int, name: str = "corpus"):
        WindowBatches(ids, seq_len, batch_size, seed, name)  # the same length checks
        self.ids, self.seq_len, self.batch_size, self.seed = ids, seq_len, batch_size, seed
        self.steps_per_epoch = len(ids) // (seq_len + 1) // batch_size
        self._offsets = np.arange(seq_len + 1)

    def batch(self, epoch: int, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, epoch, index])
        starts = rng.integers(0, len(self.ids) - self.seq_len, size=self.batch_size)
        chunk = torch.from_numpy(self.ids[starts[:, None] + self._offsets].astype(np.int64))
        return chunk[:, :-1], chunk[:, 1:]


BATCHINGS = {"windows": WindowBatches, "stream": StreamBatches, "random": RandomBatches}


def make_batches(
    batching: str, ids: np.ndarray, seq_len: int, batch_size: int, seed: int, name: str = "corpus"
) -> WindowBatches | StreamBatches | RandomBatches:
    """The batches of kind `batching` (windows, stream or random) over the training ids."""
    return BATCHINGS[batching](ids, seq_len, batch_size, seed, name)
