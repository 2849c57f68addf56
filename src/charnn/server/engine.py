"""The generation engine: one worker thread advancing every live stream with one batched step per char.

Requests join between steps (their start string is fed by the same batched steps), and finished,
cancelled, timed-out and stalled streams leave at once. With nothing to advance the worker waits on a
condition: an idle server uses no CPU.

Same text alone or in a crowd: a row's numbers must not depend on the rows beside it. Matrix products of
different batch sizes round differently on CPUs (the library picks other kernels and blockings), so the
engine only ever steps blocks of exactly BLOCK rows, padding the last one, with one weight format for the
server's life; within a block of fixed shape each row's result depends on that row alone (checked by
tests/server/test_engine.py). Each stream samples with its own settings and generator (sampling.pick_rows).
"""

from __future__ import annotations

import os
import threading
import time

import torch

from charnn.config import STREAMS_PER_CORE, ServeConfig
from charnn.errors import ConfigError
from charnn.nn.stepper import StepModel
from charnn.sampling import check_finite, draw_noise, pick_rows, start_ids
from charnn.server.metrics import Counters
from charnn.server.streams import Busy, Stream, Wakeups
from charnn.store.model_dir import LoadedModel

BLOCK = 64  # rows per batched step: one shape for every step


def capacity(limits: ServeConfig) -> int:
    """Requests generating at once: --max-streams, else the older flags' sum, else so many per core."""
    older = (limits.max_running, limits.max_waiting)
    if limits.max_streams is not None:
        if older != (None, None):
            raise ConfigError(
                "--max-streams replaces --max-running and --max-waiting; give only --max-streams"
            )
        return limits.max_streams
    if older != (None, None):  # the first version's defaults were 2 running and 8 waiting
        return (limits.max_running or 2) + (8 if limits.max_waiting is None else limits.max_waiting)
    return STREAMS_PER_CORE * (os.cpu_count() or 1)


