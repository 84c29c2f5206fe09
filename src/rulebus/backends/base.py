"""The interfaces the engine talks to. No backend detail leaks past these."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from rulebus.errors import BadInput
from rulebus.events import Event


@dataclass(frozen=True, slots=True)
class Partition:
    """The share of the log one engine process dispatches: positions ``index`` mod ``count``.

    Events are spread over engine processes by position, so the processes
    share the work evenly whatever the rules are, and each owns the
    deliveries (and their retries) of the events it dispatches.
    """

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"partition {self.index} of {self.count} does not exist")

    def owns(self, seq: int) -> bool:
        return seq % self.count == self.index

    def first_after(self, seq: int) -> int:
        """The first position of this partition after ``seq``."""
        return seq + 1 + (self.index - seq - 1) % self.count

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


WHOLE_LOG = Partition()


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

    def as_dict(self) -> dict[str, Any]:
        return {
            "failedAction": self.action,
            "failedResource": self.resource,
            "errorMessage": self.message,
        }


@dataclass(slots=True)
class Retry:
    """A (event, rule) delivery that failed and waits to be tried again."""

    seq: int
    rule: str
    attempts: int
    due_at: float
    actions: list[int]
    failures: list[Failure] = field(default_factory=list)


@dataclass(slots=True)
class DeadLetter:
    """A delivery that exhausted its retries: kept until someone redrives it."""

    id: int
    seq: int
    rule: str
    event: Event
    attempts: int
    failed_at: float
    failures: list[dict[str, Any]]


class Bus(Protocol):
    """A durable, ordered log of events plus the delivery state of each rule."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def append(self, events: Sequence[Event]) -> list[Appended]:
        """Append events durably; returns only after they are committed."""
        ...

    async def read(self, after_seq: int, limit: int) -> list[Event]:
        """This bus's partition's events with a position after ``after_seq``, in order."""
        ...

    async def wait_for_events(self, after_seq: int, timeout: float) -> None:
        """Return when an event after ``after_seq`` may exist, or after ``timeout``."""
        ...

    async def start_dispatch(self) -> int:
        """Where this bus's partition resumes dispatching.

        When the number of partitions changed since the last run, every
        partition resumes where the one furthest behind stopped.
        """
        ...

    async def load_dispatched(self) -> int:
        """The position up to which every event has been dispatched to its rules."""
        ...

    async def rule_starts(self, rules: Iterable[str]) -> dict[str, int]:
        """The position after which each rule applies; new rules start at the head."""
        ...

    async def commit_dispatch(self, seq: int, retries: Sequence[Retry]) -> None:
        """Atomically record failed deliveries and advance the partition's position."""
        ...

    async def due_retries(self, now: float, limit: int) -> list[Retry]:
        """Retries of this bus's partition that are due."""
        ...

    async def update_retry(self, retry: Retry) -> None: ...

    async def delete_retry(self, seq: int, rule: str) -> None: ...

    async def dead_letter(self, retry: Retry) -> None:
        """Move a retry that gave up to the dead-letter store."""
        ...

    async def get(self, seq: int) -> Event | None: ...

    async def head(self) -> int:
        """The position of the last event appended."""
        ...

    async def count_retries(self) -> int: ...

    async def count_dead_letters(self) -> int: ...

    async def dead_letters(self) -> list[DeadLetter]: ...

    async def redrive(self, ids: Sequence[int] | None) -> int:
        """Put dead letters (``None``: all of them) back to be retried now."""
        ...


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
        if not _SEGMENT.match(segment):
            raise BadInput(
                f"invalid object key {key!r}: use letters, digits and !_.*'()=@,:+- between '/'"
            )
    return key
