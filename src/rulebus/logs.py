"""Server logging: records go through a queue to a thread that writes them in batches.

Lines are text (``FORMAT``) or, with ``--log-format json``, one JSON object
each: ``time``, ``level``, ``logger``, ``message``, and the ``event_id``,
``rule``, ``action`` and ``dead_letter`` a record carries (``extra=`` at the
engine's calls).

The event loop only formats a record's message and queues it, so a slow
stderr never blocks it. The log subscriber of a notification topic writes a
line per notification, thousands a second under load, so the standard
library's QueueHandler (which copies each record) and QueueListener (which
writes and flushes each line on its own) cost too much here.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from rulebus import codec

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
BATCH = 256  # lines per write at most
FORMATS = ("text", "json")
# What a record may carry, named as in the JSON.
CONTEXT = ("event_id", "rule", "action", "dead_letter")


class _Enqueue(logging.Handler):
    def __init__(self, records: queue.SimpleQueue[logging.LogRecord | None]) -> None:
        super().__init__()
        self._records = records

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # The writer thread must not format the arguments: they may
            # change after this call returns.
            record.msg = record.getMessage()
            record.args = None
            if record.exc_info:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
                record.exc_info = None
            self._records.put(record)
        except Exception:
            self.handleError(record)


class _Formatter(logging.Formatter):
    """FORMAT, with the time text made once per second instead of once per line."""

    def __init__(self) -> None:
        super().__init__(FORMAT)
        self._second = -1
        self._text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._second = second
            self._text = time.strftime(self.default_time_format, self.converter(second))
        return f"{self._text},{int(record.msecs):03d}"


class _JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback goes in ``exc``)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        for key, value in getattr(record, "fields", {}).items():
            line[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exc"] = record.exc_text
        return codec.dumps_str(line)


class LogWriter:
    """Owns the root logger's output until ``stop``; started by :func:`log_to_stderr`."""

    def __init__(self, stream: TextIO, form: str = "text") -> None:
        self.records: queue.SimpleQueue[logging.LogRecord | None] = queue.SimpleQueue()
        self._stream = stream
        self._format: logging.Formatter = _JsonFormatter() if form == "json" else _Formatter()
        self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Write what is queued and stop; later records go straight to the stream."""
        root = logging.getLogger()
        root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Enqueue)]
        handler = logging.StreamHandler(self._stream)
        if isinstance(self._format, _JsonFormatter):
            handler.setFormatter(self._format)  # JSON lines stay JSON to the end
        root.addHandler(handler)
        self.records.put(None)
        self._thread.join()

    def _line(self, record: logging.LogRecord) -> str:
        try:
            return self._format.format(record)
        except Exception:
            # A bad record must not end the thread, or the queue would grow unread.
            return f"{record.levelname} {record.name}: (unformattable) {record.msg!r}"

    def _run(self) -> None:
        while True:
            batch = [self.records.get()]
            while len(batch) < BATCH and not self.records.empty():
                batch.append(self.records.get_nowait())
            lines = [self._line(r) for r in batch if r is not None]
            if lines:
                try:
                    self._stream.write("\n".join(lines) + "\n")
                    self._stream.flush()
                except (OSError, ValueError):
                    pass  # stderr is gone; nobody is left to tell
            if None in batch:
                return


def log_to_stderr(level: str, form: str = "text") -> LogWriter:
    """Send the root logger's records at ``level`` and above to stderr, through a queue.

    ``form``: one of ``FORMATS``.
    """
    # Log lines never show the caller's file and line, nor the thread or
    # process, so records skip finding them (the logging docs' own
    # optimisation for hot paths; getpid alone is a system call per record).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    writer = LogWriter(sys.stderr, form)
    root = logging.getLogger()
    root.handlers[:] = [_Enqueue(writer.records)]
    root.setLevel(level.upper())
    writer.start()
    return writer


class Every:
    """Lets a repeated log line through at most once per ``seconds``, counting the rest."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._next = 0.0
        self._quiet = 0

    def passes(self) -> int | None:
        """None to stay quiet; else how many were kept quiet before this one."""
        now = time.monotonic()
        if now < self._next:
            self._quiet += 1
            return None
        quiet, self._quiet, self._next = self._quiet, 0, now + self.seconds
        return quiet
