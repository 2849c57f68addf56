"""What the compiled int8 product (nn/int8.c) gives one-sample generation: its speed and error against
PyTorch's int8 product, alone and inside `generation_speed`.

    python benchmarks/int8_product.py [--rounds N] [--json OUT]

With int8 weights, generation on a CPU with AMX multiplies them in compiled C (activations scaled to 16-bit
integers, exact integer sums); elsewhere PyTorch's `_weight_int8pack_mm` does it (bf16 activations, fp32
sums). This script times both on any CPU where the C builds, in one process, alternating round by round so
that the machine's load falls on both alike: the tutorial model's recurrent product (4096 x 1024) for one
sample, and generation of one sample with the tutorial's model (random weights: the speed does not depend
on them), the stepper handed one product or the other. A benchmark, not a test: about a minute.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from charnn.bench import generation_speed  # noqa: E402
from charnn.config import ModelConfig  # noqa: E402
from charnn.device import describe_cpu  # noqa: E402
from charnn.nn import stepper  # noqa: E402
from charnn.nn.model import CharRNN  # noqa: E402
from charnn.nn.native import compiled  # noqa: E402


def product_rounds(rounds: int, reps: int = 2000) -> dict:
    """Microseconds per product, best of each way's rounds, and each way's error against fp64."""
    native = compiled()[0]
    torch.manual_seed(0)
    q, scales = stepper.quantize_int8(torch.randn(4096, 1024) * 0.03)
    x = torch.tanh(2 * torch.randn(1, 1024))
    x16, scales16 = x.bfloat16(), scales.bfloat16()
    ways = {
        "compiled": lambda: native.int8_product(x, q, scales),
        "pytorch": lambda: torch._weight_int8pack_mm(x16, q, scales16),
    }
    exact = x.double() @ (q.double() * scales.double()[:, None]).t()
    result = {
        f"{name}_error": float((run().double() - exact).norm() / exact.norm()) for name, run in ways.items()
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, run in ways.items():
            for _ in range(50):
                run()
            start = time.perf_counter()
            for _ in range(reps):
                run()
            times[name].append((time.perf_counter() - start) / reps * 1e6)
    return {**result, **{f"{name}_us": min(t) for name, t in times.items()}}


def generation_rounds(rounds: int, length: int = 2000) -> dict:
    """One sample's chars/s with the tutorial's model, int8 weights, each way; the median of the ratios."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=65, hidden=1024, embedding=256)).eval()
    plain, ours = stepper._matmul, compiled()[0]

    def with_compiled(weight, fmt, widen=True, native=None):
        return plain(weight, fmt, widen, ours)

    def with_pytorch(weight, fmt, widen=True, native=None):
        return plain(weight, fmt, widen)

    products = {"compiled": with_compiled, "pytorch": with_pytorch}
    speeds: dict[str, list[float]] = {name: [] for name in products}
    for _ in range(rounds):
        for name, product in products.items():
            with mock.patch.object(stepper, "_matmul", product):
                speeds[name].append(generation_speed(model, "int8", length))
    ratios = [a / b for a, b in zip(speeds["compiled"], speeds["pytorch"], strict=True)]
    return {**{f"{k}_chars_per_s": v for k, v in speeds.items()}, "median_ratio": statistics.median(ratios)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    native, why = compiled()
    if native is None:
        print(f"no compiled int8 product here: {why}", file=sys.stderr)
        return 1
    result = {**describe_cpu(), "date": time.strftime("%Y-%m-%d")}  # describe_cpu names torch
    result["product"] = product = product_rounds(args.rounds)
    print(
        f"4096 x 1024 int8 product, one sample: compiled {product['compiled_us']:.1f} us "
        f"(relative error {product['compiled_error']:.2e}), PyTorch {product['pytorch_us']:.1f} us "
        f"({product['pytorch_error']:.2e})"
    )
    result["generation"] = gen = generation_rounds(args.rounds)
    print(
        "one sample of the tutorial's model, chars/s: compiled "
        + ", ".join(f"{v:,.0f}" for v in gen["compiled_chars_per_s"])
        + "; PyTorch "
        + ", ".join(f"{v:,.0f}" for v in gen["pytorch_chars_per_s"])
        + f"; median ratio {gen['median_ratio']:.2f}x"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
