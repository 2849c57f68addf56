"""Stopping cleanly: SIGINT, SIGTERM and SIGHUP (a closed terminal) become a flag the training loop checks
between steps."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

# SIGHUP where the platform has it (not on Windows): closing the terminal stops a run as SIGTERM does.
STOPS = (signal.SIGINT, signal.SIGTERM, *([signal.SIGHUP] if hasattr(signal, "SIGHUP") else []))
STOP_NAMES = tuple(s.name for s in STOPS)


class StopSignals:
    """Turns SIGINT/SIGTERM/SIGHUP into a flag the loop checks between steps; a second SIGINT interrupts at
    once."""

    def __init__(self) -> None:
        self.received: int | None = None

    def _handle(self, signum: int, frame: object) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignals]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in STOPS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
