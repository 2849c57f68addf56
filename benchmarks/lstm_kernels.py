"""Where the seed model's LSTM time goes on this CPU, and whether a hand-written backward beats oneDNN.

    python benchmarks/lstm_kernels.py [--json OUT]

The seed model's LSTM (embedding 256 -> 1024, batch 64 x 100 chars) does 67 GFLOP forward and about twice that
backward per step. This script times, in fp32 and bf16 with 2 threads:
- the matrix products the LSTM is made of, as plain GEMMs: the gate pre-activations for all steps at once
  (6400 x 1280 x 4096), the weight gradient (4096 x 6400 x 1024), and 100 sequential 64 x 4096 x 1024 products
  (the recurrent part, which cannot be batched over time);
- PyTorch's fused LSTM (oneDNN on CPU) forward, and forward + backward;
- two hand-written versions in bf16 with fp32 gate arithmetic, their gradients compared with fp32 `nn.LSTM`:
  `recompute_backward` keeps oneDNN's forward, recomputes the gates with one product, runs the time loop
  with one 64 x 4096 x 1024 product per step and forms the weight gradients as one product after the loop;
  `both_loops` runs the forward loop itself too, keeping the gates, so nothing is recomputed.
A benchmark, not a test: about two minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from charnn.device import describe_cpu  # noqa: E402

BATCH, SEQ, EMBED, HIDDEN = 64, 100, 256, 1024
BF16 = torch.bfloat16


def backward_loop(i, f, g, o, c, c0, d_out, d_hn, d_cn, w_hh):
    """The LSTM backward through time from the gates (batch, steps, hidden) and cells: gate gradients for all
    steps as (batch * steps, 4 * hidden) in w_hh's dtype, and the gradients of the initial state."""
    batch, steps, hidden = c.shape
    tc = c.tanh()
    c_prev = torch.cat([c0.float()[:, None], c[:, :-1]], 1)
    # dz = (dc, dc, dc, dh) * m, with m depending on the forward values only
    m = torch.empty(batch, steps, 4, hidden)
    torch.mul(g, i - i * i, out=m[:, :, 0])
    torch.mul(c_prev, f - f * f, out=m[:, :, 1])
    torch.addcmul(i, i, g * g, value=-1, out=m[:, :, 2])
    torch.mul(tc, o - o * o, out=m[:, :, 3])
    dh_to_dc = torch.addcmul(o, o, tc * tc, value=-1)
    dz = torch.empty(batch, steps, 4, hidden, dtype=w_hh.dtype)
    dh_next = d_hn.float() if d_hn is not None else torch.zeros(batch, hidden)
    dc_next = d_cn.float() if d_cn is not None else torch.zeros(batch, hidden)
    dh, dc = torch.empty(batch, hidden), torch.empty(batch, hidden)
    for t in range(steps - 1, -1, -1):
        torch.add(d_out[:, t], dh_next, out=dh)
        torch.addcmul(dc_next, dh, dh_to_dc[:, t], out=dc)
        torch.mul(m[:, t, :3], dc[:, None], out=dz[:, t, :3])
        torch.mul(m[:, t, 3], dh, out=dz[:, t, 3])
        dc_next = dc * f[:, t]
        dh_next = dz[:, t].view(batch, 4 * hidden) @ w_hh
    return dz.view(batch * steps, 4 * hidden), dh_next.to(c0.dtype), dc_next.to(c0.dtype)


