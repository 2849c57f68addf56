"""The benchmark's measuring pieces, run for real at toy sizes (the full benchmark is not a test)."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import charnn
from charnn.bench import (
    executed_step_flops,
    format_report,
    gemm_gflops,
    generation_speed,
    lstm_step_flops,
    matvec_rate,
    peak_shares,
    train_speed,
)
from charnn.config import ModelConfig, TrainConfig
from charnn.device import cpu_kind, describe_cpu
from charnn.nn import native
from charnn.nn.model import CharRNN
from charnn.process_memory import watch_memory
from charnn.training.step import TrainStep

TOY = ModelConfig(vocab_size=65, hidden=32, embedding=16)


def test_flop_count_of_the_tutorials_step():
    forward = 2 * 64 * 100 * ((256 + 1024) * 4096 + 1024 * 65)
    assert lstm_step_flops(1024, 256, 65, 64, 100) == 3 * forward


@pytest.mark.skipif(native.compiled()[0] is None, reason="no C compiler here: charnn's layer takes no table")
@pytest.mark.skipif(cpu_kind() == "fp32", reason="this CPU has no native bf16 to train in")
def test_the_executed_count_leaves_out_what_the_input_table_saves():
    nominal = lstm_step_flops(32, 16, 10, 8, 64)
    saved = 3 * 2 * (8 * 64 - 10) * 16 * 4 * 32  # three products of the batch's chars, less the table's three
    for io_dropout, kernel, expected in [
        (0.0, "charnn-bf16", nominal - saved),
        (0.0, "pytorch", nominal),
        (0.1, "charnn-bf16", nominal),  # the inputs drop out: rows looked up
    ]:
        model = ModelConfig(vocab_size=10, hidden=32, embedding=16, io_dropout=io_dropout)
        step = TrainStep(model, TrainConfig(precision="bf16"), torch.device("cpu"))
        step.lstm_kernel = kernel
        assert executed_step_flops(step, 8, 64) == expected, (io_dropout, kernel)


def test_measurements_at_toy_size_and_the_report():
    speed = train_speed("fp32", steps=2, warmup=1, model=TOY, batch=4)
    assert speed["chars_per_s"] > 0 and speed["step_s"] > 0
    model = CharRNN(TOY).eval()
    rates = {w: generation_speed(model, w, 20) for w in ("fp32", "int8")}
    result = {
        **describe_cpu(),
        "date": "today",
        "gemm_gflops": {"fp32": gemm_gflops(torch.float32, m=64, reps=2)},
        "matvec_per_s": {w: matvec_rate(w, hidden=32, reps=5) for w in rates},
        "train": {"fp32": speed},
        "train_auto": "fp32",
        "train_fraction_of_gemm_peak": 0.5,
        "train_fraction_of_gemm_peak_executed": 0.4,
        "generate": rates,
        "generate_64": {w: generation_speed(model, w, 5, samples=64) for w in rates},
        "generate_best": "int8",
        "generate_fraction_of_matvec": 0.5,
        "first_char_s": 1.0,
        "train_peak_rss_mib": 100.0,
    }
    report = format_report(result)
    assert "train fp32:" in report and "generate batch 1, int8 weights" in report
    assert "waited for a core" not in report
    steady = {**result, "gemm_gflops_seen": {"fp32": [300.0, 450.0, 310.0]}}  # 1.5x: not named
    assert "GEMM rate ranged" not in format_report(steady)
    moved = {**result, "gemm_gflops_seen": {"fp32": [2163.0, 979.0, 1500.0]}}
    assert "fp32 GEMM rate ranged from 979 to 2163 GFLOP/s" in format_report(moved)
    assert "waited for a core 40% of the time" in format_report({**result, "cpu_wait_share": 0.4})
    assert "50% of GEMM peak (40% by the arithmetic it executes)" in report
    assert f"family/model/stepping {result['cpu_model'] or '?'};" in report


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="no /proc/cpuinfo on this system")
def test_the_cpu_is_named_by_its_model_numbers_too():
    fields = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    expected = "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))
    assert describe_cpu()["cpu_model"] == expected
    assert expected.count("/") == 2


def test_memory_watch_sees_a_childs_own_peak():
    small, _ = watch_memory([sys.executable, "-c", "import time; time.sleep(0.3)"])
    code = "\n".join(
        [
            "import time",
            "x = bytearray(300 << 20)",
            "x[::4096] = bytes(len(x[::4096]))",
            "time.sleep(0.3)",
            "print('ok')",
        ]
    )
    big, out = watch_memory([sys.executable, "-c", code])
    assert out.strip() == "ok"
    assert big["peak_rss_anon_mib"] > small["peak_rss_anon_mib"] + 250
    assert big["peak_rss_mib"] > small["peak_rss_mib"] + 250


def test_the_share_of_the_peak_is_of_the_highest_peak_seen():
    train = {p: {"gflops": 600.0, "executed_gflops": 480.0} for p in ("fp32", "bf16")}
    shares = peak_shares({"fp32": [300.0, 240.0, 310.0], "bf16": [979.0, 2000.0, 1500.0]}, train)
    assert shares["gemm_gflops"] == {"fp32": 310.0, "bf16": 2000.0}
    assert shares["train_auto"] == "bf16"
    assert shares["train_fraction_of_gemm_peak"] == pytest.approx(0.3)
    assert shares["train_fraction_of_gemm_peak_executed"] == pytest.approx(0.24)
    fp32_only = peak_shares({"fp32": [300.0]}, {"fp32": train["fp32"]})
    assert fp32_only["train_auto"] == "fp32" and fp32_only["train_fraction_of_gemm_peak"] == 2.0


@pytest.mark.parametrize("quick", ["no", 0, None])
def test_the_api_refuses_a_quick_that_is_not_true_or_false(quick):
    with pytest.raises(charnn.CharnnError, match="quick must be true or false"):
        charnn.benchmark(quick=quick)


def test_a_stopped_benchmark_takes_its_child_with_it(tmp_path):
    """SIGTERM during the peak-memory training once left that `charnn train` running on its own."""
    script = (
        "from charnn.bench import training_peak_rss_mib\n"
        "from charnn.training.signals import stop_at_once\n"
        "with stop_at_once(lambda name: f'stopped by {name}'):\n"
        "    training_peak_rss_mib(1000)\n"
    )
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    parent = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE, text=True)
    deadline, child = time.time() + 60, None
    while child is None and time.time() < deadline:
        found = subprocess.run(
            ["pgrep", "-P", str(parent.pid)], capture_output=True, text=True
        ).stdout.split()
        child = int(found[0]) if found else None
        time.sleep(0.1)
    assert child is not None, "the benchmark started no training"
    time.sleep(1)
    parent.send_signal(signal.SIGTERM)
    _, err = parent.communicate(timeout=60)
    assert parent.returncode == 1 and "Stopped: stopped by SIGTERM" in err  # no CLI here: the exception
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # killed and waited for, not left running
    assert not list(tmp_path.iterdir())  # its run folder went with it
