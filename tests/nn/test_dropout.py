"""charnn's CPU dropout (nn/dropout.py, dropout.c): what it drops, how it scales, its gradient, its layouts,
its seeds, and the fused kernels run a layer at a time around it."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

import charnn.nn.dropout
from charnn.config import ModelConfig
from charnn.nn.dropout import dropout, set_stream
from charnn.nn.model import CharRNN

needs_cc = pytest.mark.skipif(
    not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")),
    reason="no C compiler on this machine: dropout is PyTorch's (tested below in a subprocess)",
)
DTYPES = [torch.float32, torch.bfloat16]


@needs_cc
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.05, 0.3, 0.5])
def test_it_drops_a_share_p_and_scales_the_rest_exactly(dtype, p):
    torch.manual_seed(0)
    x = torch.randn(32, 100, 300).to(dtype)
    y = dropout(x, p, True)
    kept = y != 0
    assert abs((1 - kept.float().mean().item()) - p) < 0.003  # 960,000 elements: standard error < 0.0006
    assert torch.equal(y[kept], (x.float() * (1 / (1 - p))).to(dtype)[kept])


@needs_cc
def test_neighbouring_elements_and_successive_calls_are_independent():
    torch.manual_seed(0)
    p, x = 0.3, torch.ones(1_000_000)
    a, b = dropout(x, p, True) != 0, dropout(x, p, True) != 0
    keep = (1 - p) ** 2
    assert abs((a[1:] & a[:-1]).float().mean().item() - keep) < 0.003  # next to each other
    assert abs((a & b).float().mean().item() - keep) < 0.003  # two calls: two masks
    torch.manual_seed(0)
    assert torch.equal(dropout(x, p, True) != 0, a)  # PyTorch's seed decides the mask


@needs_cc
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_gradient_takes_the_forwards_mask_and_scale(dtype):
    torch.manual_seed(1)
    x = torch.ones(20, 30, 40, dtype=dtype, requires_grad=True)
    y = dropout(x, 0.4, True)
    y.backward(torch.full_like(y, 2.0))
    assert torch.equal(x.grad, (y.float() * 2).to(dtype))


@needs_cc
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_transposed_input_keeps_its_layout_and_a_gradient_in_another_layout_follows_the_mask(dtype):
    torch.manual_seed(2)
    x = torch.ones(50, 20, 30, dtype=dtype).transpose(0, 1).requires_grad_()  # time-major memory
    y = dropout(x, 0.3, True)
    assert y.stride() == x.stride()
    y.backward(torch.full((20, 50, 30), 3.0, dtype=dtype))  # batch-first memory
    assert torch.equal(x.grad, (y.float() * 3).to(dtype))
    sliced = torch.ones(10, 40)[:, ::2]  # not dense: taken contiguous first
    dropped = dropout(sliced, 0.5, True)
    assert ((dropped == 0) | (dropped == 2)).all() and 0 < (dropped == 0).sum() < sliced.numel()


def test_not_training_or_p_zero_is_the_input_itself():
    x = torch.randn(4, 5)
    assert dropout(x, 0.5, False) is x and dropout(x, 0.0, True) is x


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_the_fused_kernel_a_layer_at_a_time_computes_what_it_computes_in_one_call(cell):
    torch.manual_seed(3)
    model = CharRNN(ModelConfig(vocab_size=30, cell=cell, embedding=8, hidden=24, layers=3))
    rnn, x = model.rnn, torch.randn(4, 7, 8)
    hx = model.init_state(4) if cell == "lstm" else model.init_state(4)[0]
    weights = rnn.flat_weights()
    whole = rnn.kind.kernel(x, hx, weights, True, 3, 0.0, True, False, True)
    # a dropout so small that nothing is dropped and the scale rounds to 1: only the layering differs
    out, state = rnn._layer_by_layer(x, hx, weights, 1e-12)
    for a, b in zip([out, *state], whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_a_model_with_dropout_trains_through_the_layers_it_runs(cell):
    torch.manual_seed(4)
    config = ModelConfig(
        vocab_size=30, cell=cell, embedding=8, hidden=24, layers=2, dropout=0.3, io_dropout=0.2
    )
    model = CharRNN(config).train()
    ids = torch.randint(0, 30, (4, 12))
    logits, _ = model(ids)
    logits.sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
    model.eval()
    assert torch.equal(model(ids)[0], model(ids)[0])  # no dropout when evaluating


def test_without_a_c_compiler_dropout_is_pytorchs(tmp_path):
    code = """
        import torch
        from charnn.nn.dropout import dropout
        from charnn.nn import native
        torch.manual_seed(0)
        y = dropout(torch.ones(1000, requires_grad=True), 0.5, True)
        print(native.compiled()[0] is None, y.grad_fn.name(), sep="|")
    """
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, "PATH": str(tmp_path), "CHARNN_CACHE_DIR": str(tmp_path / "cache")},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    no_compiled, backward = done.stdout.strip().split("|")
    assert no_compiled == "True" and backward != "_DropoutBackward"  # PyTorch's dropout, not charnn's


@pytest.mark.parametrize("kind", ["compiled", "pytorch"])
def test_each_torchrun_rank_drops_its_own_elements_from_the_same_draws(monkeypatch, kind):
    """Every rank's generator is seeded alike: without the rank mixed in, rank 1 dropped exactly the
    elements rank 0 did, in its own rows; so did PyTorch's dropout (no C compiler, or a GPU) until it drew
    from a generator of its own."""
    if kind == "pytorch":
        monkeypatch.setattr(charnn.nn.dropout, "compiled", lambda: (None, "no C compiler (as in this test)"))
    elif not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        pytest.skip("no C compiler on this machine: dropout is PyTorch's (the other case)")
    x = torch.ones(8, 64, 32, requires_grad=True)
    masks, states = {}, {}
    try:
        for rank, world in ((0, 2), (1, 2), (0, 2), (0, 1)):
            set_stream(rank, world)
            torch.manual_seed(7)
            y = dropout(x, 0.5, True)
            masks.setdefault((rank, world), []).append(y == 0)
            states[rank, world] = torch.get_rng_state()
            assert set(y.unique().tolist()) == {0.0, 2.0}
    finally:
        set_stream(0, 1)
    assert torch.equal(*masks[0, 2])  # a rank's masks repeat with its seed
    if kind == "compiled":  # rank 0's are a single process's
        assert torch.equal(masks[0, 2][0], masks[0, 1][0])
    assert torch.equal(states[0, 2], states[1, 2])  # the ranks drew alike from torch's generator: in step
    shared = (masks[0, 2][0] == masks[1, 2][0]).float().mean().item()
    assert 0.4 < shared < 0.6  # independent masks agree on about half the elements; the same on all of them