class RecomputeLSTM(torch.autograd.Function):
    """One LSTM layer: oneDNN forward; a backward by hand (gates recomputed, one weight-gradient product)."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, bias):
        zero = torch.zeros_like(bias)
        weights = [w_ih, w_hh, bias, zero]
        out, h_n, c_n = torch.lstm(x, (h0[None], c0[None]), weights, True, 1, 0.0, True, False, True)
        ctx.save_for_backward(x, out, h0, c0, w_ih, w_hh, bias)
        return out, h_n[0], c_n[0]

    @staticmethod
    def backward(ctx, d_out, d_hn, d_cn):
        x, out, h0, c0, w_ih, w_hh, bias = ctx.saved_tensors
        batch, steps, hidden = out.shape
        h_prev = torch.cat([h0[:, None], out[:, :-1]], 1)
        inputs = torch.cat([x, h_prev], 2).reshape(batch * steps, -1)
        z = (inputs @ torch.cat([w_ih, w_hh], 1).t()).float().add_(bias.float()).view(batch, steps, 4, hidden)
        i, f, o = z[:, :, 0].sigmoid(), z[:, :, 1].sigmoid(), z[:, :, 3].sigmoid()
        g = z[:, :, 2].tanh()
        ig = i * g
        c = torch.empty(batch, steps, hidden)
        prev = c0.float()
        for t in range(steps):
            prev = torch.addcmul(ig[:, t], f[:, t], prev, out=c[:, t])
        dz, dh0, dc0 = backward_loop(i, f, g, o, c, c0, d_out, d_hn, d_cn, w_hh)
        dw = dz.t() @ inputs
        embed = x.shape[2]
        dx = (dz @ w_ih).view(batch, steps, embed)
        d_bias = dz.float().sum(0).to(bias.dtype)
        return dx, dh0, dc0, dw[:, :embed], dw[:, embed:], d_bias


class LoopLSTM(torch.autograd.Function):
    """One LSTM layer, both loops by hand: the forward keeps the gates, the backward recomputes nothing."""

    @staticmethod
    def forward(ctx, x, h0, c0, w_ih, w_hh, bias):
        batch, steps, embed = x.shape
        hidden = w_hh.shape[1]
        x_proj = (x.reshape(batch * steps, embed) @ w_ih.t()).float().add_(bias.float())
        x_proj = x_proj.view(batch, steps, 4 * hidden)
        gates = torch.empty(batch, steps, 4, hidden)
        c = torch.empty(batch, steps, hidden)
        out = torch.empty(batch, steps, hidden, dtype=x.dtype)
        h, c_t, w_hh_t = h0, c0.float(), w_hh.t()
        for t in range(steps):
            a = gates[:, t]
            torch.add(x_proj[:, t], h @ w_hh_t, out=a.view(batch, 4 * hidden))
            a[:, :2].sigmoid_()
            a[:, 3].sigmoid_()
            a[:, 2].tanh_()
            c_t = torch.addcmul(a[:, 0] * a[:, 2], a[:, 1], c_t, out=c[:, t])
            h = torch.mul(a[:, 3], c_t.tanh(), out=out[:, t])
        ctx.save_for_backward(x, out, h0, c0, w_ih, w_hh, gates, c)
        return out, out[:, -1].clone(), c[:, -1].to(c0.dtype)

    @staticmethod
    def backward(ctx, d_out, d_hn, d_cn):
        x, out, h0, c0, w_ih, w_hh, gates, c = ctx.saved_tensors
        batch, steps, hidden = out.shape
        i, f, g, o = gates.unbind(2)
        dz, dh0, dc0 = backward_loop(i, f, g, o, c, c0, d_out, d_hn, d_cn, w_hh)
        embed = x.shape[2]
        h_prev = torch.cat([h0[:, None], out[:, :-1]], 1).reshape(batch * steps, hidden)
        dw_ih, dw_hh = dz.t() @ x.reshape(batch * steps, embed), dz.t() @ h_prev
        dx = (dz @ w_ih).view(batch, steps, embed)
        d_bias = dz.float().sum(0).to(w_ih.dtype)
        return dx, dh0, dc0, dw_ih, dw_hh, d_bias


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
    step, w_hh = torch.randn(BATCH, 4 * HIDDEN, dtype=dtype), torch.randn(4 * HIDDEN, HIDDEN, dtype=dtype)

    def recurrent():
        for _ in range(SEQ):
            step @ w_hh

    flops = 2 * BATCH * SEQ * 4 * HIDDEN
    return {
        "gates_gflops": flops * (EMBED + HIDDEN) / best_seconds(lambda: a @ w) / 1e9,
        "weight_grad_gflops": flops * HIDDEN / best_seconds(lambda: dz @ h) / 1e9,
        "recurrent_gflops": flops * HIDDEN / best_seconds(recurrent) / 1e9,
    }


def lstm_times(dtype: torch.dtype, x: torch.Tensor, d_out: torch.Tensor, ref: torch.nn.LSTM) -> dict:
    lstm = torch.nn.LSTM(EMBED, HIDDEN, batch_first=True).to(dtype)
    lstm.load_state_dict(ref.state_dict())
    xs = x.to(dtype)

    def forward():
        with torch.no_grad():
            lstm(xs)

    def both():
        lstm.zero_grad(set_to_none=True)
        out, _ = lstm(xs)
        (out.float() * d_out).sum().backward()

    fwd, total = best_seconds(forward), best_seconds(both)
    grads = (ref.weight_ih_l0.grad, ref.weight_hh_l0.grad)
    errors = {
        name: float((mine.grad.float() - g).norm() / g.norm())
        for name, mine, g in zip(("w_ih", "w_hh"), (lstm.weight_ih_l0, lstm.weight_hh_l0), grads, strict=True)
    }
    return {
        "forward_s": fwd,
        "forward_backward_s": total,
        "backward_over_forward": (total - fwd) / fwd,
        "relative_grad_error_vs_fp32": errors,
    }


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    x, d_out = torch.randn(BATCH, SEQ, EMBED), torch.randn(BATCH, SEQ, HIDDEN)
    ref = torch.nn.LSTM(EMBED, HIDDEN, batch_first=True)
    with torch.no_grad():
        ref.bias_hh_l0.zero_()  # one bias, as charnn's model keeps
    out, _ = ref(x)
    (out * d_out).sum().backward()

    params = (ref.weight_ih_l0, ref.weight_hh_l0, ref.bias_ih_l0)
    weights = [p.detach().to(BF16).requires_grad_() for p in params]
    xb, h0, c0 = x.to(BF16), torch.zeros(BATCH, HIDDEN, dtype=BF16), torch.zeros(BATCH, HIDDEN, dtype=BF16)

    def by_hand(function):
        def run():
            for w in weights:
                w.grad = None
            out, _, _ = function.apply(xb, h0, c0, *weights)
            (out.float() * d_out).sum().backward()

        seconds = best_seconds(run)
        grads = (ref.weight_ih_l0.grad, ref.weight_hh_l0.grad, ref.bias_ih_l0.grad)
        errors = {
            name: float((w.grad.float() - g).norm() / g.norm())
            for name, w, g in zip(("w_ih", "w_hh", "bias"), weights, grads, strict=True)
        }
        return {"forward_backward_s": seconds, "relative_grad_error_vs_fp32": errors}

    result = {
        **describe_cpu(),
        "torch": torch.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "gflop_per_step": {"forward": 2 * BATCH * SEQ * 4 * HIDDEN * (EMBED + HIDDEN) / 1e9},
        "gemm": {"fp32": gemm_rates(torch.float32), "bf16": gemm_rates(BF16)},
        "onednn_lstm": {
            "fp32": lstm_times(torch.float32, x, d_out, ref),
            "bf16": lstm_times(BF16, x, d_out, ref),
        },
        "recompute_backward_bf16": by_hand(RecomputeLSTM),
        "both_loops_bf16": by_hand(LoopLSTM),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