class Engine:
    """Streams in, chars out: `submit` on the event loop, `take` what was generated, `cancel` when gone."""

    def __init__(self, loaded: LoadedModel, weights: str, limits: ServeConfig):
        self.loaded, self.capacity = loaded, capacity(limits)
        self.stall_timeout, self.buffer = limits.stall_timeout, limits.stream_buffer
        self.model = loaded.model.eval()
        self.weights, self.stepper = weights, StepModel(self.model, weights)
        self.states: list = []  # one state per block of BLOCK rows, added as streams need them
        rows, vocab = -(-self.capacity * limits.max_samples // BLOCK) * BLOCK, len(loaded.vocab)
        self.logits = torch.zeros(rows, vocab)
        self.ids = torch.zeros(rows, dtype=torch.long)
        # Each row's sampling settings, written when its stream joins.
        self.temperature = torch.ones(rows)
        self.top_k = torch.full((rows,), vocab, dtype=torch.long)
        self.top_p = torch.full((rows,), 2.0)
        self.greedy = torch.zeros(rows, dtype=torch.bool)
        self.free: list[int] = []  # free rows of the blocks so far, lowest last: rows pack into blocks
        self.live: list[Stream] = []  # joined, in order of arrival
        self.joining: list[Stream] = []
        self.closing: str | None = None
        self.counters = Counters()
        self.wakeups = Wakeups()
        self.cv = threading.Condition()
        self.worker = threading.Thread(target=self._run, name="charnn-engine", daemon=True)
        self.worker.start()

    # --- the event loop's side ---

    def submit(self, stream: Stream) -> None:
        """Take `stream` in, or raise Busy when its samples do not fit or the server is shutting down."""
        with self.cv:
            if self.closing:
                self.counters.refused += 1
                raise Busy("the server is shutting down")
            if len(self.live) + len(self.joining) >= self.capacity:
                self.counters.refused += 1
                raise Busy("the server is busy; try again in a moment")
            while len(self.free) < stream.samples:  # a new block: the worker only reads the list
                self.free[:0] = range((len(self.states) + 1) * BLOCK - 1, len(self.states) * BLOCK - 1, -1)
                self.states.append(self.stepper.init_state(BLOCK))
            stream.rows = [self.free.pop() for _ in range(stream.samples)]
            if stream.remaining == 0:
                self._finish(stream, "length")
            else:
                self.joining.append(stream)
                self.cv.notify()

    def take(self, stream: Stream) -> tuple[list[list[str]], str | None]:
        """The steps generated since the last take, and why the stream ended once all are taken."""
        with self.cv:
            steps, stream.buffer = stream.buffer, []
            if stream.paused_since is not None and stream.reason is None:
                stream.paused_since = None
                self.cv.notify()
            return steps, stream.reason

    def cancel(self, stream: Stream) -> None:
        """The client went away: free its rows at the next step (nothing if it had ended)."""
        with self.cv:
            if stream.reason is None:
                stream.cancelled = True
                self.cv.notify()

    def shutdown(self, reason: str = "server shutting down") -> None:
        """End every stream with `reason` and refuse new ones; the worker stops."""
        with self.cv:
            self.closing = reason
            for s in [*self.live, *self.joining]:
                self._finish(s, reason)
            self.cv.notify()

    def snapshot(self) -> dict:
        with self.cv:
            streams = len(self.live) + len(self.joining)
            rows = sum(s.samples for s in [*self.live, *self.joining])
            return self.counters.snapshot(streams, rows, self.capacity)

    # --- the worker's side ---

    def _run(self) -> None:
        while True:
            with self.cv:
                while not self._ready():
                    self.cv.wait(self._next_deadline())
                if self.closing and not self.live and not self.joining:
                    return
                # they stay in `joining` until joined: counted against the capacity, ended by a shutdown
                joining = list(self.joining)
            for s in joining:
                try:
                    self._join(s)
                except Exception as e:  # of this stream's own settings: it ends alone, with the reason
                    with self.cv:
                        self._finish(s, f"error: {e}")
            try:
                self._advance()
            except Exception as e:  # one step of all: surfaced to every client, never a stream left hanging
                with self.cv:
                    for s in [*self.live, *self.joining]:
                        self._finish(s, f"error: {e}")

    def _ready(self) -> bool:
        """Something to do: a join, a stream to advance or to end, or shutting down."""
        if self.closing or self.joining:
            return True
        now = time.monotonic()
        return any(s.paused_since is None or self._overdue(s, now) for s in self.live)

    def _overdue(self, s: Stream, now: float) -> bool:
        stalled = s.paused_since is not None and now - s.paused_since > self.stall_timeout
        return s.cancelled or now > s.deadline or stalled

    def _next_deadline(self) -> float | None:
        """Seconds until a paused stream's stall or time limit runs out (None: wait for a notify)."""
        ends = [min(s.deadline, s.paused_since + self.stall_timeout) for s in self.live if s.paused_since]
        return max(0.0, min(ends) - time.monotonic()) + 0.01 if ends else None

    def _join(self, s: Stream) -> None:
        """Give the stream's rows a fresh state and its settings; its start string is fed by the steps."""
        s.feed = start_ids(self.loaded.vocab, s.start)
        cfg = s.cfg
        for row in s.rows:
            block, r = divmod(row, BLOCK)
            for held in self.states[block]:
                held[:, r] = 0.0
            self.temperature[row] = 1 if cfg.greedy else cfg.temperature  # greedy ignores it
            self.top_k[row] = min(cfg.top_k or self.logits.shape[1], self.logits.shape[1])  # fits a long
            self.top_p[row] = cfg.top_p if cfg.top_p is not None and cfg.top_p < 1 else 2.0
            self.greedy[row] = cfg.greedy
        with self.cv:
            if s.reason is None:  # else ended (cancelled, shut down) while joining, and already removed
                self.joining.remove(s)
                self.live.append(s)

    def _advance(self) -> None:
        """One step: drop what ended, pick a char for every stream not paused, then step their rows."""
        with self.cv:
            now = time.monotonic()
            for s in [s for s in self.live if self._overdue(s, now)]:
                # overdue: the client went away (None: no one to tell), or out of time, or stalled
                why = None if s.cancelled else "time limit" if now > s.deadline else "stalled"
                self._finish(s, why)
            active = [s for s in self.live if s.paused_since is None]
        if not active:
            return
        sampling = [s for s in active if not s.feed]
        emitted = self._sample(sampling, now) if sampling else 0
        for s in active:
            if s.feed:  # the start string goes through the same steps, one char each, batched with the rest
                self.ids[s.rows] = s.feed.pop(0)
        self._step(active, emitted)

    def _sample(self, sampling: list[Stream], now: float) -> int:
        """Pick each stream's next chars from its rows' logits and hand them to the stream (returns how
        many were handed)."""
        rows = torch.tensor([r for s in sampling for r in s.rows])
        logits = self.logits[rows]
        check_finite(logits)  # raised: every stream ends with it as the reason (see _run)
        vocab = logits.shape[1]
        noise = torch.cat([draw_noise(s.generator, s.samples, vocab) for s in sampling])
        picked = pick_rows(
            logits,
            self.temperature[rows],
            self.top_k[rows],
            self.top_p[rows],
            self.greedy[rows],
            noise,
        )
        self.ids[rows] = picked
        return self._emit(sampling, picked.tolist(), now)

    def _emit(self, active: list[Stream], ids: list[int], now: float) -> int:
        """Hand each stream its chars (those of streams ended meanwhile are dropped); returns how many."""
        chars, at, emitted = self.loaded.vocab.chars, 0, 0
        with self.cv:
            for s in active:
                if s.reason is None:
                    s.buffer.append([chars[i] for i in ids[at : at + s.samples]])
                    emitted += s.samples
                    s.remaining -= 1
                    if s.remaining == 0:
                        self._finish(s, "length")
                    elif len(s.buffer) >= self.buffer:
                        s.paused_since = now
                at += s.samples
        self.wakeups.add(active)
        return emitted

    def _step(self, active: list[Stream], emitted: int) -> None:
        """Advance the blocks holding the rows just picked or fed; every other row in them keeps its state
        (a stream paused by the char just picked still reads that char: its client has it). Counted with
        the `emitted` chars picked before it."""
        with self.cv:
            moving = {r for s in active if s.reason is None for r in s.rows}
            self.counters.stepped(len(moving), emitted)
            # free rows need nothing kept: a stream that takes one starts it from zero (_join)
            held = {r for s in self.live for r in s.rows} - moving
        for block in sorted({r // BLOCK for r in moving}):
            lo, hi = block * BLOCK, (block + 1) * BLOCK
            logits, state = self.stepper.step(self.ids[lo:hi], self.states[block])
            keep = sorted(r - lo for r in held if lo <= r < hi)
            if keep:
                for new, old in zip(state, self.states[block], strict=True):
                    new[:, keep] = old[:, keep]
                logits[keep] = self.logits[lo:hi][keep]
            self.states[block] = state
            self.logits[lo:hi] = logits

    def _finish(self, s: Stream, reason: str | None) -> None:
        """End `s` (holding the lock): free its rows and tell its client why (None: it went away)."""
        if s.reason is not None:
            return
        s.reason = reason or "cancelled"
        if s in self.live:
            self.live.remove(s)
        if s in self.joining:
            self.joining.remove(s)
        self.free.extend(reversed(s.rows))
        self.free.sort(reverse=True)
        self.counters.served += 1
        self.wakeups.add([s])  # also when it went away: a handler not streaming waits on its event
