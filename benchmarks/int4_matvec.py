"""Would int4 weights make batch-1 generation faster? PyTorch's CPU int4 product against charnn's int8 one.

    python benchmarks/int4_matvec.py [--json OUT]

Generating one sample, each character is one product of the state with the 4096 x 1024 recurrent matrix
of the tutorial's model, which charnn keeps in int8 with a scale per row (4 MiB, read from memory every
step). int4 with a scale and offset per group of inputs halves the bytes. This times, for the state of one
sample and of 64, the product with int8 weights (`torch._weight_int8pack_mm`) and with bf16 weights
(oneDNN's packed layout), as nn/stepper.py keeps them, and with int4 weights at several group sizes
(`torch._weight_int4pack_mm_for_cpu`), each the best of five runs of 2,000 products on this machine's
threads; and each format's weight error (relative L2) on a random matrix scaled as a trained one's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import timeit
from pathlib import Path

import torch

from charnn.device import describe_cpu
from charnn.nn.cpu_lstm import packed_product

ROWS, COLS = 4096, 1024
GROUPS = (32, 64, 128, 256)


def best_us(product, reps: int) -> float:
    return min(timeit.repeat(product, number=reps, repeat=5)) / reps * 1e6


def int8(w: torch.Tensor):
    scales = (w.abs().amax(1) / 127).clamp_min(1e-12)
    q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales.bfloat16(), q.float() * scales[:, None]


def int4(w: torch.Tensor, group: int):
    """Codes 0-15 per group of `group` inputs, value = (code - 8) * scale + zero (the op's convention)."""
    grouped = w.view(ROWS, COLS // group, group)
    low, high = grouped.amin(-1, keepdim=True), grouped.amax(-1, keepdim=True)
    scale = ((high - low) / 15).clamp_min(1e-12)
    zero = low + 8 * scale
    codes = torch.round((grouped - low) / scale).clamp(0, 15)
    packed = torch._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).view(ROWS, COLS), 1)
    scales_zeros = torch.stack([scale.view(ROWS, -1).t(), zero.view(ROWS, -1).t()], dim=-1)
    return packed, scales_zeros.contiguous().bfloat16(), ((codes - 8) * scale + zero).view(ROWS, COLS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    torch.manual_seed(0)
    w = torch.randn(ROWS, COLS) / COLS**0.5
    result: dict = {"date": datetime.date.today().isoformat(), **describe_cpu(), "shape": [ROWS, COLS]}
    q8, s8, w8 = int8(w)
    result["weight_error"] = {"bf16": float((w.bfloat16().float() - w).norm() / w.norm())}
    result["weight_error"]["int8"] = float((w8 - w).norm() / w.norm())
    bf16 = packed_product(w.bfloat16(), 64)  # as nn/stepper.py keeps bf16 weights
    formats = {"int8": lambda x: torch._weight_int8pack_mm(x, q8, s8), "bf16": bf16}
    for group in GROUPS:
        packed, sz, w4 = int4(w, group)
        formats[f"int4 group {group}"] = lambda x, p=packed, g=group, s=sz: torch._weight_int4pack_mm_for_cpu(
            x, p, g, s
        )
        result["weight_error"][f"int4 group {group}"] = float((w4 - w).norm() / w.norm())
    for batch in (1, 64):
        x = torch.randn(batch, COLS).bfloat16()
        reps = 2000 if batch == 1 else 200
        times = {name: best_us(lambda f=f, x=x: f(x), reps) for name, f in formats.items()}
        result[f"batch {batch} us"] = times
    for key in ("batch 1 us", "batch 64 us"):
        print(key.replace(" us", "") + ": " + ", ".join(f"{k} {v:.0f} us" for k, v in result[key].items()))
    print("weight error: " + ", ".join(f"{k} {v:.2%}" for k, v in result["weight_error"].items()))
    print(f"({result['cpu']}, {result['cpu_kind']}, {result['threads']} threads, torch {result['torch']})")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
