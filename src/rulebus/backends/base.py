"""The interfaces the engine talks to. No backend detail leaks past these."""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from rulebus.errors import ActionError, BadInput
from rulebus.events import Event
from rulebus.keys import ApiKey

if TYPE_CHECKING:
    from rulebus.template.model import RetentionSpec


@dataclass(slots=True)
class Appended:
    """The outcome of appending one event: its position, or that it was a duplicate id."""

    id: str
    seq: int
    duplicate: bool = False


@dataclass(slots=True)
class Failure:
    """One failed action of a delivery, as kept for retries and dead letters."""

    action: str
    resource: str
    message: str
    retryable: bool = True
    # Seconds the target asked to wait (Retry-After); it times the next
    # attempt and is not kept.
    retry_after: float | None = None

    def record(self) -> dict[str, Any]:
        """What a bus keeps of it (``Failure(**record)`` makes it again)."""
        return {
            "action": self.action,
            "resource": self.resource,
            "message": self.message,
            "retryable": self.retryable,
        }

    def as_dict(self) -> dict[str, Any]:
        """As AWS IoT's error action payload names it."""
        return {
            "failedAction": self.action,
            "failedResource": self.resource,
            "errorMessage": self.message,
        }


@dataclass(slots=True)
class Retry:
    """A (event, rule) delivery that failed and waits to be tried again.

    ``actions`` are the indices of the rule's actions that failed: a retry
    runs only those again.
    """

    event: Event
    rule: str
    attempts: int
    due_at: float
    actions: list[int]
    failures: list[Failure] = field(default_factory=list)


@dataclass(slots=True)
class DeadLetter:
    """A delivery that exhausted its retries: kept until someone redrives it."""

    id: int
    rule: str
    event: Event
    attempts: int
    failed_at: float
    failures: list[dict[str, Any]]


@dataclass(slots=True)
class TraceRun:
    """What one round of deliveries did, kept for ``rulebus trace`` with the events it covers.

    ``record`` is JSON (its shape: ``rulebus.engine.trace``); ``seqs`` are the
    positions of the events it covers; ``replay`` is the id of the replay
    that ran it, if one did.
    """

    at: float
    record: dict[str, Any]
    seqs: list[int]
    replay: str | None = None


def purge_run(at: float, seq: int, rule: str, attempts: int) -> TraceRun:
    """The trace run a bus keeps when it purges a dead letter of the event at ``seq``.

    A job with no actions: the rule's delivery ended here, after ``attempts``.
    """
    job = {"rule": rule, "attempt": attempts, "seqs": [seq], "actions": []}
    return TraceRun(at, {"kind": "purge", "jobs": [job]}, [seq])


@dataclass(slots=True)
class Traced:
    """What a bus keeps about one event: the event, its trace runs, retries and dead letters."""

    event: Event
    runs: list[tuple[float, dict[str, Any]]]  # (at, record), oldest first
    dead_letters: list[DeadLetter]
    retries: list[Retry]
    dispatched: bool  # to its rules: the position passed it


@dataclass(slots=True)
class BusStats:
    """What a bus can tell about its backlog.

    ``head`` is the position of the last event appended (on NATS, of the
    last message) and ``dispatched`` the one up to which every event has been
    dispatched to its rules, in the same unit.
    """

    head: int
    dispatched: int
    retrying: int
    dead_letters: int
    engines: int  # engine processes dispatching now (the embedded log: its partitions)


# An event's partition key, or None where it has none (see rulebus.engine.keys).
Keyer = Callable[[Event], "str | None"]


def key_hash(key: str) -> int:
    """A hash of a partition key that every process and host computes alike.

    Buses split the log by it, so a key's events all reach one consumer.
    Python's own ``hash`` of a string differs from process to process.
    """
    return zlib.crc32(key.encode("utf-8", "surrogatepass"))


