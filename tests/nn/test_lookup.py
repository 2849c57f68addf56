"""A bf16 embedding's rows, with their gradient summed in fp32."""

import torch
import torch.nn.functional as F

from charnn.nn import lookup


def relative_error(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm())


def batch(gen):
    """6,400 ids like a batch of text: a sixth of them one character (as the space is in Shakespeare)."""
    ids = torch.randint(0, 65, (64, 100), generator=gen)
    ids[torch.rand(64, 100, generator=gen) < 1 / 6] = 0
    return ids


def test_the_rows_are_the_lookups_and_their_gradient_is_summed_in_fp32():
    gen = torch.Generator().manual_seed(0)
    ids, weight = batch(gen), torch.randn(65, 256, generator=gen)
    grad = torch.randn(64, 100, 256, generator=gen).bfloat16()
    exact = F.embedding(ids, weight.requires_grad_())
    exact.backward(grad.float())
    low = weight.detach().bfloat16().requires_grad_()
    rows = lookup.rows(ids, low)
    assert rows.dtype == torch.bfloat16 and torch.equal(rows, F.embedding(ids, low))
    rows.backward(grad)
    assert low.grad.dtype == torch.bfloat16
    assert relative_error(low.grad, weight.grad) < 0.005  # one rounding of the fp32 sums


def test_fp16_rows_are_summed_in_fp32_too():
    gen = torch.Generator().manual_seed(2)
    ids, weight = batch(gen), torch.randn(65, 32, generator=gen)
    grad = torch.randn(64, 100, 32, generator=gen).half()
    F.embedding(ids, weight.requires_grad_()).backward(grad.float())
    low = weight.detach().half().requires_grad_()
    lookup.rows(ids, low).backward(grad)
    assert relative_error(low.grad, weight.grad) < 0.002


def test_fp32_and_gradient_free_lookups_are_plain_ones():
    gen = torch.Generator().manual_seed(1)
    ids, weight = batch(gen), torch.randn(65, 16, generator=gen).requires_grad_()
    assert type(lookup.rows(ids, weight).grad_fn).__name__ == "EmbeddingBackward0"
    assert type(lookup.rows(ids, weight.bfloat16()).grad_fn).__name__ == "ToCopyBackward0"
    with torch.no_grad():
        assert lookup.rows(ids, weight.bfloat16()).grad_fn is None
    assert lookup.rows(ids, weight.detach().bfloat16()).grad_fn is None
