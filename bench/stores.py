"""Read what a pipeline has produced, from outside it, without disturbing it.

Both pipelines leave the same evidence: rows in an SQLite table and one file per
fraud alert in a directory; the receiver counts the notifications.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.request
from pathlib import Path


class TableCounter:
    """Counts the rows of one table of an SQLite file that another process writes.

    The connection is read-only and in autocommit mode, so it holds no read snapshot
    between polls and never keeps the writer from checkpointing.
    """

    def __init__(self, path: Path, table: str) -> None:
        self.path = path
        self.table = table
        self._conn: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is None and self.path.exists():
            self._conn = sqlite3.connect(
                f"file:{self.path}?mode=ro", uri=True, isolation_level=None, timeout=5
            )
        return self._conn

    def count(self, at_least: int | None = None) -> int:
        """The row count; with ``at_least``, a cheap ``max(rowid)`` probe first.

        While the probe says fewer rows than ``at_least`` exist, it is returned as is:
        the table is append-mostly, so it can only over-count, and then the exact
        ``count(*)`` decides.
        """
        conn = self._connect()
        if conn is None:
            return 0
        quoted = '"' + self.table.replace('"', '""') + '"'
        try:
            if at_least is not None:
                (top,) = conn.execute(f"SELECT max(rowid) FROM {quoted}").fetchone()
                if (top or 0) < at_least:
                    return int(top or 0)
            (n,) = conn.execute(f"SELECT count(*) FROM {quoted}").fetchone()
            return int(n)
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc) or "locked" in str(exc):
                return 0
            raise

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def count_files(directory: Path) -> int:
    """Files directly in ``directory`` (0 while it does not exist); temp files excluded."""
    try:
        with os.scandir(directory) as entries:
            return sum(1 for e in entries if e.name.endswith(".json") and e.is_file())
    except FileNotFoundError:
        return 0


def receiver_counts(base_url: str) -> dict[str, int]:
    """The webhook receiver's counters (see bench.receiver)."""
    with urllib.request.urlopen(base_url + "/count", timeout=5) as resp:
        counts: dict[str, int] = json.load(resp)
    return counts
