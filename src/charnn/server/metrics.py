"""What the engine has done, for /v1/stats (JSON) and /metrics (Prometheus text format)."""

from __future__ import annotations

import time
from collections import deque

RATE_WINDOW_S = 5.0  # steps/s and chars/s are averaged over this many seconds


class Counters:
    """Totals since the server started and the recent steps, kept by the engine under its lock."""

    def __init__(self) -> None:
        self.steps = 0
        self.chars = 0
        self.served = 0  # streams ended, for whatever reason
        self.refused = 0  # 503s: no room, or shutting down
        self.last_batch = 0
        self.recent: deque[tuple[float, int, int]] = deque()  # (time, rows, chars) of the window's steps

    def stepped(self, rows: int, chars: int) -> None:
        """The worker generated `chars` chars and advanced `rows` rows in one batched step (a start
        string's chars are fed by such steps too; a stream's last char needs no step)."""
        now = time.monotonic()
        self.steps += rows > 0
        self.chars += chars
        self.last_batch = rows or self.last_batch
        self.recent.append((now, rows, chars))
        while self.recent and self.recent[0][0] < now - RATE_WINDOW_S:
            self.recent.popleft()

    def snapshot(self, streams: int, rows: int, capacity: int) -> dict:
        now = time.monotonic()
        recent = [(rows, chars) for t, rows, chars in self.recent if t >= now - RATE_WINDOW_S]
        return {
            "live_streams": streams,
            "live_rows": rows,
            "capacity_streams": capacity,
            "batch_rows": self.last_batch if rows else 0,
            "steps_per_s": round(sum(rows > 0 for rows, _ in recent) / RATE_WINDOW_S, 1),
            "chars_per_s": round(sum(chars for _, chars in recent) / RATE_WINDOW_S, 1),
            "steps_total": self.steps,
            "chars_total": self.chars,
            "served_total": self.served,
            "refused_total": self.refused,
        }


# name in the snapshot -> (Prometheus type, help)
_EXPOSED = {
    "live_streams": ("gauge", "Requests generating now"),
    "live_rows": ("gauge", "Samples generating now (a request may ask for several)"),
    "capacity_streams": ("gauge", "Most requests generating at once (--max-streams)"),
    "batch_rows": ("gauge", "Rows advanced by the latest step"),
    "steps_per_s": ("gauge", f"Batched steps per second over the last {RATE_WINDOW_S:g} s"),
    "chars_per_s": ("gauge", f"Characters generated per second over the last {RATE_WINDOW_S:g} s"),
    "steps_total": ("counter", "Batched steps since the server started"),
    "chars_total": ("counter", "Characters generated since the server started"),
    "served_total": ("counter", "Requests ended (finished, cancelled, timed out or dropped)"),
    "refused_total": ("counter", "Requests refused with 503"),
}


def prometheus(snapshot: dict) -> str:
    """The snapshot in Prometheus' text exposition format (version 0.0.4)."""
    lines = []
    for key, (kind, help_text) in _EXPOSED.items():
        name = f"charnn_{key}"
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", f"{name} {snapshot[key]}"]
    return "\n".join(lines) + "\n"
