"""One request's generation inside the engine: its rows, settings, generator, output buffer and fate.

The engine's worker thread fills a stream's buffer; the event loop drains it. Both sides hold the engine's
lock while touching a stream; the worker wakes the loop at most once per step (see Wakeups).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time

from charnn.config import SamplingConfig
from charnn.sampling import seeded


class Busy(Exception):
    """No room for another stream (or the server is shutting down); the message says which."""


class Stream:
    """A request's samples: `rows` slots of the engine, advanced one char per step until done."""

    def __init__(self, cfg: SamplingConfig, start: str, timeout: float):
        self.cfg, self.start = cfg, start
        self.rows: list[int] = []  # the engine's slots, one per sample
        self.feed: list[int] = []  # ids of the start string still to be fed
        self.remaining = cfg.length
        self.deadline = time.monotonic() + timeout
        # greedy draws no random numbers, as sampling.pick
        self.generator = None if cfg.greedy else seeded(cfg.seed)
        self.buffer: list[list[str]] = []  # steps generated and not yet taken by the client
        self.paused_since: float | None = None  # the buffer is full: not advanced until drained
        self.reason: str | None = None  # why it ended, once it has
        self.cancelled = False  # the client went away
        self.event = asyncio.Event()  # set on the event loop when there is something to take

    @property
    def samples(self) -> int:
        return self.cfg.num_samples


class Wakeups:
    """Hands streams with news from the worker thread to the event loop, at most every FLUSH_S.

    Each wake-up of a stream costs the event loop a write however many chars it carries; batching them
    keeps the HTTP side's cost per char low under load, at a latency no reader sees."""

    FLUSH_S = 0.02

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: set[Stream] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending = False
        self._last = 0.0  # when the loop last delivered (the loop's clock)

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def add(self, streams: list[Stream]) -> None:
        """From the worker thread: these streams have news."""
        if not streams or self._loop is None:
            return
        with self._lock:
            self._streams.update(streams)
            if self._pending:
                return
            self._pending = True
        with contextlib.suppress(RuntimeError):  # the loop is closed: the server has stopped
            self._loop.call_soon_threadsafe(self._schedule)

    def _schedule(self) -> None:
        assert self._loop is not None
        self._loop.call_later(max(0.0, self._last + self.FLUSH_S - self._loop.time()), self._deliver)

    def _deliver(self) -> None:
        assert self._loop is not None
        self._last = self._loop.time()
        with self._lock:
            streams, self._streams, self._pending = self._streams, set(), False
        for s in streams:
            s.event.set()
