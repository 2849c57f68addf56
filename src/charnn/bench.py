"""`charnn bench`: how fast charnn trains and generates on this machine, and this machine's limits.

Everything is measured with the tutorial's model (LSTM 1024, embedding 256, 65 symbols, batch 64 x 100) on
the built-in tiny Shakespeare. benchmarks/run.py runs the naive PyTorch port beside this and adds ratios.
"""

from __future__ import annotations

import datetime
import functools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from charnn.config import ModelConfig, SamplingConfig, TrainConfig
from charnn.device import PRECISIONS as DTYPES
from charnn.device import CoreWait, cpu_kind, describe_cpu
from charnn.errors import ConfigError
from charnn.evaluation import loss_carried
from charnn.nn import cpu_lstm
from charnn.nn.model import CharRNN, layers_get_ids
from charnn.nn.native import compiled
from charnn.nn.stepper import StepModel
from charnn.process_memory import ended, watch_memory
from charnn.sampling import sample
from charnn.store.model_dir import save_model
from charnn.text.batches import WindowBatches
from charnn.text.corpus import Corpus, load_corpus, split
from charnn.training.kernels import BUSY_TIMING
from charnn.training.signals import stop_at_once
from charnn.training.step import TrainStep

SEED = ModelConfig(vocab_size=65)
BATCH, SEQ = 64, 100
PRECISIONS = ("fp32", "bf16") if cpu_kind() != "fp32" else ("fp32",)
PEAK_MOVED = 1.5  # a GEMM peak that moved by this factor within a run is named in the report


def lstm_step_flops(hidden: int, embedding: int, vocab: int, batch: int, seq: int) -> float:
    """Floating-point operations of one training step of a one-layer model (forward + backward ~ 3 x
    forward)."""
    forward = 2 * batch * seq * ((embedding + hidden) * 4 * hidden + hidden * vocab)
    return 3.0 * forward


def executed_step_flops(step: TrainStep, batch: int, seq: int) -> float:
    """`lstm_step_flops` (one layer) less what the input table saves where this step's LSTM layer takes
    one: its three products the size of the batch's characters (the input part, and the gradients of the
    input and of w_ih) become three the size of the vocabulary (nn/cpu_lstm.py, LSTMLayer)."""
    m = step.model.config
    flops = lstm_step_flops(m.hidden, m.embedding, m.vocab_size, batch, seq)
    compiled_layer = step.lstm_kernel == "charnn-bf16" and step.cast is not None and compiled()[0] is not None
    takes_ids = layers_get_ids(m, training=True)
    table = compiled_layer and takes_ids and cpu_lstm.takes_table(m.vocab_size, batch * seq)
    if m.cell != "lstm" or not table:
        return flops
    return flops - 3 * 2 * (batch * seq - m.vocab_size) * m.embedding * 4 * m.hidden


def gemm_gflops(dtype: torch.dtype, m: int = 2048, reps: int = 8) -> float:
    """Peak matrix-multiply rate of this machine for square matrices of size m: the fastest of `reps` single
    products, for the faster of torch's default BLAS and oneDNN (which the recurrent kernels use; on some
    CPUs it is twice as fast in fp32)."""
    a, b = torch.randn(m, m).to(dtype), torch.randn(m, m).to(dtype)
    products = [lambda: a @ b]
    if torch.backends.mkldnn.is_available():
        a_dnn, b_dnn = a.to_mkldnn(), b.to_mkldnn()
        products.append(lambda: torch._C._nn.mkldnn_linear(a_dnn, b_dnn, None))
    fastest = float("inf")
    for product in products:
        for _ in range(2):
            product()
        for _ in range(reps):
            start = time.perf_counter()
            product()
            fastest = min(fastest, time.perf_counter() - start)
    return 2 * m**3 / fastest / 1e9


def matvec_rate(weights: str, hidden: int = 1024, reps: int = 2000) -> float:
    """Products per second of the 4H x H recurrent matrix with one vector, in a weight format."""
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(vocab_size=65, hidden=hidden, embedding=16))
    matmul = StepModel(model, weights).recurrent_mm[0]  # the product generation runs
    x = torch.randn(1, hidden)
    for _ in range(50):
        matmul(x)
    start = time.perf_counter()
    for _ in range(reps):
        matmul(x)
    return reps / (time.perf_counter() - start)


@functools.cache
def _shakespeare() -> Corpus:
    """The built-in corpus, read once for all the measurements."""
    return load_corpus("shakespeare")


def _training(
    precision: str, model: ModelConfig = SEED, batch: int = BATCH
) -> tuple[TrainStep, WindowBatches, np.ndarray]:
    """A TrainStep of the tutorial's settings (LSTM kernel chosen as `charnn train` does), its batches and
    the validation ids."""
    cfg = TrainConfig(precision=precision, batch_size=batch, seq_len=SEQ)
    step = TrainStep(model, cfg, torch.device("cpu"))
    step.choose_lstm_kernel(cfg.lstm_kernel, SEQ)
    train_ids, val_ids = split(_shakespeare().ids, cfg.val_fraction)
    return step, WindowBatches(train_ids, SEQ, batch, cfg.seed), val_ids


