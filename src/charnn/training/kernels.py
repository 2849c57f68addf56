"""Which kernel trains a bf16 LSTM on a CPU: one whose gradients are right on this machine, then the faster.

Both candidates are checked against fp32 at the run's own sizes (nn/grad_check.py) before either is used:
oneDNN's fused bf16 LSTM backward is 20-30% off at hidden 1024 on Intel Xeons with AMX, though right on
AVX-512 bf16 CPUs without AMX. A check costs about a second at the tutorial's sizes, so its result is kept in
the cache folder per CPU, torch version and size; the timing is not (it is cheap and load-dependent).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import torch

from charnn.device import CoreWait, cpu_info
from charnn.errors import CharnnError, TrainingError
from charnn.fileio import cache_root, write_json
from charnn.nn import cpu_lstm, grad_check, native
from charnn.training import distributed
from charnn.training.distributed import Ranks

KERNEL_MARGIN = 1.05  # charnn's layer is taken only where it measured this much faster (timing noise)
BUSY_TIMING = 0.1  # the share of the timing spent waiting for a core from which the line says so
CHECKS_FILE = "gradient_checks.json"


@dataclass(frozen=True)
class Sizes:
    input_size: int
    hidden: int
    layers: int
    batch: int  # this rank's rows
    steps: int
    vocab: int = 0  # where the first layer takes ids (model.layers_get_ids): the vocabulary


def _key(kernel: str, s: Sizes) -> str:
    sizes = f"{s.input_size}-{s.hidden}x{s.layers}-b{s.batch}-t{min(s.steps, grad_check.MAX_STEPS)}"
    if s.vocab:
        sizes += f"-v{cpu_lstm.trial_vocab(s.vocab, s.batch, s.steps, grad_check.MAX_STEPS)}"
    check = f"torch {torch.__version__} | check {grad_check.VERSION}"
    return f"{cpu_info()[0]} | {check} | lstm {kernel} | {sizes}"


def gradient_error(kernel: str, s: Sizes) -> float:
    """`grad_check.gradient_error` of this LSTM kernel at these sizes, from the cache where measured."""
    path = cache_root() / CHECKS_FILE
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    key = _key(kernel, s)
    if not isinstance(known.get(key), float):
        known[key] = grad_check.gradient_error(
            "lstm", kernel, s.input_size, s.hidden, s.layers, s.batch, s.steps, s.vocab
        )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, known)
        except (OSError, CharnnError):
            pass  # an unwritable cache only means checking again next time
    return known[key]


def _failing(kernel: str, error: float) -> str:
    return (
        f"--lstm-kernel {kernel}'s bf16 gradients are {error:.0%} off fp32 on this CPU at these sizes "
        f"(over {grad_check.MAX_ERROR:.0%})"
    )


def _uncompiled(kernel: str) -> str:
    """What to add to the kernel's line where charnn's layer cannot run its compiled steps here."""
    if kernel != "charnn-bf16":
        return ""
    why = native.compiled()[1]
    return f" (its time steps run as PyTorch operations, slower: {why})" if why else ""


def settle(kept: str | None, setting: str, sizes: Sizes, ranks: Ranks) -> tuple[str, str]:
    """The kernel to train with, and a line for the user ("" if nothing to say). `kept`: the kernel a resumed
    run started with (kept unless it fails the gradient check here); `setting`: --lstm-kernel. Every rank
    takes the same: a kernel fails if it fails on any rank."""
    errors = {k: gradient_error(k, sizes) for k in grad_check.KERNELS["lstm"]}
    passes = {k: not distributed.agree(float(e > grad_check.MAX_ERROR), ranks) for k, e in errors.items()}
    chosen = kept or (setting if setting != "auto" else None)
    if chosen is not None:
        if passes[chosen]:
            return chosen, ""
        if kept is None:  # asked for by name: the user's choice, said plainly
            return chosen, f"warning: {_failing(chosen, errors[chosen])}; training with it as asked"
    good = [k for k in grad_check.KERNELS["lstm"] if passes[k]]
    if not good:
        raise TrainingError(
            f"{_failing('charnn-bf16', errors['charnn-bf16'])}, and so are PyTorch's; train with "
            "--precision fp32"
        )
    if len(good) == 1:
        reason = "; ".join(_failing(k, errors[k]) for k in errors if not passes[k])
        only = good[0]
        return only, f"bf16 LSTM on CPU: {reason}; training with --lstm-kernel {only}{_uncompiled(only)}"
    native.compiled()  # built (once a process) before the timing, whose wait for the cores is measured
    waiting = CoreWait()
    speedup = cpu_lstm.speedup_over_fused(
        sizes.input_size, sizes.hidden, sizes.layers, sizes.batch, sizes.steps, sizes.vocab
    )
    busy = waiting.take() or 0.0
    faster = distributed.agree(float(speedup >= KERNEL_MARGIN), ranks)
    kernel = "charnn-bf16" if faster else "pytorch"
    return kernel, (
        f"bf16 LSTM on CPU: charnn's layer runs at {speedup:.2f}x the speed of PyTorch's fused kernel at "
        f"these sizes (both pass the gradient check); training with --lstm-kernel {kernel}"
        f"{_uncompiled(kernel)}{_busy(busy)}"
    )


def _busy(share: float) -> str:
    """What to add to the kernel's line where other programs had the cores during its timing."""
    if share < BUSY_TIMING:
        return ""
    return (
        f"; the timing waited for a core {share:.0%} of the time (other programs are busy here, or more "
        "threads than cores), so on a quiet machine the choice may differ (--lstm-kernel sets one)"
    )
