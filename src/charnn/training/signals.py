"""Stopping cleanly: SIGINT, SIGTERM and SIGHUP (a closed terminal) become a flag the training loop checks
between steps; outside the loop (start-up, the final weight check) they stop at once."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

from charnn.errors import Stopped

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


@contextlib.contextmanager
def stop_at_once(message: Callable[[str], str]) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise `Stopped(message(name))` (a KeyboardInterrupt) where they arrive,
    so that the clean-up around the work runs and the command line prints one line saying what was kept;
    a second such signal while that clean-up runs is ignored. The loop's own handlers take over in it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    fired = False

    def handle(signum: int, frame: object) -> None:
        nonlocal fired
        if not fired:
            fired = True
            raise Stopped(message(signal.Signals(signum).name), 128 + signum)

    previous = {s: signal.signal(s, handle) for s in STOPS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
