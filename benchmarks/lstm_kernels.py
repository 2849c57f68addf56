"""Where the seed model's LSTM time goes on this CPU: matrix products, oneDNN's fused LSTM, charnn's layer.

    python benchmarks/lstm_kernels.py [--json OUT]

The seed model's LSTM (embedding 256 -> 1024, batch 64 x 100 chars) does 67 GFLOP forward and about twice that
backward per step. This script times, with 2 threads:
- the matrix products the LSTM is made of, as plain GEMMs in fp32 and bf16: the gate pre-activations for all
  steps at once (6400 x 1280 x 4096), the weight gradient (4096 x 6400 x 1024), and 100 sequential
  64 x 1024 x 4096 products (the recurrent part, which cannot be batched over time), plain and with the weight
  packed once in oneDNN's layout;
- PyTorch's fused LSTM (oneDNN on CPU) in fp32 and bf16, forward and forward + backward, and charnn's bf16
  training layer (charnn/nn/cpu_lstm.py) forward + backward, each with gradients compared with fp32 `nn.LSTM`;
- all of the LSTM timings twice, in fresh processes: with glibc's default malloc settings (as charnn runs)
  and with every freed block kept for reuse, to show how much of each kernel's time is page faults on fresh
  memory (charnn's layer reuses its own big buffers from step to step instead).
A benchmark, not a test: about a minute.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from charnn.device import describe_cpu  # noqa: E402
from charnn.nn import cpu_lstm  # noqa: E402

BATCH, SEQ, EMBED, HIDDEN = 64, 100, 256, 1024
BF16 = torch.bfloat16
POOL = cpu_lstm.BufferPool()  # as the model keeps one


def keep_freed_memory() -> None:
    """glibc keeps every freed block for reuse (no block is mapped afresh): what PyTorch's CPU tuning guide
    gets from jemalloc or tcmalloc, here for comparison with charnn's own buffer reuse."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4
    libc.mallopt(m_mmap_max, 0)
    libc.mallopt(m_trim_threshold, 2**31 - 1)


def best_seconds(fn, reps: int = 4) -> float:
    fn()
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_rates(dtype: torch.dtype) -> dict:
    a = torch.randn(BATCH * SEQ, EMBED + HIDDEN, dtype=dtype)
    w = torch.randn(EMBED + HIDDEN, 4 * HIDDEN, dtype=dtype)
    dz, h = torch.randn(4 * HIDDEN, BATCH * SEQ, dtype=dtype), torch.randn(BATCH * SEQ, HIDDEN, dtype=dtype)
    step, w_hh = torch.randn(BATCH, HIDDEN, dtype=dtype), torch.randn(4 * HIDDEN, HIDDEN, dtype=dtype)
    packed = cpu_lstm.packed_product(w_hh, BATCH)
    gflop = 2 * BATCH * SEQ * 4 * HIDDEN / 1e9
    return {
        "gates_gflops": gflop * (EMBED + HIDDEN) / best_seconds(lambda: a @ w),
        "weight_grad_gflops": gflop * HIDDEN / best_seconds(lambda: dz @ h),
        "recurrent_gflops": gflop * HIDDEN / best_seconds(lambda: [step @ w_hh.t() for _ in range(SEQ)]),
        "recurrent_packed_gflops": gflop * HIDDEN / best_seconds(lambda: [packed(step) for _ in range(SEQ)]),
    }


def lstm_times(reference: torch.nn.LSTM, x: torch.Tensor, d_out: torch.Tensor) -> dict:
    """Forward and forward + backward seconds of oneDNN in fp32 and bf16 and of charnn's bf16 layer, with each
    one's relative gradient error against the fp32 reference's gradients."""
    names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0")
    exact = [getattr(reference, n).grad for n in names]
    result = {}
    for label, dtype, kernel in (
        ("onednn_fp32", torch.float32, fused),
        ("onednn_bf16", BF16, fused),
        ("charnn_bf16", BF16, mine),
    ):
        weights = [getattr(reference, n).detach().to(dtype).requires_grad_() for n in names]
        weights.append(torch.zeros(4 * HIDDEN, dtype=dtype))
        xs, zero = x.to(dtype).requires_grad_(), torch.zeros(1, BATCH, HIDDEN, dtype=dtype)
        run = functools.partial(kernel, xs, (zero, zero), weights)
        with torch.no_grad():
            fwd = best_seconds(run)
        total = best_seconds(functools.partial(forward_backward, run, weights[:3], d_out.to(dtype)))
        errors = [float((w.grad.float() - e).norm() / e.norm()) for w, e in zip(weights, exact, strict=False)]
        result[label] = {
            "forward_s": fwd,
            "forward_backward_s": total,
            "relative_grad_error_vs_fp32": dict(zip(("w_ih", "w_hh", "bias"), errors, strict=True)),
        }
    return result


def fused(x, state, weights):
    return torch.lstm(x, state, weights, True, 1, 0.0, True, False, True)[0]


def mine(x, state, weights):
    return cpu_lstm.lstm(x, state, weights, 0.0, True, POOL)[0]


def forward_backward(run, params, grad):
    for p in params:
        p.grad = None
    run().backward(grad)


def measure(keep: bool) -> dict:
    """This process's measurements, with glibc's default malloc settings or with freed memory kept."""
    if keep:
        keep_freed_memory()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x, d_out = torch.randn(BATCH, SEQ, EMBED), torch.randn(BATCH, SEQ, HIDDEN)
    reference = torch.nn.LSTM(EMBED, HIDDEN, batch_first=True)
    with torch.no_grad():
        reference.bias_hh_l0.zero_()  # one bias, as charnn's model keeps
    out, _ = reference(x)
    out.backward(d_out)
    result = {"lstm": lstm_times(reference, x, d_out)}
    if keep:
        result["gemm"] = {"fp32": gemm_rates(torch.float32), "bf16": gemm_rates(BF16)}
    return result


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--child", choices=("default", "kept"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child == "kept")))
        return
    runs = {}
    for malloc in ("default", "kept"):
        cmd = [sys.executable, __file__, "--child", malloc]
        runs[malloc] = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    result = {
        **describe_cpu(),
        "threads": 2,
        "date": time.strftime("%Y-%m-%d"),
        "gflop_per_step": {"forward": 2 * BATCH * SEQ * 4 * HIDDEN * (EMBED + HIDDEN) / 1e9},
        "gemm": runs["kept"]["gemm"],
        "lstm_default_malloc": runs["default"]["lstm"],
        "lstm_freed_memory_kept": runs["kept"]["lstm"],
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
