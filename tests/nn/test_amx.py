"""charnn's recurrent product on Intel's AMX units (nn/amx.c): exact where fp32 sums are exact, and taken
only where the tiles fit (the layer's loops that run it: test_cpu_lstm.py)."""

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
