"""Which device and number format to compute in, detected from the hardware rather than assumed."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
from pathlib import Path

import torch

from charnn.errors import ConfigError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# glibc's mallopt parameters (malloc.h), and the largest block it lets the heap serve on a 64-bit machine
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_HEAP_BLOCKS_UP_TO = 32 * 1024 * 1024


@functools.cache
def _cpuinfo_fields() -> dict[str, str] | None:
    """Each field of /proc/cpuinfo as it first appears (the first CPU's), or None where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


@functools.cache
def cpu_info() -> tuple[str, frozenset[str]]:
    """The CPU's model name and its feature flags (empty where /proc/cpuinfo does not exist)."""
    name, fields = platform.processor() or platform.machine(), _cpuinfo_fields()
    if fields is None:
        return name, frozenset()
    flags = fields.get("flags") or fields.get("Features") or ""
    return fields.get("model name") or name, frozenset(flags.split())


def cpu_kind() -> str:
    """`amx` (bf16 matrix units), `avx512_bf16` (native bf16 vector math) or `fp32` (no native bf16)."""
    flags = cpu_info()[1]
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    return "fp32"


def cpu_model() -> str:
    """The CPU's family, model and stepping numbers as /proc/cpuinfo gives them, e.g. "6/207/2" (an Intel
    Xeon of one generation: the model name alone may not say which); "?" for each it lacks (ARM's
    /proc/cpuinfo has other fields), "" without /proc/cpuinfo."""
    fields = _cpuinfo_fields()
    if fields is None:
        return ""
    return "/".join(fields.get(k, "?") for k in ("cpu family", "model", "stepping"))


def describe_cpu() -> dict:
    """The facts a benchmark result needs to name its CPU."""
    name, flags = cpu_info()
    return {
        "cpu": name,
        "cpu_model": cpu_model(),
        "cpu_kind": cpu_kind(),
        "flags": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}),
        "capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def cpu_times_s() -> tuple[float, float] | None:
    """Seconds this process's threads now alive have spent on a core, and ready to run but waiting for one
    (taken by other programs, or by more threads than the cores it may use), from Linux's
    /proc/self/task/*/schedstat; None where the system does not keep them."""
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return None
    ran = waited = 0
    for task in tasks:
        try:
            on_core, waiting = (task / "schedstat").read_text().split()[:2]
        except FileNotFoundError:
            continue  # a thread that has ended since
        except (OSError, ValueError):
            return None
        ran, waited = ran + int(on_core), waited + int(waiting)
    return (ran / 1e9, waited / 1e9) if ran else None


class CoreWait:
    """The share of the time this process's threads had work that they spent waiting for a core, since the
    last `take`: about 0 with nothing else running, 0.5 where another program as busy as it shares its
    cores. None where the system does not say."""

    def __init__(self) -> None:
        self._since = cpu_times_s()

    def take(self) -> float | None:
        before, now = self._since, cpu_times_s()
        self._since = now
        if before is None or now is None:
            return None
        ran, waited = now[0] - before[0], now[1] - before[1]
        return waited / (ran + waited) if ran + waited > 0 else None


def memory_bytes() -> int | None:
    """Physical memory of this machine, where the OS says."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


@functools.cache
def keep_freed_memory() -> bool:
    """Have glibc keep the memory a training step frees for the next step, instead of handing it back to the
    kernel: each step of a `cpu-10m`-sized model frees ~100 MB of blocks at the top of the heap, which glibc
    trims, so the next step meets them again as ~25,000 fresh pages, each faulted in and zeroed (a step took
    1.07x as long on an Intel Xeon with AMX). Blocks up to 32 MiB then come from the heap and stay there,
    so the process holds on to its peak working set until it ends. For the whole process, once; True where
    it took (glibc), False elsewhere (nothing changes)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # Setting either turns off glibc's own adjustment of both, so set both.
    heap_blocks = mallopt(_M_MMAP_THRESHOLD, _HEAP_BLOCKS_UP_TO)
    return bool(heap_blocks and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


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
