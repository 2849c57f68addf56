"""Which device and number format to compute in, detected from the hardware rather than assumed."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

import torch

from charnn.errors import ConfigError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@functools.cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and its feature flags (empty where /proc/cpuinfo does not exist)."""
    name, flags = platform.processor() or platform.machine(), frozenset()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return name, flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name in ("", platform.machine(), platform.processor()):
            name = value.strip()
        elif key.strip() in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return name, flags


def cpu_kind() -> str:
    """`amx` (bf16 matrix units), `avx512_bf16` (native bf16 vector math) or `fp32` (no native bf16)."""
    flags = cpu_info()[1]
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return "fp32"


def describe_cpu() -> dict:
    """The facts a benchmark result needs to name its CPU."""
    name, flags = cpu_info()
    return {
        "cpu": name,
        "cpu_kind": cpu_kind(),
        "flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def memory_bytes() -> int | None:
    """Physical memory of this machine, where the OS says."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is CUDA when a GPU is visible, else the CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "--device cuda: no CUDA GPU is visible to this torch build "
            f"({torch.__version__}); install a CUDA build of torch or use --device cpu"
        )
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The compute dtype: `auto` picks bf16 where the hardware runs it natively, else fp32."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_kind() != "fp32" else torch.float32
    if name not in PRECISIONS:
        raise ConfigError(f"--precision must be auto, fp32, bf16 or fp16, got {name!r}")
    dtype = PRECISIONS[name]
    if device.type == "cpu" and dtype == torch.float16:
        raise ConfigError("--precision fp16 is for CUDA; on a CPU use bf16 (where native) or fp32")
    if device.type == "cpu" and dtype == torch.bfloat16 and cpu_kind() == "fp32":
        raise ConfigError(
            "--precision bf16: this CPU has no native bf16 (no avx512_bf16 or amx_bf16), where bf16 is "
            "many times slower than fp32; use --precision fp32"
        )
    return dtype
