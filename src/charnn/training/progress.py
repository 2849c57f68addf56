"""What a training run tells its user while it runs: a progress bar with ETA and the tutorial's log lines."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import TYPE_CHECKING

from tqdm import tqdm

BUSY = 0.2  # the share of a log interval's time spent waiting for a core from which a note says so

if TYPE_CHECKING:
    from charnn.evaluation import LossReport


def _survives_its_output(method):
    """A Reporter method that goes silent instead of failing where its output cannot be written (a pipe
    whose reader left, `| head`; a full disk): a run that cannot show its progress trains on and saves."""

    @functools.wraps(method)
    def reporting(self: Reporter, *args, **kwargs):
        if self.quiet:
            return None
        try:
            return method(self, *args, **kwargs)
        except (OSError, ValueError):  # ValueError: a closed stream
            self.quiet, self._bar = True, None
            _drop_output()
            return None

    return reporting


def _drop_output() -> None:
    """Point stdout and stderr at /dev/null, so that what Python still holds for them (and flushes at exit)
    fails no more."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):  # no such stream, or not a file
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())


class Reporter:
    """A tqdm bar (steps, chars/s, ETA) on stderr with log lines printed above it; silent when quiet, or
    from the moment its output cannot be written."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._bar: tqdm | None = None
        self._busy_said = False

    @_survives_its_output
    def start(self, total: int, initial: int) -> None:
        self._bar = tqdm(
            total=total or None,
            initial=initial,
            unit="step",
            dynamic_ncols=True,
            file=sys.stderr,
            # In a log file every redraw is kept, so redraw rarely there.
            mininterval=0.1 if sys.stderr.isatty() else 30.0,
            bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]",
        )

    @_survives_its_output
    def set_total(self, total: int) -> None:
        """Change the expected number of steps (when a time budget decides it)."""
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    @_survives_its_output
    def update(self, step: int, loss: float, chars_per_s: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(f"loss {loss:.4f}, {chars_per_s:,.0f} chars/s", refresh=False)
            self._bar.update(step - self._bar.n)

    @_survives_its_output
    def line(self, text: str) -> None:
        """Print a line above the bar."""
        if self._bar is not None:
            self._bar.write(text, file=sys.stdout)
            sys.stdout.flush()
        else:
            print(text, flush=True)

    def busy_cores(self, share: float | None, steps: int) -> None:
        """Say, once, where the last `steps` spent `share` of their time waiting for a core: the speed shown
        is then not what this machine does alone."""
        if share is None or share < BUSY or self._busy_said:
            return
        self._busy_said = True
        self.line(
            f"note: over the last {steps} steps this run waited for a core {share:.0%} of the time: other "
            "programs are busy on this machine (or it runs more threads than cores), so it trains slower "
            "than it would alone"
        )

    def epoch_end(self, epoch: int, losses: list[float], val: LossReport | None, seconds: float) -> None:
        """The tutorial's end-of-epoch lines, with the validation loss."""
        mean = sum(losses) / max(len(losses), 1)
        shown = f"  val {val.nats:.4f} nats/char ({val.bits:.3f} bits)" if val else ""
        self.line(f"Epoch {epoch + 1} Loss: {mean:.4f}{shown}")
        self.line(f"Time taken for 1 epoch {seconds:.2f} sec")

    @_survives_its_output
    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