def train_speed(
    precision: str, steps: int, warmup: int = 2, model: ModelConfig = SEED, batch: int = BATCH
) -> dict:
    """Median seconds per training step (after warm-up) and the chars per second that gives."""
    step, batches, _ = _training(precision, model, batch)
    times = []
    for i in range(warmup + steps):
        x, y = batches.batch(0, i % batches.steps_per_epoch)
        start = time.perf_counter()
        step(x, y, step.cfg.lr)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times[warmup:])
    flops = lstm_step_flops(model.hidden, model.embedding, model.vocab_size, batch, SEQ)
    return {
        "step_s": step_s,
        "chars_per_s": batch * SEQ / step_s,
        "gflops": flops / step_s / 1e9,
        "executed_gflops": executed_step_flops(step, batch, SEQ) / step_s / 1e9,
        "kernel": step.lstm_kernel,
    }


def bf16_learns_like_fp32(steps: int) -> dict:
    """Validation loss after the same `steps` steps from the same start in fp32 and in bf16."""
    losses = {}
    for precision in PRECISIONS:
        step, batches, val_ids = _training(precision)
        for i in range(steps):
            step(*batches.batch(0, i), step.cfg.lr)
        losses[precision] = loss_carried(step.model, val_ids).nats
    if "bf16" in losses:
        losses["relative_difference"] = abs(losses["bf16"] - losses["fp32"]) / losses["fp32"]
    return {"steps": steps, **losses}


def generation_speed(model: CharRNN, weights: str, length: int, samples: int = 1) -> float:
    """Characters per second (all samples together) generating `length` chars at temperature 1."""
    vocab = _shakespeare().vocab
    cfg = SamplingConfig(start="ROMEO: ", length=length, num_samples=samples, seed=0)
    chars = sample(model, vocab, cfg, weights)
    next(chars)  # the start string and the first pick: not part of the steady rate
    start = time.perf_counter()
    count = sum(1 for _ in chars)
    return count * samples / (time.perf_counter() - start)


def first_char_seconds(model_dir: Path) -> float:
    """From starting `charnn generate` to its first generated character on stdout."""
    cmd = [sys.executable, "-m", "charnn", "generate", str(model_dir), "--length", "50", "--start", "A"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        got = proc.stdout.read(2)  # the start string, then the first generated char
        elapsed = time.perf_counter() - start
        proc.wait()
    finally:
        ended(proc)
    if len(got) < 2 or proc.returncode:
        raise RuntimeError(f"charnn generate failed with exit code {proc.returncode}: no first char to time")
    return elapsed


def training_peak_rss_mib(steps: int) -> float:
    """Peak resident memory of a real `charnn train` of the tutorial's model."""
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "run")
        cmd = [sys.executable, "-m", "charnn", "train", "--out", out, "--max-steps", str(steps)]
        return watch_memory(cmd)[0]["peak_rss_mib"]


def scaling_table(steps: int) -> list[dict]:
    """Step time and achieved GFLOP/s against hidden size and batch size, per precision."""
    rows = []
    for precision in PRECISIONS:
        for hidden in (256, 512, 1024, 2048):
            for batch in (16, 64, 256):
                model = ModelConfig(vocab_size=65, hidden=hidden)
                speed = train_speed(precision, steps, warmup=1, model=model, batch=batch)
                rows.append({"precision": precision, "hidden": hidden, "batch": batch, **speed})
    return rows


