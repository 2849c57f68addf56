"""Where PyTorch's fused bf16 recurrent kernels on this CPU return wrong gradients: a minimal reproducer.

    python benchmarks/bf16_gradients.py            # the reproducer: one LSTM, hidden 1024, plain torch
    python benchmarks/bf16_gradients.py --sweep [--json OUT]   # map cells, widths, inputs, layers, batches

Plain PyTorch only (no charnn import), so it can go into an upstream report as it is. For each size it runs
`torch.nn.LSTM`/`GRU`/`RNN` forward and backward in fp32 and as a bf16 copy on the same inputs and output
gradients, and prints the relative error (L2) of the bf16 output and of each gradient against fp32.
bf16 rounding gives about 0.5%; on an Intel Xeon with AMX (torch 2.13.0 CPU, oneDNN) the LSTM's input
gradient comes back about 100% off and its weight gradients 20-27% off wherever hidden is a multiple of 64
from 1024 up, while its forward stays within 0.3%. On AVX-512 bf16 CPUs without AMX all errors stay under
0.5% (charnn's own runs on AMD EPYC, 2026-12-01).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path

import torch


def errors(cell: str, input_size: int, hidden: int, layers: int, batch: int, steps: int) -> dict:
    """Relative errors of bf16 against fp32: of the output, the worst gradient, and each gradient."""
    torch.manual_seed(0)
    reference = getattr(torch.nn, cell.upper())(input_size, hidden, layers, batch_first=True)
    x = torch.randn(batch, steps, input_size)
    d_out = torch.randn(batch, steps, hidden)
    results = []
    for dtype in (torch.float32, torch.bfloat16):
        module = copy.deepcopy(reference).to(dtype)
        xs = x.detach().to(dtype).requires_grad_()
        out = module(xs)[0]
        out.backward(d_out.to(dtype))
        grads = {"input": xs.grad} | {n: p.grad for n, p in module.named_parameters()}
        results.append((out.detach().float(), {n: g.float() for n, g in grads.items()}))
    (out32, g32), (out16, g16) = results
    per = {n: float((g16[n] - g32[n]).norm() / g32[n].norm()) for n in g32}
    return {
        "output": float((out16 - out32).norm() / out32.norm()),
        "worst_gradient": max(per.values()),
        "gradients": per,
    }


def cpuinfo_lines() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def cpu_name() -> str:
    names = [line.split(":", 1)[1].strip() for line in cpuinfo_lines() if line.startswith("model name")]
    return names[0] if names else platform.processor()


def sweep() -> list[dict]:
    sizes = [
        ("lstm", 256, h, 1, 16, 50)
        for h in (256, 512, 768, 960, 1000, 1023, 1024, 1025, 1040, 1088, 1152, 1280, 1536, 2048)
    ]
    sizes += [("lstm", i, 1024, 1, 16, 50) for i in (16, 64, 1024)]
    sizes += [("lstm", 256, 1024, 1, b, 50) for b in (1, 4, 64, 128)]
    sizes += [("lstm", 256, 1024, 1, 16, t) for t in (1, 2, 10, 100)]
    sizes += [("lstm", 64, h, 2, 16, 50) for h in (512, 1024)]
    sizes += [
        (c, 256, h, layers, 16, 50) for c in ("gru", "rnn") for h in (512, 1024, 2048) for layers in (1, 2)
    ]
    rows = []
    for cell, input_size, hidden, layers, batch, steps in sizes:
        started = time.perf_counter()
        e = errors(cell, input_size, hidden, layers, batch, steps)
        row = dict(
            cell=cell,
            input=input_size,
            hidden=hidden,
            layers=layers,
            batch=batch,
            steps=steps,
            output_error=round(e["output"], 5),
            worst_gradient_error=round(e["worst_gradient"], 5),
        )
        rows.append(row)
        print(
            " ".join(f"{k}={v}" for k, v in row.items()),
            f"({time.perf_counter() - started:.1f} s)",
            flush=True,
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sweep", action="store_true", help="map many sizes instead of the one reproducer")
    parser.add_argument("--json", help="write the sweep's results here")
    args = parser.parse_args()
    flags = {f for line in cpuinfo_lines() if line.startswith("flags") for f in line.split()}
    machine = {
        "cpu": cpu_name(),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d"),
    }
    print(json.dumps(machine))
    if not args.sweep:
        e = errors("lstm", 256, 1024, 1, 16, 50)
        print("nn.LSTM(256, 1024), batch 16 x 50 steps, bf16 against fp32, relative L2 error:")
        print(f"  output {e['output']:.4f}")
        for name, value in e["gradients"].items():
            print(f"  grad {name:12s} {value:.4f}")
        return
    rows = sweep()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": rows}, f, indent=1)


if __name__ == "__main__":
    main()
