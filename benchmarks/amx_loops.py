"""What the LSTM layer's loops on the AMX units (nn/amx.c) give: training steps with them and without.

    python benchmarks/amx_loops.py [--pairs N] [--json OUT]

On a CPU with AMX, charnn's bf16 LSTM layer runs its forward and backward loops in C, each step's recurrent
product on the matrix units; without them (where the CPU has no AMX, or the batch or hidden size does not fit
the tiles) each step is a call from Python: oneDNN's packed product, then the compiled pointwise step. This
script times both ways in one process, alternating step by step (so that the machine's load falls on both
alike), for the tutorial's model and for the AMX variants of the `cpu-5m` and `cpu-10m` presets, and one
recurrent product alone each way. A benchmark, not a test: about two minutes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from charnn.config import ModelConfig  # noqa: E402
from charnn.device import describe_cpu  # noqa: E402
from charnn.nn import cpu_lstm  # noqa: E402
from charnn.nn.native import compiled  # noqa: E402
from charnn.presets import settings_for  # noqa: E402
from charnn.text.batches import WindowBatches  # noqa: E402
from charnn.text.corpus import load_corpus  # noqa: E402
from charnn.training.step import TrainStep  # noqa: E402

MODELS = {"seed": "seed", "cpu-5m (AMX variant)": "cpu-5m", "cpu-10m (AMX variant)": "cpu-10m"}


def step_times(preset: str, pairs: int) -> dict:
    """Median seconds of a training step with the AMX loops and without, steps alternating."""
    native = compiled()[0]
    corpus = load_corpus("shakespeare", quiet=True)
    model, cfg = settings_for(preset, {"precision": "bf16"}, kind="amx")
    model = ModelConfig(**model, vocab_size=len(corpus.vocab))
    step = TrainStep(model, cfg, torch.device("cpu"))
    step.choose_lstm_kernel("charnn-bf16", cfg.seq_len)
    batches = WindowBatches(corpus.ids, cfg.seq_len, cfg.batch_size, cfg.seed)
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(2 * (pairs + 2)):
        native.amx = i % 2 == 0
        x, y = batches.batch(0, i % batches.steps_per_epoch)
        start = time.perf_counter()
        step(x, y, cfg.lr)
        times[native.amx].append(time.perf_counter() - start)
    native.amx = True
    amx, stepwise = (statistics.median(times[k][2:]) for k in (True, False))
    return {
        "model": f"{model.cell} {model.layers} x {model.hidden}",
        "batch": f"{cfg.batch_size} x {cfg.seq_len}",
        "amx_step_s": amx,
        "stepwise_step_s": stepwise,
        "speedup": stepwise / amx,
    }


def product_times(reps: int = 400) -> dict:
    """One recurrent product of the tutorial's model (64 x 1024 by 1024 x 4096, bf16): microseconds each."""
    native = compiled()[0]
    h, w = torch.randn(64, 1024).bfloat16(), (torch.randn(4096, 1024) * 0.03).bfloat16()
    packed, onednn = native.amx_pack(w), cpu_lstm.packed_product(w, 64)
    ways = {"amx": lambda: native.amx_product(h, packed), "onednn_packed": lambda: onednn(h)}
    result = {}
    for name, run in ways.items():
        for _ in range(20):
            run()
        start = time.perf_counter()
        for _ in range(reps):
            run()
        result[f"{name}_us"] = (time.perf_counter() - start) / reps * 1e6
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=30, help="step pairs timed per model (default 30)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    native, why = compiled()
    if native is None or not native.amx:
        print(f"no AMX loops on this machine: {why or 'the CPU has no AMX units'}", file=sys.stderr)
        return 1
    result = {**describe_cpu(), "date": time.strftime("%Y-%m-%d"), "models": {}}  # describe_cpu names torch
    result["product"] = product_times()
    print(", ".join(f"{k} {v:.0f}" for k, v in result["product"].items()), "(one recurrent product)")
    for name, preset in MODELS.items():
        row = result["models"][name] = step_times(preset, args.pairs)
        print(
            f"{name} ({row['model']}, batch {row['batch']}): {row['stepwise_step_s'] * 1000:.1f} ms a step "
            "a step at a time, "
            f"{row['amx_step_s'] * 1000:.1f} ms with the AMX loops ({row['speedup']:.2f}x)"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