def run(quick: bool = False, log=print) -> dict:
    """The whole charnn half of the benchmark, as one JSON-ready dict."""
    if type(quick) is not bool:  # "no" would be taken as true
        raise ConfigError(f"quick must be true or false, got {quick!r}")
    torch.manual_seed(0)
    waiting = CoreWait()  # other programs on these cores would make every figure below too low
    result: dict = {"date": datetime.date.today().isoformat(), **describe_cpu(), "quick": quick}
    log("machine limits ...")
    # The peak is measured at the start, after the training figures and at the end, and the highest kept:
    # where other machines share this CPU, its matrix units may run at a fraction of their speed for minutes,
    # and a peak measured then would flatter the share of it.
    peaks: dict[str, list[float]] = {p: [] for p in PRECISIONS}

    def measure_peaks() -> None:
        for p in PRECISIONS:
            peaks[p].append(round(gemm_gflops(DTYPES[p]), 1))

    measure_peaks()
    formats = ("fp32", "int8", "bf16") if cpu_kind() != "fp32" else ("fp32", "int8")
    result["matvec_per_s"] = {w: matvec_rate(w, reps=500 if quick else 2000) for w in formats}
    log("training speed ...")
    result["train"] = {p: train_speed(p, steps=3 if quick else 10) for p in PRECISIONS}
    measure_peaks()
    log("generation speed ...")
    model = CharRNN(SEED).eval()
    length = 200 if quick else 500
    result["generate"] = {w: generation_speed(model, w, length) for w in formats}
    result["generate_64"] = {w: generation_speed(model, w, length // 5, samples=64) for w in formats}
    best = max(result["generate"], key=result["generate"].get)
    result["generate_best"] = best
    result["generate_fraction_of_matvec"] = result["generate"][best] / result["matvec_per_s"][best]
    with tempfile.TemporaryDirectory() as tmp:
        save_model(Path(tmp) / "model", model, _shakespeare().vocab, {})
        result["first_char_s"] = min(
            first_char_seconds(Path(tmp) / "model") for _ in range(2 if quick else 3)
        )
    log("peak memory of a training run ...")
    result["train_peak_rss_mib"] = training_peak_rss_mib(steps=3 if quick else 10)
    if not quick:
        log("bf16 against fp32 after 150 steps ...")
        result["bf16_vs_fp32"] = bf16_learns_like_fp32(steps=150)
        log("scaling table ...")
        result["scaling"] = scaling_table(steps=2)
    measure_peaks()
    result.update(peak_shares(peaks, result["train"]))
    result["cpu_wait_share"] = waiting.take()
    return result


def peak_shares(peaks: dict[str, list[float]], train: dict[str, dict]) -> dict:
    """The GEMM peaks (the highest of those seen in the run, per precision) and the training speed of the
    precision `auto` trains in, as a share of its peak: by the model's arithmetic and by that executed."""
    best = {p: max(seen) for p, seen in peaks.items()}
    auto = "bf16" if "bf16" in best else "fp32"
    return {
        "gemm_gflops_seen": peaks,
        "gemm_gflops": best,
        "train_auto": auto,
        "train_fraction_of_gemm_peak": train[auto]["gflops"] / best[auto],
        "train_fraction_of_gemm_peak_executed": train[auto]["executed_gflops"] / best[auto],
    }


def format_report(result: dict) -> str:
    """A readable table of the charnn half."""
    lines = [
        f"{result['cpu']} (family/model/stepping {result.get('cpu_model') or '?'}; {result['cpu_kind']}; "
        f"{', '.join(result['flags'])}), {result['threads']} threads, "
        f"torch {result['torch']}, {result['date']}",
        "GEMM GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in result["gemm_gflops"].items()),
        "4096x1024 matrix-vector per s: "
        + ", ".join(f"{k} {v:,.0f}" for k, v in result["matvec_per_s"].items()),
    ]
    busy = result.get("cpu_wait_share")
    if busy is not None and busy >= BUSY_TIMING:
        lines.insert(1, f"note: the benchmark waited for a core {busy:.0%} of the time it had work: other "
                     "programs were busy on these cores, and every figure below is low")  # fmt: skip
    for p, seen in result.get("gemm_gflops_seen", {}).items():
        if max(seen) > PEAK_MOVED * min(seen):
            lines.append(
                f"note: the {p} GEMM rate ranged from {min(seen):.0f} to {max(seen):.0f} GFLOP/s in this run "
                "(others share these cores' units); the share of the peak below is of the highest"
            )
    for p, t in result["train"].items():
        lines.append(
            f"train {p}: {t['chars_per_s']:,.0f} chars/s ({t['step_s'] * 1000:.0f} ms/step, "
            f"{t['gflops']:.0f} GFLOP/s, {t['kernel']} LSTM kernel)"
        )
    share = result["train_fraction_of_gemm_peak"]
    executed = result.get("train_fraction_of_gemm_peak_executed")
    by_executed = f" ({executed:.0%} by the arithmetic it executes)" if executed and executed < share else ""
    lines.append(f"train auto ({result['train_auto']}): {share:.0%} of GEMM peak{by_executed}")
    for w, rate in result["generate"].items():
        lines.append(
            f"generate batch 1, {w} weights: {rate:,.0f} chars/s; "
            f"64 samples: {result['generate_64'][w]:,.0f} chars/s"
        )
    lines.append(
        f"generate batch 1 ({result['generate_best']}): {result['generate_fraction_of_matvec']:.0%} "
        "of the matrix-vector limit"
    )
    lines.append(f"start to first char: {result['first_char_s']:.2f} s")
    lines.append(f"peak RSS training the tutorial's model: {result['train_peak_rss_mib']:.0f} MiB")
    if "bf16_vs_fp32" in result:
        q = result["bf16_vs_fp32"]
        lines.append(
            f"val loss after {q['steps']} steps: "
            + ", ".join(f"{k} {v:.4f}" for k, v in q.items() if k in PRECISIONS)
        )
    for row in result.get("scaling", []):
        lines.append(
            f"  {row['precision']:>4} hidden {row['hidden']:>4} batch {row['batch']:>3}: "
            f"{row['step_s'] * 1000:8.0f} ms/step {row['gflops']:6.0f} GFLOP/s  {row['kernel']}"
        )
    return "\n".join(lines)


def main(quick: bool, as_json: bool) -> int:
    cut = "the benchmark was cut short, and reports nothing"
    with stop_at_once(lambda name: f"stopped by {name}; {cut}"):  # its children end with it (watch_memory)
        result = run(quick, log=lambda msg: print(msg, file=sys.stderr))
    print(json.dumps(result, indent=2) if as_json else format_report(result))
    return 0


if __name__ == "__main__":
    sys.exit(main("--quick" in sys.argv, "--json" in sys.argv))