class EventLog(Protocol):
    """A durable log of events: what ingest and publishing actions write to."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, events: Sequence[Event]) -> list[Appended]:
        """Append events durably; returns only after the backend has them on disk.

        An id already in the log comes back as a duplicate and is not appended again.
        """
        ...

    async def stats(self) -> BusStats: ...

    async def pending_since(self) -> float | None:
        """When the oldest event not dispatched yet was appended (Unix seconds), or None."""
        ...


class Consumer(Protocol):
    """One engine process's share of the log, read in order and acknowledged in order.

    Positions (``Event.seq``) are the backend's: they grow along the log but
    need not be dense, and which events a process gets is the backend's
    business (a fixed partition, or slots leased among live workers). Events
    with the same partition key always come to the same process, in order.
    """

    async def start(self, rules: Iterable[str]) -> dict[str, int]:
        """Claim a share of the log; returns, per rule, the position after which it applies.

        A rule seen for the first time applies to what arrives from then on.
        """
        ...

    async def rule_starts(self, rules: Iterable[str]) -> dict[str, int]:
        """Per rule, the position after which it applies, as ``start`` returns it.

        For rules added while running (a reload): without touching the share
        of the log or the position of what was read.
        """
        ...

    async def read(self, limit: int) -> list[Event]:
        """Up to ``limit`` events of this share after those already read, oldest first."""
        ...

    async def wait(self, timeout: float) -> None:
        """Return when ``read`` may have more, or after ``timeout``."""
        ...

    async def commit(
        self, events: Sequence[Event], retries: Sequence[Retry], runs: Sequence[TraceRun] = ()
    ) -> None:
        """Acknowledge every event read up to these and keep the failed deliveries.

        After a crash, reading resumes after the last committed events; the
        retries are durable before the acknowledgement is. ``runs`` (what the
        deliveries did, for traces) are kept with the acknowledgement.
        """
        ...

    async def compact(self, retention: RetentionSpec) -> int:
        """Remove from the log what ``retention`` no longer keeps; returns how many entries went.

        An entry is an event on SQLite and a message (a batch of events) on
        JetStream. Never removed: what is not dispatched and committed yet,
        what a retry or a dead letter still reads from the log, and anything
        younger than the duplicate window. Each engine process compacts its
        share (which may be nothing), so none removes what another relies on.
        """
        ...


class DeliveryStore(Protocol):
    """Failed deliveries: the retries of this process's share, and the dead letters."""

    async def due(self, now: float, limit: int) -> list[Retry]:
        """Retries of this process's share that are due by ``now``."""
        ...

    async def reschedule(self, retry: Retry) -> None: ...

    async def done(self, retry: Retry) -> None:
        """Forget a retry that succeeded (or no longer applies)."""
        ...

    async def dead_letter(self, retry: Retry) -> int:
        """Move a retry that gave up to the dead letters; returns the dead letter's id."""
        ...

    async def dead_letters(self) -> list[DeadLetter]: ...

    async def redrive(self, ids: Sequence[int] | None) -> int:
        """Put dead letters (``None``: all of them) back to be retried now; returns how many.

        ``NoDeadLetter`` if some of ``ids`` are not dead letters: then none is redriven.
        """
        ...

    async def purge(self, ids: Sequence[int] | None) -> int:
        """Delete dead letters (``None``: all of them) for good; returns how many.

        Their deliveries are not tried again, and their events are left to
        retention. ``NoDeadLetter`` if some of ``ids`` are not dead letters:
        then none is purged.
        """
        ...


class TraceStore(Protocol):
    """What ``rulebus trace`` and ``rulebus replay`` read, and trace runs outside a commit."""

    async def record(self, runs: Sequence[TraceRun]) -> None:
        """Keep trace runs of deliveries that no commit covers (retries, replays)."""
        ...

    async def traced(self, ids: Sequence[str], since_ms: int | None = None) -> dict[str, Traced]:
        """What is kept about the events with these ids that are still in the log.

        ``since_ms``, when given, says none of them was appended before then
        (a bus that cannot look events up by id reads from there on).
        """
        ...

    def history(self, since_ms: int | None, until_ms: int | None) -> AsyncIterator[Event]:
        """The events in the log whose time (``Event.ts``) is in the range, in log order,
        up to the end of the log as it was when reading started."""
        ...

    async def history_count(self, since_ms: int | None, until_ms: int | None) -> int | None:
        """How many events ``history`` will give, if the bus can tell without reading them."""
        ...

    async def replayed(self, replay: str) -> set[str]:
        """The ids of the events whose deliveries by this replay all succeeded."""
        ...


