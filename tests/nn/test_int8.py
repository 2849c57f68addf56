"""The compiled product of int8 weights with activations scaled to 16-bit integers (int8.c): exact integer
sums, the same bits with and without AVX-512 VNNI and on any number of threads, NaN where its input is not
finite, and at least as close to the exact product as PyTorch's own int8 product."""

import ctypes
import platform
import shutil

import pytest
import torch

from charnn.device import cpu_info
from charnn.nn import native
from charnn.nn.stepper import quantize_int8

pytestmark = pytest.mark.skipif(native.compiled()[0] is None, reason="no C compiler here")


def product(x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, steps=None) -> torch.Tensor:
    return (steps or native.compiled()[0]).int8_product(x, q, scales)


def integers(rows: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x whose largest magnitude per row is 32767, so its 16-bit scaling is exact, and random int8 weights."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-32767, 32768, (rows, width), generator=g).float()
    x[:, 0] = 32767.0
    return x, torch.randint(-127, 128, (3 * 32 + 5, width), generator=g, dtype=torch.int8)


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("width", [16, 33, 512, 1100])  # a vector's tail, 512-term chunks and their tail
def test_the_sums_are_exact(rows, width):
    x, q = integers(rows, width, seed=width)
    exact = x.long() @ q.long().t()
    got = product(x, q, torch.ones(q.shape[0]))
    assert torch.equal(got, exact.double().to(torch.bfloat16))


def test_sums_beyond_32_bits_do_not_overflow():
    x, q = torch.full((1, 16384), 32767.0), torch.full((8, 16384), 127, dtype=torch.int8)
    q[1] = -127
    got = product(x, q, torch.ones(8))
    total = 127 * 32767 * 16384  # 6.8e10, where 32 bits hold 2.1e9
    assert torch.equal(got[0, :2], torch.tensor([total, -total]).to(torch.bfloat16))


def test_scales_apply_per_row_and_per_output():
    x, q = integers(2, 64, seed=1)
    x[1] /= 1024  # a row's scale is its own largest magnitude
    scales = torch.linspace(0.5, 2.0, q.shape[0])
    exact = (x.double() @ q.double().t()) * scales.double()
    assert torch.equal(product(x, q, scales), exact.to(torch.bfloat16))


@pytest.mark.parametrize("largest", [1e-36, 1e-40])  # where 32767 / largest is beyond float32 (and subnormal)
def test_rows_of_tiny_magnitudes_are_scaled_too(largest):
    x, q = integers(1, 64, seed=3)
    x = x * (largest / 32767.0)
    exact = (x.double() @ q.double().t()).float()
    got = product(x, q, torch.ones(q.shape[0]))
    assert got.abs().max() > 0
    assert float((got.float() - exact).abs().max() / exact.abs().max()) < 1e-2


def test_a_row_that_is_not_finite_comes_out_nan_and_leaves_the_others():
    x, q = integers(3, 40, seed=2)
    x[0, 7], x[2, 3] = float("nan"), float("inf")
    got = product(x, q, torch.ones(q.shape[0]))
    assert got[0].isnan().all() and got[2].isnan().all() and got[1].isfinite().all()
    assert torch.equal(
        product(torch.zeros(1, 40), q, torch.ones(q.shape[0])), torch.zeros(1, q.shape[0]).bfloat16()
    )


def test_the_same_bits_on_one_thread_and_on_two():
    torch.manual_seed(3)
    x, q, scales = (
        torch.randn(2, 1024),
        torch.randint(-127, 128, (4096, 1024), dtype=torch.int8),
        torch.rand(4096),
    )
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = product(x, q, scales)
        torch.set_num_threads(2)
        two = product(x, q, scales)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


@pytest.mark.skipif(
    platform.machine() != "x86_64" or "avx512_vnni" not in cpu_info()[1],
    reason="the vector loop is taken only where the CPU has AVX-512 VNNI",
)
def test_built_without_vnni_it_gives_the_same_bits(tmp_path):
    """The plain C loop (CPUs without AVX-512 VNNI) against the vector one, overflow-prone sums included."""
    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    path = tmp_path / "plain.so"
    native._build(compiler, [*native.FLAGS, "-mno-avx512vnni"], path)
    plain = native.Compiled(ctypes.CDLL(str(path)))
    torch.manual_seed(4)
    for width in (32, 1000, 1024):
        x, q, scales = (
            torch.randn(3, width),
            torch.randint(-127, 128, (96, width), dtype=torch.int8),
            torch.rand(96),
        )
        assert torch.equal(product(x, q, scales, plain), product(x, q, scales))
    x, q = torch.full((1, 16384), 32767.0), torch.full((8, 16384), -127, dtype=torch.int8)
    assert torch.equal(product(x, q, torch.ones(8), plain), product(x, q, torch.ones(8)))


def test_closer_to_the_exact_product_than_pytorchs_int8_product():
    """At the tutorial's size, with activations as an LSTM's state holds them (tanh-like)."""
    torch.manual_seed(5)
    q, scales = quantize_int8(torch.randn(4096, 1024) * 0.03)
    x = torch.tanh(2 * torch.randn(4, 1024))
    exact = x.double() @ (q.double() * scales.double()[:, None]).t()
    ours = (product(x, q, scales).double() - exact).norm() / exact.norm()
    theirs = torch._weight_int8pack_mm(x.bfloat16(), q, scales.bfloat16())
    theirs = (theirs.double() - exact).norm() / exact.norm()
    print(f"relative error: compiled {ours:.2e}, PyTorch {theirs:.2e}")
    assert ours < theirs


@pytest.mark.parametrize(
    "bad",
    [
        lambda x, q, s: (x.double(), q, s),
        lambda x, q, s: (torch.randn(4, 32)[:, ::2], q, s),  # not contiguous
        lambda x, q, s: (x, torch.randint(-127, 128, (4, 32), dtype=torch.int8)[:, ::2], s),
        lambda x, q, s: (x[0], q, s),  # one row, not a matrix
        lambda x, q, s: (x[:, :8].contiguous(), q, s),  # narrower than the weights
        lambda x, q, s: (x, q.float(), s),
        lambda x, q, s: (x, q, s.double()),
        lambda x, q, s: (x, q, s[:-1]),
    ],
)
def test_inputs_it_cannot_read_are_refused(bad):
    x, q = torch.randn(4, 16), torch.randint(-127, 128, (4, 16), dtype=torch.int8)
    with pytest.raises(ValueError):
        product(*bad(x, q, torch.ones(4)))
