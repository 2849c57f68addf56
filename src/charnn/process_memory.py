"""The memory a child process uses while it runs, sampled from /proc (Linux): for benchmarks."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path


def _status_kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def watch_memory(cmd: list[str], env: dict | None = None, on_line=None) -> tuple[dict, str]:
    """Run `cmd`, sampling its memory every 20 ms: peak RSS (VmHWM) and peak anonymous RSS in MiB, and stdout.

    `on_line(line, seconds)` sees each stdout line as it arrives, with the time since start.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    peaks = {"peak_rss_mib": 0.0, "peak_rss_anon_mib": 0.0}

    def sample_memory() -> None:
        while proc.poll() is None:
            peaks["peak_rss_mib"] = max(peaks["peak_rss_mib"], _status_kib(proc.pid, "VmHWM") / 1024)
            peaks["peak_rss_anon_mib"] = max(
                peaks["peak_rss_anon_mib"], _status_kib(proc.pid, "RssAnon") / 1024
            )
            time.sleep(0.02)

    sampler = threading.Thread(target=sample_memory, daemon=True)
    sampler.start()
    assert proc.stdout is not None
    lines = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if on_line:
                on_line(line, time.perf_counter() - start)
        proc.wait()
    finally:  # stopped (Ctrl-C, SIGTERM, an error): the child goes too, not on by itself
        ended(proc)
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[1:4])} failed with exit code {proc.returncode}")
    return {**peaks, "seconds": time.perf_counter() - start}, "".join(lines)


def ended(proc: subprocess.Popen) -> None:
    """`proc` ended: killed where it still runs, and waited for."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