class Bus(EventLog, Consumer, DeliveryStore, TraceStore, Protocol):
    """The three faces of one backend. A process that only publishes uses the log alone."""


def key_values(table: str, key: Sequence[str], item: dict[str, Any]) -> list[Any]:
    """An item's values of the table's key fields; a missing one fails this item alone."""
    values = []
    for name in key:
        value = item.get(name)
        if value is None:
            raise ActionError(
                f"item for table {table!r} has no value for key field {name!r}",
                retryable=False,
            )
        values.append(value)
    return values


class TableStore(Protocol):
    """Keyed items, one namespace per table. ``put`` replaces the item with the same key."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_table(self, name: str, key: Sequence[str]) -> None: ...

    async def put(self, table: str, item: dict[str, Any]) -> None: ...

    async def put_many(self, table: str, items: Sequence[dict[str, Any]]) -> list[Exception | None]:
        """Put many items in one go; returns each one's error, or None."""
        ...

    def scan(self, table: str) -> AsyncIterator[dict[str, Any]]: ...

    async def get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None: ...


class ObjectStore(Protocol):
    """Buckets of objects addressed by key. Keys are validated; none escapes its bucket."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create_bucket(self, name: str) -> None: ...

    async def put(self, bucket: str, key: str, body: bytes) -> None: ...

    async def put_many(
        self, bucket: str, objects: Sequence[tuple[str, bytes]]
    ) -> list[Exception | None]:
        """Put many objects in one go; returns each one's error, or None."""
        ...

    async def get(self, bucket: str, key: str) -> bytes: ...

    def list(self, bucket: str, prefix: str = "") -> AsyncIterator[str]: ...

    async def flush(self) -> None:
        """Make every completed ``put`` durable (a barrier before deliveries are acknowledged)."""
        ...


# -- names every object store accepts ----------------------------------------

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SEGMENT = re.compile(r"^[A-Za-z0-9!_.*'()=@,:+-]+$")
MAX_KEY_BYTES = 1024


def validate_bucket(name: str) -> str:
    """S3's bucket naming rules, minus the ones about IP addresses."""
    if not _BUCKET.match(name) or ".." in name:
        raise BadInput(
            f"invalid bucket name {name!r}: use 3-63 lowercase letters, digits, '.' and '-'"
        )
    return name


def validate_key(key: str) -> str:
    """A key is '/'-separated segments of S3's safe characters; none is '.' or '..'."""
    if not key:
        raise BadInput("invalid object key: empty")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise BadInput(f"invalid object key: longer than {MAX_KEY_BYTES} bytes")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or segment.startswith("."):
            raise BadInput(f"invalid object key {key!r}: empty, '.' or '..' path segment")
        if not _SEGMENT.fullmatch(segment):
            raise BadInput(
                f"invalid object key {key!r}: use letters, digits and !_.*'()=@,:+- between '/'"
            )
    return key


class KeyStore(Protocol):
    """The API keys of an app, kept with its event log so that every API process sees them.

    Keys are stored as :class:`~rulebus.keys.ApiKey` records (digests, never keys).
    """

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def create(self, key: ApiKey) -> None:
        """Store a new key; ``BadInput`` (409) if its name is taken."""
        ...

    async def all(self) -> list[ApiKey]: ...

    async def revoke(self, name: str) -> None:
        """Delete a key; ``NotFound`` if there is none of that name."""
        ...

    async def touch(self, used: dict[str, int]) -> None:
        """Record when keys were last used (name -> ms since the epoch)."""
        ...
