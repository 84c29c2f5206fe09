"""The embedded bus: an SQLite log in WAL mode, with delivery state per rule.

Positions (``seq``) are the log's integer primary key. Engine processes
split the log into fixed partitions (see :class:`Partition`): an event with a
partition key goes to the partition of its key's hash, any other by its
position. Each partition has its dispatch position in ``dispatch_parts``. A rule's
delivery state is its partition's position, the position from which the
rule applies, and its rows in ``retries``. A delivery that exhausts its
retries moves to ``dead_letters``.

Retention (:meth:`SqliteBus.compact`) removes the oldest events that are done
with, in chunks, and SQLite reuses the pages they free, so the file stops
growing. An event's append time is not stored: each compaction records the
head in ``log_marks``, and an event counts as appended at the first mark after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rulebus import codec
from rulebus.backends.base import (
    Appended,
    BusStats,
    DeadLetter,
    Failure,
    Keyer,
    Retry,
    Traced,
    TraceRun,
    key_hash,
    purge_run,
)
from rulebus.backends.sqlite_writer import WRITER_CACHE_KIB, GroupCommitWriter, connect, opened
from rulebus.errors import NoDeadLetter
from rulebus.events import Event

if TYPE_CHECKING:
    from rulebus.template.model import RetentionSpec

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    topic TEXT NOT NULL,
    ts INTEGER NOT NULL,
    payload BLOB NOT NULL,
    client_id TEXT,
    principal TEXT,
    hops INTEGER NOT NULL DEFAULT 0,
    key_hash INTEGER
);
CREATE TABLE IF NOT EXISTS dispatch_parts (
    part INTEGER PRIMARY KEY,
    parts INTEGER NOT NULL,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rule_starts (
    rule TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS retries (
    seq INTEGER NOT NULL,
    rule TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    due_at REAL NOT NULL,
    actions TEXT NOT NULL,
    failures TEXT NOT NULL,
    PRIMARY KEY (seq, rule)
);
CREATE INDEX IF NOT EXISTS retries_due ON retries (due_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL,
    rule TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL,
    failures TEXT NOT NULL,
    -- The indices of the rule's actions that failed: what a redrive runs again.
    actions TEXT NOT NULL DEFAULT '[]'
);
-- A trace looks an event's dead letters up, and compaction skips their events.
CREATE INDEX IF NOT EXISTS dead_letters_seq ON dead_letters (seq);
CREATE TABLE IF NOT EXISTS log_marks (
    at REAL PRIMARY KEY,
    seq INTEGER NOT NULL
);
-- What deliveries did, for traces (rulebus.engine.trace): a row per batch,
-- covering the positions first..last; found by the span, not per event.
CREATE TABLE IF NOT EXISTS trace_runs (
    id INTEGER PRIMARY KEY,
    first INTEGER NOT NULL,
    last INTEGER NOT NULL,
    at REAL NOT NULL,
    replay TEXT,
    record BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS trace_runs_span ON trace_runs (last, first);
CREATE INDEX IF NOT EXISTS trace_runs_replay ON trace_runs (replay) WHERE replay IS NOT NULL;
"""

_COLUMNS = "seq, id, topic, ts, payload, client_id, principal, hops"
# The partition that owns an event: its key's, or else its position's.
_OWNER = "coalesce(key_hash, seq) % ? = ?"


