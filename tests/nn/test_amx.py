"""charnn's recurrent product on Intel's AMX units (nn/amx.c) and the layer's loops that run it: exact where
fp32 sums are exact, and the layer the same as where it takes oneDNN's product a step at a time."""

import pytest
import torch

from charnn.nn import cpu_lstm, native

COMPILED = native.compiled()[0]
pytestmark = pytest.mark.skipif(
    COMPILED is None or not COMPILED.amx, reason="this CPU has no AMX units (or the OS does not grant them)"
)


def small_integers(*shape: int, seed: int) -> torch.Tensor:
    """Integers in [-3, 3] as bf16: their products' sums over a few hundred terms are exact in fp32."""
    return torch.randint(-3, 4, shape, generator=torch.Generator().manual_seed(seed)).bfloat16()


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize(
    ("rows", "n", "k"),
    [(16, 16, 32), (64, 128, 96), (80, 64, 32), (48, 32, 64)],  # 80 and 48: a block of 64 rows and the rest
)
def test_the_product_is_exact_where_its_sums_are(rows, n, k, transposed):
    x = small_integers(rows, k, seed=1)
    w = small_integers(n, k, seed=2)  # as the forward takes it: x @ w.t()
    packed = COMPILED.amx_pack(w.t().contiguous() if transposed else w, transposed=transposed)
    # the exact sums, rounded once to bf16: any element out of place in the tiles would change them
    assert torch.equal(COMPILED.amx_product(x, packed), (x.float() @ w.float().t()).bfloat16())


def test_the_tutorial_sized_products_are_rounded_once_from_fp32_sums():
    gen = torch.Generator().manual_seed(3)
    h, w = (
        torch.randn(64, 1024, generator=gen).bfloat16(),
        (torch.randn(4096, 1024, generator=gen) * 0.03).bfloat16(),
    )
    exact = h.float() @ w.float().t()
    for out in (
        COMPILED.amx_product(h, COMPILED.amx_pack(w)),  # the forward's
        COMPILED.amx_product(h, COMPILED.amx_pack(w.t().contiguous(), transposed=True)),  # the backward's
    ):
        # one rounding to bf16 (2^-9 relative) of sums taken in another order than the fp32 reference's
        assert float(((out.float() - exact).abs() / exact.abs().clamp(min=1e-3)).median()) < 2**-9
        assert float((out.float() - exact).norm() / exact.norm()) < 2e-3


def layer_run(batch: int, layers: int, amx: bool, monkeypatch) -> list[torch.Tensor]:
    """Outputs, last state and every gradient (fp32) of charnn's bf16 layer, with or without the AMX loops."""
    monkeypatch.setattr(COMPILED, "amx", amx)
    gen = torch.Generator().manual_seed(4)
    weights = cpu_lstm.random_weights(32, 64, layers, gen, bias_scale=0.5)
    x = torch.randn(batch, 37, 32, generator=gen)
    state = [torch.randn(layers, batch, 64, generator=gen) * 0.5 for _ in range(2)]
    leaves = [t.bfloat16().requires_grad_() for t in (x, *state, *weights)]
    out, (h_n, c_n) = cpu_lstm.lstm(leaves[0], (leaves[1], leaves[2]), leaves[3:], 0.0, True)
    probes = [torch.randn(t.shape, generator=gen) for t in (out, h_n, c_n)]
    sum((t.float() * p).sum() for t, p in zip((out, h_n, c_n), probes, strict=True)).backward()
    return [t.detach().float() for t in (out, h_n, c_n)] + [t.grad.float() for t in leaves]


@pytest.mark.parametrize(("batch", "layers"), [(16, 1), (80, 2)])
def test_the_layer_on_amx_computes_what_it_does_a_step_at_a_time(batch, layers, monkeypatch):
    calls = []
    loop = COMPILED.forward_loop
    monkeypatch.setattr(COMPILED, "forward_loop", lambda *a: calls.append(1) or loop(*a))
    on_amx = layer_run(batch, layers, True, monkeypatch)
    assert len(calls) == layers  # the sizes fit the tiles: every layer ran its loop on the units
    stepwise = layer_run(batch, layers, False, monkeypatch)
    assert len(calls) == layers
    for a, b in zip(on_amx, stepwise, strict=True):
        # bf16 rounding of sums made in another order: a few bf16 steps apart, not more
        assert float((a - b).norm() / b.norm()) < 0.01


def test_the_product_refuses_what_its_tiles_do_not_take():
    packed = COMPILED.amx_pack(torch.zeros(32, 64, dtype=torch.bfloat16))
    for x in (torch.zeros(24, 64), torch.zeros(24, 64).bfloat16(), torch.zeros(16, 32).bfloat16()):
        with pytest.raises(ValueError, match="bf16 rows in 16s of 64"):
            COMPILED.amx_product(x, packed)


@pytest.mark.parametrize(("batch", "hidden"), [(24, 64), (16, 48)])
def test_sizes_that_do_not_fit_the_tiles_take_onednns_product(batch, hidden):
    w = torch.zeros(4 * hidden, hidden, dtype=torch.bfloat16)
    assert cpu_lstm.amx_weights(w, batch, COMPILED) is None
    assert cpu_lstm.amx_weights(w.float(), 16, COMPILED) is None  # fp32 weights: never
    assert cpu_lstm.amx_weights(torch.zeros(256, 64, dtype=torch.bfloat16), 16, COMPILED) is not None
