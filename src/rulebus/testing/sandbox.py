"""Stand-ins for the backends, the notifier and the bus: they keep everything in memory.

They implement the same protocols as the real ones (``TableStore``,
``ObjectStore``, ``Notifier``, the publish callable of ``Services``), so the
app's own actions run unchanged, and nothing outside the process is touched.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rulebus import codec
from rulebus.actions.base import Delivery
from rulebus.backends.base import Appended, key_values, validate_bucket, validate_key
from rulebus.errors import ActionError, NotFound
from rulebus.events import Event


def stored(value: Any) -> Any:
    """``value`` as a store keeps it: encoded to JSON and decoded again.

    A real store keeps JSON, so a value that cannot be encoded fails here as
    it would there, and what is kept no longer changes with the caller's copy.
    """
    try:
        return codec.loads(codec.dumps(value))
    except codec.EncodeError as exc:
        raise ActionError(f"cannot encode as JSON: {exc}", retryable=False) from None


class MemoryTables:
    """A ``TableStore``: rows per table, in the order their keys were first written."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, ...]] = {}
        self.rows: dict[str, dict[str, dict[str, Any]]] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def create_table(self, name: str, key: Sequence[str]) -> None:
        self.keys[name] = tuple(key)
        self.rows.setdefault(name, {})

    def _rows(self, table: str) -> dict[str, dict[str, Any]]:
        try:
            return self.rows[table]
        except KeyError:
            raise NotFound(f"no table named {table!r}") from None

    async def put(self, table: str, item: dict[str, Any]) -> None:
        rows = self._rows(table)
        values = key_values(table, self.keys[table], item)
        rows[codec.dumps_str(values)] = stored(item)

    async def put_many(self, table: str, items: Sequence[dict[str, Any]]) -> list[Exception | None]:
        errors: list[Exception | None] = []
        for item in items:
            try:
                await self.put(table, item)
            except Exception as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors

    async def scan(self, table: str) -> AsyncIterator[dict[str, Any]]:
        for row in list(self._rows(table).values()):
            yield row

    async def get(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        values = key_values(table, self.keys[table], key)
        return self._rows(table).get(codec.dumps_str(values))


class MemoryObjects:
    """An ``ObjectStore``: objects per bucket, in the order their keys were first written."""

    def __init__(self) -> None:
        self.buckets: dict[str, dict[str, bytes]] = {}

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def create_bucket(self, name: str) -> None:
        self.buckets.setdefault(validate_bucket(name), {})

    def _bucket(self, bucket: str) -> dict[str, bytes]:
        try:
            return self.buckets[bucket]
        except KeyError:
            raise NotFound(f"no bucket named {bucket!r}") from None

    async def put(self, bucket: str, key: str, body: bytes) -> None:
        self._bucket(bucket)[validate_key(key)] = bytes(body)

    async def put_many(
        self, bucket: str, objects: Sequence[tuple[str, bytes]]
    ) -> list[Exception | None]:
        errors: list[Exception | None] = []
        for key, body in objects:
            try:
                await self.put(bucket, key, body)
            except Exception as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors

    async def get(self, bucket: str, key: str) -> bytes:
        try:
            return self._bucket(bucket)[key]
        except KeyError:
            raise NotFound(f"no object {key!r} in bucket {bucket!r}") from None

    async def list(self, bucket: str, prefix: str = "") -> AsyncIterator[str]:
        for key in sorted(self._bucket(bucket)):
            if key.startswith(prefix):
                yield key

    async def flush(self) -> None:
        pass


@dataclass
class Notification:
    """One message a notify action sent to a topic: what every subscriber would get."""

    topic: str
    message_id: str
    event_id: str
    rule: str
    body: Any


@dataclass
class CapturingNotifier:
    """A ``Notifier`` that keeps the messages instead of posting or logging them."""

    topics: frozenset[str]
    sent: list[Notification] = field(default_factory=list)

    async def notify_many(
        self, topic: str, deliveries: Sequence[Delivery], message_ids: Sequence[str]
    ) -> list[Exception | None]:
        if topic not in self.topics:
            raise NotFound(f"no notification topic named {topic!r}")
        errors: list[Exception | None] = []
        for delivery, message_id in zip(deliveries, message_ids, strict=True):
            try:
                body = stored(delivery.output)
            except ActionError as exc:
                errors.append(exc)
                continue
            self.sent.append(
                Notification(topic, message_id, delivery.event.id, delivery.rule, body)
            )
            errors.append(None)
        return errors


@dataclass
class CapturingBus:
    """What actions publish: kept in log order and handed to ``deliver`` as a bus would.

    As on the real bus, an id already in the log is a duplicate and is dropped.
    """

    deliver: Callable[[Event], None]
    log: list[Event] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set)

    def append(self, event: Event) -> Appended:
        if event.id in self._ids:
            return Appended(event.id, 0, duplicate=True)
        self._ids.add(event.id)
        self.log.append(event)
        event.seq = len(self.log)
        self.deliver(event)
        return Appended(event.id, event.seq)

    async def publish(self, events: Sequence[Event]) -> list[Appended]:
        return [self.append(event) for event in events]