@dataclass(frozen=True, slots=True)
class Partition:
    """The share of the log one engine process of ``rulebus up`` dispatches.

    Events without a partition key are spread by position, so the processes
    share the work evenly whatever the rules are; events with a key go by
    the key's hash, so one process sees all of a key's events, in order.
    Each process owns the deliveries (and their retries) of its events.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition {self.index} of {self.count} does not exist")

    def owns(self, seq: int, hashed: int | None) -> bool:
        return (seq if hashed is None else hashed) % self.count == self.index

    def first_after(self, seq: int) -> int:
        """The first position after ``seq`` that this partition owns by position."""
        return seq + 1 + (self.index - seq - 1) % self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE_LOG = Partition()

# Events appended by this process are kept decoded for the dispatcher, so the
# hot path never decodes a payload twice. Bounded, and only for events the
# dispatcher will reach soon: past that, it reads (and decodes) them from the
# log like it does after a restart, rather than hold them in memory for long.
TAIL_CACHE_LIMIT = 4096


# Events removed per transaction: each holds the write lock that ingest needs.
COMPACT_CHUNK = 1000

_Row = tuple[str, str, int, bytes, str | None, str | None, int, int | None]
_INSERT_CHUNK = 112  # rows per INSERT statement: 896 parameters


def _insert(conn: sqlite3.Connection, rows: list[_Row]) -> list[Appended]:
    """Insert events, skipping ids already in the log (and repeats among ``rows``)."""
    base = _head(conn)
    first: dict[str, _Row] = {}
    for row in rows:
        first.setdefault(row[0], row)
    unique = list(first.values())
    for start in range(0, len(unique), _INSERT_CHUNK):
        chunk = unique[start : start + _INSERT_CHUNK]
        conn.execute(_insert_sql(len(chunk)), [value for row in chunk for value in row])
    if _head(conn) - base == len(unique):
        # No id was in the log already: SQLite gave the rows the next
        # positions in order (it takes max(seq) + 1, and this writer holds
        # the database's write lock).
        inserted = {row[0]: base + 1 + i for i, row in enumerate(unique)}
    else:
        inserted = dict(
            conn.execute("SELECT id, seq FROM events WHERE seq > ?", (base,)).fetchall()
        )
    out = []
    seqs = dict(inserted)
    for id_, *_ in rows:
        if id_ not in seqs:
            (seqs[id_],) = conn.execute("SELECT seq FROM events WHERE id = ?", (id_,)).fetchone()
        # The first row of an id inserted now is new; any other is a duplicate.
        out.append(Appended(id_, seqs[id_], duplicate=inserted.pop(id_, None) is None))
    return out


def _head(conn: sqlite3.Connection) -> int:
    (seq,) = conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()
    return int(seq)


@lru_cache(maxsize=_INSERT_CHUNK)
def _insert_sql(n: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?)"] * n)
    return (
        "INSERT OR IGNORE INTO events"
        " (id, topic, ts, payload, client_id, principal, hops, key_hash)"
        f" VALUES {values}"
    )


def _dispatched_through(conn: sqlite3.Connection) -> int:
    """The last position up to which every partition has dispatched every event.

    A partition's own position is the last of its events it dispatched; the
    events after it that belong to other partitions say nothing about it.
    """
    positions = conn.execute("SELECT part, parts, seq FROM dispatch_parts").fetchall()
    if not positions:
        return 0  # no engine ever ran: nothing was dispatched
    through = _head(conn)
    for part, parts, seq in positions:
        pending = conn.execute(
            f"SELECT seq FROM events WHERE seq > ? AND {_OWNER} ORDER BY seq LIMIT 1",
            (seq, parts, part),
        ).fetchone()
        if pending is not None:
            through = min(through, pending[0] - 1)
    return int(through)


def _compaction_bounds(
    conn: sqlite3.Connection, retention: RetentionSpec, now: float
) -> tuple[int, int]:
    """The positions through which events are old enough to go, and through which any may.

    Records the head as of ``now`` first: events up to a mark made at time
    T were all appended by T.
    """
    head = _head(conn)
    conn.execute("INSERT OR REPLACE INTO log_marks (at, seq) VALUES (?, ?)", (now, head))
    # Never the last event: SQLite numbers a new row max(seq) + 1, and no
    # position may be given twice.
    safe = min(_dispatched_through(conn), head - 1, _marked(conn, now - retention.duplicate_window))
    old = 0 if retention.max_age is None else _marked(conn, now - retention.max_age)
    # A later pass needs the last mark before its own cut-off times, or later ones.
    oldest = now - max(retention.duplicate_window, retention.max_age or 0)
    conn.execute(
        "DELETE FROM log_marks WHERE at < (SELECT max(at) FROM log_marks WHERE at <= ?)", (oldest,)
    )
    return min(old, safe), safe


def _marked(conn: sqlite3.Connection, at: float) -> int:
    """The head as of the last mark at or before ``at`` (0: none so old)."""
    (seq,) = conn.execute(
        "SELECT coalesce(max(seq), 0) FROM log_marks WHERE at <= ?", (at,)
    ).fetchone()
    return int(seq)


def _remove_oldest(conn: sqlite3.Connection, old: int, safe: int, max_size: int | None) -> int:
    """Remove up to COMPACT_CHUNK of the oldest events that may go; returns how many went.

    Through ``old`` if the file's pages in use are within ``max_size``, else
    through ``safe``. Retries and dead letters read their events from here.
    """
    upto = old
    if max_size is not None:
        pages, free, page = (
            conn.execute(f"PRAGMA {name}").fetchone()[0]
            for name in ("page_count", "freelist_count", "page_size")
        )
        if (pages - free) * page > max_size:
            upto = safe
    removed = conn.execute(
        "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE seq <= ?"
        " AND seq NOT IN (SELECT seq FROM retries) AND seq NOT IN (SELECT seq FROM dead_letters)"
        " ORDER BY seq LIMIT ?) RETURNING seq",
        (upto, COMPACT_CHUNK),
    ).fetchall()
    if removed:
        _forget_traces(conn, max(seq for (seq,) in removed))
    return len(removed)


def _forget_traces(conn: sqlite3.Connection, through: int) -> None:
    """Remove the trace runs of events removed through ``through``.

    Every event up to it is gone but those a retry or a dead letter holds,
    so a run that spans none of those has no event left. One that does stays
    until that event goes.
    """
    conn.execute(
        "DELETE FROM trace_runs WHERE last <= ?"
        " AND NOT EXISTS (SELECT 1 FROM retries r WHERE r.seq BETWEEN first AND last)"
        " AND NOT EXISTS (SELECT 1 FROM dead_letters d WHERE d.seq BETWEEN first AND last)",
        (through,),
    )


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring logs written by earlier versions up to date."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        if "key_hash" not in columns:
            conn.execute("ALTER TABLE events ADD COLUMN key_hash INTEGER")
        columns = {row[1] for row in conn.execute("PRAGMA table_info(dead_letters)")}
        if "actions" not in columns:
            # Letters kept before: a redrive of one runs every action, as it used to.
            conn.execute("ALTER TABLE dead_letters ADD COLUMN actions TEXT NOT NULL DEFAULT '[]'")
        # The single dispatch position of logs written before partitions.
        old = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dispatch'"
        ).fetchone()
        if old:
            conn.execute(
                "INSERT OR IGNORE INTO dispatch_parts (part, parts, seq)"
                " SELECT 0, 1, seq FROM dispatch WHERE one = 1"
            )
            conn.execute("DROP TABLE dispatch")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _row_event(row: tuple[Any, ...]) -> Event:
    seq, id_, topic, ts, payload, client_id, principal, hops = row
    return Event(id_, topic, ts, codec.loads(payload), client_id, principal, seq, hops=hops)


def _trace_rows(runs: Sequence[TraceRun]) -> list[tuple[int, int, float, str | None, bytes]]:
    return [
        (run.seqs[0], run.seqs[-1], run.at, run.replay, codec.dumps(run.record))
        for run in runs
        if run.seqs
    ]


_INSERT_TRACES = "INSERT INTO trace_runs (first, last, at, replay, record) VALUES (?, ?, ?, ?, ?)"


_LETTER = "id, seq, rule, attempts, actions"


def _chosen_letters(
    conn: sqlite3.Connection, ids: Sequence[int] | None
) -> list[tuple[int, int, str, int, bytes]]:
    """(id, seq, rule, attempts, actions) of the dead letters ``ids`` names (``None``: all).

    ``NoDeadLetter`` if some ids name none, before anything is changed.
    """
    if ids is None:
        return conn.execute(f"SELECT {_LETTER} FROM dead_letters").fetchall()
    wanted = sorted(set(ids))
    rows: list[tuple[int, int, str, int, bytes]] = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows += conn.execute(
            f"SELECT {_LETTER} FROM dead_letters WHERE id IN ({', '.join('?' * len(chunk))})",
            chunk,
        ).fetchall()
    found = {row[0] for row in rows}
    missing = [id_ for id_ in wanted if id_ not in found]
    if missing:
        raise NoDeadLetter(missing)
    return rows


def _failures_json(failures: Sequence[Failure]) -> bytes:
    return codec.dumps([f.record() for f in failures])


def _failures_from(data: bytes | str) -> list[Failure]:
    return [Failure(**item) for item in codec.loads(data)]


class SqliteBus:
    """The embedded :class:`~rulebus.backends.base.Bus` on one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        dispatching: bool = True,
        partition: Partition = WHOLE_LOG,
        keyer: Keyer | None = None,
        cache_kib: int = WRITER_CACHE_KIB,
    ) -> None:
        self.path = path
        self.partition = partition
        self._keyer = keyer
        # Only a process that dispatches reads its own appends back, and only
        # while positions alone tell which are its own.
        self._cache_limit = TAIL_CACHE_LIMIT if dispatching else 0
        if keyer is not None and partition.count > 1:
            self._cache_limit = 0
        self._writer = GroupCommitWriter(
            path, name="bus-writer", cache_kib=cache_kib, what="events"
        )
        self._reader: sqlite3.Connection | None = None
        self._tail: dict[int, Event] = {}
        self._read_to = 0  # the highest position read() has returned
        self._appended = asyncio.Event()
        self._pending: list[tuple[list[_Row], asyncio.Future[list[Appended]]]] = []
        self._pending_lock = threading.Lock()  # the writer thread takes what is pending
        self._flush_queued = False
        self._flushes: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        opened("bus", self.path, self._open)

    def _open(self) -> None:
        conn = connect(self.path)
        try:
            conn.executescript(SCHEMA)
            _upgrade(conn)
        finally:
            conn.close()
        self._writer.start()
        self._reader = connect(self.path)

    async def close(self) -> None:
        self._writer.stop()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    @property
    def _db(self) -> sqlite3.Connection:
        assert self._reader is not None, "bus is not open"
        return self._reader

    # -- the log -------------------------------------------------------------

    async def append(self, events: Sequence[Event]) -> list[Appended]:
        keyer = self._keyer
        hashes: list[int | None] = [None] * len(events)
        if keyer is not None:
            for i, e in enumerate(events):
                key = keyer(e)
                if key is not None:
                    hashes[i] = key_hash(key)
        rows = [
            (
                e.id,
                e.topic,
                e.ts,
                e.raw or codec.dumps(e.payload),
                e.client_id,
                e.principal,
                e.hops,
                hashed,
            )
            for e, hashed in zip(events, hashes, strict=True)
        ]
        waiter: asyncio.Future[list[Appended]] = asyncio.get_running_loop().create_future()
        with self._pending_lock:
            self._pending.append((rows, waiter))
            queued, self._flush_queued = self._flush_queued, True
        if not queued:
            flush = asyncio.create_task(self._flush(), name="bus-append")
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        results = await waiter
        if len(self._tail) < self._cache_limit:
            for event, result, hashed in zip(events, results, hashes, strict=True):
                # The dispatcher may have read it from the log already.
                if (
                    not result.duplicate
                    and 0 < result.seq - self._read_to <= TAIL_CACHE_LIMIT
                    and self.partition.owns(result.seq, hashed)
                ):
                    event.seq = result.seq
                    self._tail[result.seq] = event
        self._appended.set()
        return results

    async def _flush(self) -> None:
        """Append, in one write, everything waiting when the writer gets to it.

        Appends (one per request) that arrive while the previous write
        commits join the next one: a few multi-row INSERTs for all of them,
        instead of one statement and one savepoint each.
        """
        taken: list[tuple[list[_Row], asyncio.Future[list[Appended]]]] = []

        def work(conn: sqlite3.Connection) -> list[Appended]:
            with self._pending_lock:
                taken.extend(self._pending)
                self._pending = []
                self._flush_queued = False
            return _insert(conn, [row for rows, _ in taken for row in rows])

        try:
            results = await self._writer.submit(work)
        except Exception as exc:
            for _, waiter in taken:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        start = 0
        for rows, waiter in taken:
            if not waiter.done():
                waiter.set_result(results[start : start + len(rows)])
            start += len(rows)

    async def get(self, seq: int) -> Event | None:
        row = self._db.execute(f"SELECT {_COLUMNS} FROM events WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else _row_event(row)

    async def head(self) -> int:
        return _head(self._db)

    async def stats(self) -> BusStats:
        db = self._db
        (retrying,) = db.execute("SELECT count(*) FROM retries").fetchone()
        (dead,) = db.execute("SELECT count(*) FROM dead_letters").fetchone()
        (parts,) = db.execute("SELECT count(*) FROM dispatch_parts").fetchone()
        return BusStats(_head(db), _dispatched_through(db), int(retrying), int(dead), int(parts))

    async def pending_since(self) -> float | None:
        db = self._db
        row = db.execute(
            "SELECT ts FROM events WHERE seq > ? ORDER BY seq LIMIT 1", (_dispatched_through(db),)
        ).fetchone()
        return None if row is None else row[0] / 1000

    # -- this partition's share ----------------------------------------------

    async def start(self, rules: Iterable[str]) -> dict[str, int]:
        starts = await self.rule_starts(rules)
        self._read_to = await self._start_dispatch()
        return starts

    async def read(self, limit: int) -> list[Event]:
        tail = self._tail
        part = self.partition
        out: list[Event] = []
        # The cached tail follows on from what was read when positions alone
        # say which events are ours (the appender keeps no keyed events here).
        seq = part.first_after(self._read_to)
        while len(out) < limit:
            event = tail.pop(seq, None)
            if event is None:
                break
            out.append(event)
            seq += part.count
        if out:
            self._read_to = max(self._read_to, out[-1].seq)
            return out
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM events WHERE seq > ? AND {_OWNER} ORDER BY seq LIMIT ?",
            (self._read_to, part.count, part.index, limit),
        ).fetchall()
        for row in rows:
            tail.pop(row[0], None)
        if rows:
            self._read_to = max(self._read_to, rows[-1][0])
        return [_row_event(row) for row in rows]

    async def wait(self, timeout: float) -> None:
        if self._tail:
            return
        self._appended.clear()
        # Other processes (``rulebus publish``) append too: the timeout makes
        # the dispatcher look at the log even when nothing here woke it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._appended.wait(), timeout)

    async def _start_dispatch(self) -> int:
        """Where this partition resumes dispatching.

        When the number of partitions changed since the last run, every
        partition resumes where the one furthest behind stopped.
        """
        part = self.partition

        def work(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT part, parts, seq FROM dispatch_parts").fetchall()
            mine = {index: seq for index, parts, seq in rows if parts == part.count}
            if len(mine) == len(rows) and part.index in mine:
                return int(mine[part.index])
            # The first run, or another number of partitions than last time:
            # what each position meant no longer holds, so every partition
            # starts after the last event up to which all were dispatched.
            start = _dispatched_through(conn)
            conn.execute("DELETE FROM dispatch_parts")
            conn.executemany(
                "INSERT INTO dispatch_parts (part, parts, seq) VALUES (?, ?, ?)",
                [(index, part.count, start) for index in range(part.count)],
            )
            return int(start)

        return await self._writer.submit_patiently(work)

    async def rule_starts(self, rules: Iterable[str]) -> dict[str, int]:
        names = list(rules)

        def work(conn: sqlite3.Connection) -> dict[str, int]:
            known = dict(conn.execute("SELECT rule, seq FROM rule_starts").fetchall())
            (dispatched,) = conn.execute("SELECT count(*) FROM dispatch_parts").fetchone()
            # A rule seen for the first time applies to events that arrive
            # from now on, not to the history: like a new AWS IoT rule.
            start = _head(conn) if dispatched else 0
            new = [(name, start) for name in names if name not in known]
            conn.executemany("INSERT INTO rule_starts (rule, seq) VALUES (?, ?)", new)
            known.update(new)
            return {name: int(known[name]) for name in names}

        return await self._writer.submit_patiently(work)

    async def commit(
        self, events: Sequence[Event], retries: Sequence[Retry], runs: Sequence[TraceRun] = ()
    ) -> None:
        seq = max(e.seq for e in events)
        traces = _trace_rows(runs)
        rows = [
            (
                r.event.seq,
                r.rule,
                r.attempts,
                r.due_at,
                codec.dumps(r.actions),
                _failures_json(r.failures),
            )
            for r in retries
        ]
        part = self.partition.index

        def work(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT OR REPLACE INTO retries (seq, rule, attempts, due_at, actions, failures)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            conn.execute("UPDATE dispatch_parts SET seq = max(seq, ?) WHERE part = ?", (seq, part))
            if traces:
                conn.executemany(_INSERT_TRACES, traces)

        await self._writer.submit_patiently(work)

    async def compact(self, retention: RetentionSpec) -> int:
        # The whole log is one engine process's job: partition 0's (or the only one's).
        if self.partition.index != 0 or retention.keeps_everything:
            return 0
        old, safe = await self._writer.submit(
            lambda conn: _compaction_bounds(conn, retention, time.time())
        )
        removed = 0
        while True:
            # A chunk a transaction, so appends wait for one chunk at most.
            n = await self._writer.submit(
                lambda conn: _remove_oldest(conn, old, safe, retention.max_size)
            )
            removed += n
            if n < COMPACT_CHUNK:
                return removed

    # -- failed deliveries ---------------------------------------------------

    async def due(self, now: float, limit: int) -> list[Retry]:
        columns = ", ".join("e." + c.strip() for c in _COLUMNS.split(","))
        rows = self._db.execute(
            f"SELECT r.rule, r.attempts, r.due_at, r.actions, r.failures, {columns}"
            " FROM retries r JOIN events e ON e.seq = r.seq"
            " WHERE r.due_at <= ? AND coalesce(e.key_hash, e.seq) % ? = ?"
            " ORDER BY r.due_at LIMIT ?",
            (now, self.partition.count, self.partition.index, limit),
        ).fetchall()
        return [
            Retry(
                _row_event(row[5:]),
                row[0],
                row[1],
                row[2],
                codec.loads(row[3]),
                _failures_from(row[4]),
            )
            for row in rows
        ]

    async def reschedule(self, retry: Retry) -> None:
        row = (
            retry.attempts,
            retry.due_at,
            codec.dumps(retry.actions),
            _failures_json(retry.failures),
            retry.event.seq,
            retry.rule,
        )
        await self._writer.submit_patiently(
            lambda conn: conn.execute(
                "UPDATE retries SET attempts = ?, due_at = ?, actions = ?, failures = ?"
                " WHERE seq = ? AND rule = ?",
                row,
            )
        )

    async def done(self, retry: Retry) -> None:
        key = (retry.event.seq, retry.rule)
        await self._writer.submit_patiently(
            lambda conn: conn.execute("DELETE FROM retries WHERE seq = ? AND rule = ?", key)
        )

    async def dead_letter(self, retry: Retry) -> int:
        failures = codec.dumps([f.as_dict() for f in retry.failures])
        actions = codec.dumps(retry.actions)
        seq = retry.event.seq

        def work(conn: sqlite3.Connection) -> int:
            conn.execute("DELETE FROM retries WHERE seq = ? AND rule = ?", (seq, retry.rule))
            (id_,) = conn.execute(
                "INSERT INTO dead_letters (seq, rule, attempts, failed_at, failures, actions)"
                " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
                (seq, retry.rule, retry.attempts, time.time(), failures, actions),
            ).fetchone()
            return int(id_)

        return await self._writer.submit_patiently(work)

    async def dead_letters(self) -> list[DeadLetter]:
        columns = ", ".join("e." + c.strip() for c in _COLUMNS.split(","))
        rows = self._db.execute(
            f"SELECT d.id, d.rule, d.attempts, d.failed_at, d.failures, {columns}"
            " FROM dead_letters d JOIN events e ON e.seq = d.seq ORDER BY d.id"
        ).fetchall()
        return [
            DeadLetter(
                id=row[0],
                rule=row[1],
                event=_row_event(row[5:]),
                attempts=row[2],
                failed_at=row[3],
                failures=codec.loads(row[4]),
            )
            for row in rows
        ]

    async def redrive(self, ids: Sequence[int] | None) -> int:
        now = time.time()

        def work(conn: sqlite3.Connection) -> int:
            rows = _chosen_letters(conn, ids)
            conn.executemany(
                "INSERT OR REPLACE INTO retries (seq, rule, attempts, due_at, actions, failures)"
                " VALUES (?, ?, 0, ?, ?, '[]')",
                # Only the actions that failed run again, as in a retry.
                [(seq, rule, now, actions) for _, seq, rule, _, actions in rows],
            )
            conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(r[0],) for r in rows])
            return len(rows)

        return await self._writer.submit(work)

    async def purge(self, ids: Sequence[int] | None) -> int:
        now = time.time()

        def work(conn: sqlite3.Connection) -> int:
            rows = _chosen_letters(conn, ids)
            conn.executemany("DELETE FROM dead_letters WHERE id = ?", [(r[0],) for r in rows])
            runs = [purge_run(now, seq, rule, attempts) for _, seq, rule, attempts, _ in rows]
            conn.executemany(_INSERT_TRACES, _trace_rows(runs))
            return len(rows)

        return await self._writer.submit(work)

    # -- traces and history --------------------------------------------------

    async def record(self, runs: Sequence[TraceRun]) -> None:
        rows = _trace_rows(runs)
        if rows:
            # Not patiently: a trace run is dropped rather than hold up a retry.
            await self._writer.submit(lambda conn: conn.executemany(_INSERT_TRACES, rows))

    async def traced(self, ids: Sequence[str], since_ms: int | None = None) -> dict[str, Traced]:
        db = self._db
        out = {}
        for id_ in ids:
            row = db.execute(f"SELECT {_COLUMNS} FROM events WHERE id = ?", (id_,)).fetchone()
            if row is None:
                continue
            event = _row_event(row)
            seq = event.seq
            runs = [
                (at, codec.loads(record))
                for at, record in db.execute(
                    "SELECT at, record FROM trace_runs WHERE last >= ? AND first <= ?"
                    " ORDER BY at, id",
                    (seq, seq),
                )
            ]
            letters = [
                DeadLetter(
                    id=r[0],
                    rule=r[1],
                    event=event,
                    attempts=r[2],
                    failed_at=r[3],
                    failures=codec.loads(r[4]),
                )
                for r in db.execute(
                    "SELECT id, rule, attempts, failed_at, failures FROM dead_letters"
                    " WHERE seq = ? ORDER BY id",
                    (seq,),
                )
            ]
            retries = [
                Retry(event, r[0], r[1], r[2], codec.loads(r[3]), _failures_from(r[4]))
                for r in db.execute(
                    "SELECT rule, attempts, due_at, actions, failures FROM retries WHERE seq = ?",
                    (seq,),
                )
            ]
            dispatched = seq <= _dispatched_through(db)
            out[id_] = Traced(event, runs, letters, retries, dispatched)
        return out

    async def history(self, since_ms: int | None, until_ms: int | None) -> AsyncIterator[Event]:
        low = -(2**63) if since_ms is None else since_ms
        high = 2**63 - 1 if until_ms is None else until_ms
        # Up to the head as it is now: not what the reader publishes meanwhile.
        head = _head(self._db)
        seq = 0
        while True:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM events WHERE seq > ? AND seq <= ? AND ts BETWEEN ? AND ?"
                " ORDER BY seq LIMIT 1000",
                (seq, head, low, high),
            ).fetchall()
            if not rows:
                return
            for row in rows:
                yield _row_event(row)
            seq = rows[-1][0]

    async def history_count(self, since_ms: int | None, until_ms: int | None) -> int | None:
        low = -(2**63) if since_ms is None else since_ms
        high = 2**63 - 1 if until_ms is None else until_ms
        (count,) = self._db.execute(
            "SELECT count(*) FROM events WHERE ts BETWEEN ? AND ?", (low, high)
        ).fetchone()
        return int(count)

    async def replayed(self, replay: str) -> set[str]:
        # Delivered by some run with no error (a later run may redo what failed).
        done: set[int] = set()
        for (record,) in self._db.execute(
            "SELECT record FROM trace_runs WHERE replay = ?", (replay,)
        ).fetchall():
            for job in codec.loads(record)["jobs"]:
                failed = {int(seq) for seq in job.get("errors", {})}
                done.update(seq for seq in job["seqs"] if seq not in failed)
        ids: set[str] = set()
        seqs = sorted(done)
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            ids.update(
                id_
                for (id_,) in self._db.execute(
                    f"SELECT id FROM events WHERE seq IN ({marks})", chunk
                )
            )
        return ids


WORKER_BUS_CACHE_KIB = 2_000


def from_url(
    url: str,
    data_dir: Path,
    *,
    engine: bool = False,
    partition: Partition | None = None,
    keyer: Keyer | None = None,
) -> SqliteBus:
    """``sqlite``: the log in ``data_dir/bus.sqlite3``.

    A worker of ``rulebus up`` writes to the log only what its functions
    publish, so its writer keeps a smaller page cache: each process's cache
    is memory of its own.
    """
    return SqliteBus(
        data_dir / "bus.sqlite3",
        dispatching=engine,
        partition=partition or WHOLE_LOG,
        keyer=keyer,
        cache_kib=WORKER_BUS_CACHE_KIB if partition is not None else WRITER_CACHE_KIB,
    )
