"""Progress of long commands on stderr: a bar on a terminal, plain lines otherwise.

On a terminal the line is redrawn in place at most ten times a second: count
(of the total, when known), rate and the time left. When stderr is a file
or a pipe, a plain line every few seconds instead, which logs read well.
Either way the work ends with one summary line. ``RULEBUS_PROGRESS_EVERY``
(seconds) sets how often either is shown.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import TextIO

REDRAW = 0.1  # seconds between redraws on a terminal
PLAIN_EVERY = 2.0  # seconds between plain lines
WIDTH = 24  # characters of the bar


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Counts work done of ``total`` (None: unknown) and shows it on ``stream``."""

    def __init__(
        self, what: str, total: int | None, unit: str = "events", stream: TextIO | None = None
    ) -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty()
        self.count = 0
        self.started = time.monotonic()
        self._shown = self.started
        self._drawn = False
        self.every = REDRAW if self.tty else PLAIN_EVERY
        # Unset, or not a number: the default.
        with contextlib.suppress(KeyError, ValueError):
            self.every = float(os.environ["RULEBUS_PROGRESS_EVERY"])

    def advance(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if now - self._shown >= self.every:
            self._shown = now
            self._show(now)

    def line(self, now: float) -> str:
        """The progress as one line: count, rate and, with a total, the time left."""
        elapsed = max(now - self.started, 1e-9)
        rate = self.count / elapsed
        done = f"{self.count}/{self.total}" if self.total is not None else f"{self.count}"
        text = f"{self.what}: {done} {self.unit}, {rate:,.0f}/s"
        if self.total:
            left = max(self.total - self.count, 0)
            eta = _duration(left / rate) if rate > 0 else "?"
            text += f", {eta} left"
            if self.tty:
                filled = min(WIDTH, WIDTH * self.count // self.total)
                text = f"[{'#' * filled}{'.' * (WIDTH - filled)}] {text}"
        return text

    def _show(self, now: float) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K" + self.line(now))
            self._drawn = True
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def interrupt(self) -> None:
        """Clear the bar for a line of output of its own; the next advance draws it again."""
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False

    def message(self, text: str) -> None:
        """A line of its own, not overwritten by the bar."""
        self.interrupt()
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, summary: str) -> None:
        """Replace the bar with the one-line summary (and the time it took)."""
        took = _duration(time.monotonic() - self.started)
        self.message(f"{self.what}: {summary} in {took}")
