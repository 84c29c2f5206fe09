"""Group commit for SQLite: many callers, one transaction, one fsync.

SQLite allows one writer at a time and every commit costs an fsync. A single
writer thread takes every write that is waiting, runs them all in one
transaction and commits once, so concurrent requests share the cost of the
commit instead of queueing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rulebus.backends.wakeups import settle_from_thread
from rulebus.errors import DiskFull, Unavailable

log = logging.getLogger("rulebus.sqlite")

T = TypeVar("T")

Work = Callable[[sqlite3.Connection], Any]

_STOP = object()
CHECKPOINT_EVERY = 0.5  # seconds
# Measured at 1,000,000 exchange events with one engine process: 2 MB 9,700
# events/s; 16 MB 12,350; 32 MB 11,950. With the API and two workers, 8 MB
# against 16 MB: 8,562-10,277 against 8,755-10,182 events/s (the same within
# this machine's noise), and 10 MB less peak RSS in the API process.
WRITER_CACHE_KIB = 8_000
# A write that waits for space tries again after this pause, doubled each
# time up to the longest, so it goes on within seconds of space coming back.
SPACE_PAUSE = 0.05
SPACE_PAUSE_MAX = 2.0


def opened(what: str, path: Path, open_: Callable[[], None]) -> None:
    """Run ``open_``; a file SQLite cannot use is ``Unavailable``, naming it and why."""
    try:
        open_()
    except sqlite3.Error as exc:
        raise Unavailable(what, str(path), f"SQLite: {exc}") from None


def connect(path: Path, *, synchronous: str = "FULL") -> sqlite3.Connection:
    """A connection in WAL mode, in autocommit mode so transactions are explicit."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    # Turning a new database to WAL needs it to itself, and SQLite answers
    # "locked" at once rather than wait when another process is opening it too.
    deadline = time.monotonic() + 30
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                conn.close()
                raise
            time.sleep(0.01)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class GroupCommitWriter:
    """Runs write functions on one thread, batching those that wait into one commit.

    Each write function gets the connection inside an open transaction. If
    one raises, it alone is rolled back (through a savepoint) and its caller
    gets the exception; the rest of the batch commits. On a full disk every
    write of the batch fails with :class:`~rulebus.errors.DiskFull`, naming
    ``what`` the file stores.
    """

    def __init__(
        self,
        path: Path,
        *,
        max_batch: int = 2000,
        name: str = "sqlite-writer",
        cache_kib: int = WRITER_CACHE_KIB,
        what: str = "data",
    ) -> None:
        self._what = what
        self._waiting_for_space = False
        self._cache_kib = cache_kib
        self._checkpointer = threading.Thread(
            target=self._checkpoint, name=f"{name}-checkpoint", daemon=True
        )
        self._stopped = threading.Event()
        self._path = path
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._conn: sqlite3.Connection | None = None
        self._lock_fd = -1
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise self._startup_error
        self._checkpointer.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if self._checkpointer.is_alive():
            self._checkpointer.join()

    def _checkpoint(self) -> None:
        """Copy the WAL into the database in the background.

        SQLite would otherwise checkpoint inside whichever commit crosses the
        WAL's size limit, and that one commit (and every request waiting on
        it) would take many times longer than the others.
        """
        conn = connect(self._path)
        # Copying WAL frames gains nothing from a page cache; each connection's
        # cache is memory of its own (SQLite's default is 2 MB).
        conn.execute("PRAGMA cache_size=-256")
        try:
            while not self._stopped.wait(CHECKPOINT_EVERY):
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()

    async def submit(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in the next group commit; returns once it is durable."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((work, future, loop))
        return await future

    async def submit_patiently(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``submit``, but on a full disk try ``work`` again until it fits.

        For writes that may wait and must not be lost (the engine's record of
        its progress): one warning when the disk fills, one line when
        writing goes on, and pauses growing to a few seconds in between.
        """
        pause = SPACE_PAUSE
        while True:
            try:
                result = await self.submit(work)
            except DiskFull as exc:
                if not self._waiting_for_space:
                    self._waiting_for_space = True
                    log.warning("%s; trying again until there is room", exc)
                await asyncio.sleep(pause)
                pause = min(pause * 2, SPACE_PAUSE_MAX)
                continue
            if self._waiting_for_space:
                self._waiting_for_space = False
                log.info("there is room again under %s; writing goes on", self._path.parent)
            return result

    def _run(self) -> None:
        try:
            self._conn = connect(self._path)
            self._lock_fd = os.open(lock_path(self._path), os.O_RDWR | os.O_CREAT, 0o644)
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            # The writer's inserts walk the key indexes, which outgrow SQLite's
            # default 2 MB page cache within a few hundred thousand rows.
            self._conn.execute(f"PRAGMA cache_size=-{self._cache_kib}")
        except BaseException as exc:  # reported to start()'s caller
            self._startup_error = exc
            self._ready.set()
            return
        self._ready.set()
        conn = self._conn
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is _STOP or any(item is _STOP for item in batch):
                stopping = True
                batch = [item for item in batch if item is not _STOP]
            if batch:
                self._commit(conn, batch)
        conn.close()
        os.close(self._lock_fd)

    def _commit(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
        # Writers in other processes (the API and the engine share the bus)
        # queue on this file lock rather than on SQLite's: a busy SQLite
        # sleeps 1, 2, 5, 10... ms between tries, while the kernel hands a
        # released flock to the next waiter at once.
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            results = _transaction(conn, [work for work, _, _ in batch])
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        if any(failed and _disk_full(value) for failed, value in results):
            # Say so in words a client of a 503 (or whoever reads the log) can act on.
            full = DiskFull(self._what, str(self._path.parent))
            results = [
                (True, full) if failed and _disk_full(v) else (failed, v) for failed, v in results
            ]
        settle_from_thread(
            (loop, future, failed, value)
            for (_, future, loop), (failed, value) in zip(batch, results, strict=True)
        )


def _disk_full(exc: BaseException) -> bool:
    # SQLite reports ENOSPC as SQLITE_FULL; growing the WAL index (-shm),
    # which it writes out rather than risk a SIGBUS, as SQLITE_IOERR_SHMSIZE.
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (
        code & 0xFF == sqlite3.SQLITE_FULL or code == sqlite3.SQLITE_IOERR_SHMSIZE
    )


def lock_path(path: Path) -> Path:
    """The file that writers of the database at ``path`` take turns on."""
    return path.with_name(path.name + "-writer.lock")


def _transaction(conn: sqlite3.Connection, works: list[Work]) -> list[tuple[bool, Any]]:
    """Run ``works`` in one transaction; (failed, result or exception) for each."""
    results: list[tuple[bool, Any]] = []
    try:
        conn.execute("BEGIN IMMEDIATE")
        for work in works:
            conn.execute("SAVEPOINT one")
            try:
                result = work(conn)
                if isinstance(result, sqlite3.Cursor):
                    # A cursor must not leave this thread: finalising it
                    # elsewhere while this thread reuses its cached
                    # statement is an SQLite API misuse.
                    result.close()
                    result = None
                results.append((False, result))
                conn.execute("RELEASE one")
            except Exception as exc:
                if not conn.in_transaction:
                    raise  # SQLite rolled all of it back (a full disk does): every work failed
                conn.execute("ROLLBACK TO one")
                conn.execute("RELEASE one")
                results.append((True, exc))
        conn.execute("COMMIT")
    except Exception as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        return [(True, exc)] * len(works)
    return results
