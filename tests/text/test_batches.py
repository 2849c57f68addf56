"""Batches: the tutorial's shuffled windows, contiguous streams and random windows, each a pure function of
(seed, epoch, index)."""

import numpy as np
import pytest
import torch

from charnn.errors import DataError
from charnn.text.batches import RandomBatches, StreamBatches, WindowBatches, make_batches


def test_windows_are_non_overlapping_chunks_with_shifted_targets():
    ids = np.arange(1000, dtype=np.uint16)
    batches = WindowBatches(ids, seq_len=9, batch_size=4, seed=0)
    assert batches.steps_per_epoch == (1000 // 10) // 4
    x, y = batches.batch(0, 0)
    assert x.shape == y.shape == (4, 9) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert torch.all(x[:, 0] % 10 == 0)  # every window starts on a chunk boundary
    seen = torch.cat([batches.batch(0, i)[0][:, 0] for i in range(batches.steps_per_epoch)])
    assert len(set(seen.tolist())) == len(seen)  # each chunk at most once per epoch


def test_window_order_is_seeded_and_changes_per_epoch():
    ids = np.arange(5000, dtype=np.uint16)
    a = WindowBatches(ids, 9, 4, seed=1)
    b = WindowBatches(ids, 9, 4, seed=1)
    assert torch.equal(a.batch(3, 2)[0], b.batch(3, 2)[0])
    assert not torch.equal(a.batch(0, 0)[0], a.batch(1, 0)[0])
    assert not torch.equal(a.batch(0, 0)[0], WindowBatches(ids, 9, 4, seed=2).batch(0, 0)[0])


def test_too_short_text_says_how_much_is_needed():
    with pytest.raises(DataError, match="one batch needs 6,464"):
        WindowBatches(np.zeros(6000, dtype=np.uint8), seq_len=100, batch_size=64, seed=0)


def test_streams_continue_across_batches():
    ids = np.arange(4 * 500, dtype=np.uint16)
    batches = StreamBatches(ids, seq_len=10, batch_size=4, seed=0)
    x0, y0 = batches.batch(0, 0)
    x1, _ = batches.batch(0, 1)
    assert torch.equal(x1[:, 0], y0[:, -1])  # the next window starts where the last one ended
    assert torch.equal(x0[:, 1:], y0[:, :-1])
    assert torch.all(x0[1:, 0] - x0[:-1, 0] == 500)  # rows are separate contiguous streams
    last = batches.steps_per_epoch - 1
    assert batches.batch(0, last)[1].shape == (4, 10)


def test_random_windows_start_anywhere_and_are_reproducible():
    ids = np.arange(10_000, dtype=np.uint16)
    batches = RandomBatches(ids, seq_len=16, batch_size=8, seed=3)
    x, y = batches.batch(2, 5)
    assert x.shape == y.shape == (8, 16) and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.all(y[:, -1] - x[:, 0] == 16)  # contiguous windows of seq_len+1
    assert torch.equal(x, RandomBatches(ids, 16, 8, seed=3).batch(2, 5)[0])
    starts = torch.cat([batches.batch(0, i)[0][:, 0] for i in range(50)])
    assert (starts % 17 != 0).any()  # not tied to a chunk grid
    assert batches.steps_per_epoch == 10_000 // 17 // 8


@pytest.mark.parametrize("batching", ["windows", "stream", "random"])
def test_make_batches_builds_each_kind_from_its_name(batching):
    batches = make_batches(batching, np.arange(5000, dtype=np.uint16), 9, 4, seed=1)
    kinds = {"windows": WindowBatches, "stream": StreamBatches, "random": RandomBatches}
    assert type(batches) is kinds[batching] and batches.batch(0, 0)[0].shape == (4, 9)
    assert batches.carries_state == (batching == "stream")
