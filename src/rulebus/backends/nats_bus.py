"""The distributed bus on NATS JetStream.

Layout, all named after the ``stream`` URL option (default ``RULEBUS``):

- stream ``NAME``, subjects ``NAME.ev.<slot>``: the event log. A message is
  a JSON array of envelopes (id, topic, time, client, principal, hops,
  payload). An event's slot is its partition key's hash (or else its id's)
  modulo ``slots``. Appends that arrive together go out together, per slot
  (group commit: with ``sync_interval: always`` the server syncs each
  message to disk, some 800 single messages a second here). Events whose ids
  the server has just made cannot be repeats: they share one message. Events
  whose ids were given (by a client, or derived by a rule from its delivery)
  go as an atomic batch (JetStream 2.12+), a message each with its id in
  ``Nats-Msg-Id``: JetStream drops an id it has seen within its duplicate
  window, so ingest can report a repeat and a retried delivery's events are
  not appended twice, while a batch costs far fewer syncs than its messages
  one by one.
  An event's position is its message's stream sequence times 4096 plus its
  index in the message.
- key-value bucket ``NAME_state``: ``slot.<n>`` holds the lease of slot n
  (which engine process owns it, until when) and its cursor (the last
  position dispatched); ``worker.<id>`` is each engine process's heartbeat;
  ``rule.<hex>`` the position from which a rule applies.
- key-value bucket ``NAME_retries``: ``<n>.<event>.<rule>`` (hex-encoded),
  a failed delivery of an event in slot n, waiting for its next attempt.
- stream ``NAME_DLQ``, subject ``NAME.dlq``: dead letters; a dead letter's
  id is its stream sequence. Redriving or purging one deletes its message;
  nothing else refers to it (it carries its event).
- stream ``NAME_TRACE``: trace runs (``rulebus.engine.trace``), a message
  being a JSON array of them. Subject ``NAME.trace.<n>`` for what dispatch
  did in slot n, gathered for up to ``TRACE_FLUSH`` seconds and published
  apart from the commit: each message is a sync on the server, and one per
  commit slowed appends. ``NAME.trace.other`` for retry attempts and replays,
  published at once. There is no index by event id: a trace reads the log
  and this stream from the event's time on.

Engine processes share the slots: each one claims about ``slots / live
processes`` of them, renews its leases every second, and gives up slots
beyond its share so that a new process gets some. A process that dies loses
its leases after ``LEASE`` seconds and the others take its slots over,
reading on from the committed cursors. A slot is read by one process at a
time, in log order, through an ordered consumer; so events with one
partition key are handled in order by one process. There is no JetStream
consumer per rule: events are routed through the engine's topic trie.

Retries are not JetStream redeliveries: a ``nak`` cannot say which of a
rule's actions failed, and the retry state must survive the process. They
are records in the key-value bucket, watched by every engine process, and
run by the owner of the event's slot when due.

Retention (:meth:`NatsBus.compact`): each engine process purges the slots it
owns, up to their committed cursors, so no two processes purge one subject
and none purges what another has yet to read. Retries and dead letters carry
their events, and JetStream remembers message ids for its duplicate window
whether or not the messages are still stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import api
from nats.js.kv import KeyValue

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
from rulebus.backends.registry import redact
from rulebus.errors import NoDeadLetter, RulebusError, Unavailable
from rulebus.events import Event

if TYPE_CHECKING:
    from rulebus.template.model import RetentionSpec

log = logging.getLogger("rulebus.nats")
# nats-py warns on every key listing that servers before 2.10 ignore filters;
# rulebus refuses servers before 2.12 (see NatsBus.open).
logging.getLogger("nats.js.kv").setLevel(logging.ERROR)

LEASE = 6.0  # seconds a slot stays with a process that stopped renewing it
RENEW = 1.0  # seconds between lease renewals (and heartbeats)
QUEUE = 8192  # events read ahead of the engine, in all of a process's slots
SHIFT = 12  # an event's position: its message's sequence << SHIFT | its index in it
BATCH_EVENTS = 1000  # the most events in one message
BATCH_BYTES = 512 * 1024  # and bytes (under the server's default max_payload of 1 MB)
ATOMIC_EVENTS = 100  # events with derived ids in one atomic batch (the server allows 1,000)
ATOMIC_DUPLICATE = 10201  # "atomic publish batch contains duplicate message id"
CONNECT_TIMEOUT = 10.0  # seconds start-up waits for a first connection
PUBLISH_TIMEOUT = 10.0  # seconds an append waits for JetStream's acknowledgement
# Slots cap how many engine processes share the work; each is a message per
# group commit. 16 against 4 slots: 5,600 against 15,400 appends/s of fresh
# events from 64 concurrent appenders (one run each, side by side).
DEFAULT_SLOTS = 8
OLDEST_SERVER = (2, 12)  # atomic batch publish
NO_MESSAGE = 10037  # "no message found"
# Dispatch's trace runs are published this often (seconds): a crash loses at
# most this much of the traces, never anything of the dispatch.
TRACE_FLUSH = 1.0
TRACE_RUNS_PER_MESSAGE = 16  # a run of a full batch is some 10-30 KB


@dataclass(frozen=True)
class Settings:
    """What a ``nats://`` URL says."""

    servers: list[str]
    stream: str
    slots: int
    replicas: int
    duplicate_window: float
    user: str | None
    password: str | None
    token: str | None
    creds: str | None  # a NATS credentials file (JWT and NKey seed)
    tls: ssl.SSLContext | None
    url: str  # redacted, for messages


_OPTIONS = {
    "stream",
    "slots",
    "replicas",
    "duplicate_window",
    "token",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "creds",
}


def parse(url: str) -> Settings:
    """Read a ``nats://[user:password@]host:port[,host:port…][?options]`` URL."""
    shown = redact(url)
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = sorted(set(query) - _OPTIONS)
    if unknown:
        known = ", ".join(sorted(_OPTIONS))
        raise RulebusError(f"--bus {shown}: unknown option {unknown[0]!r} (known: {known})")
    hosts = parts.netloc.rsplit("@", 1)[-1]
    if not hosts:
        raise RulebusError(f"--bus {shown}: no server given (nats://host:port)")
    wants_tls = parts.scheme == "tls" or any(k in query for k in ("tls_ca", "tls_cert"))
    scheme = "tls" if wants_tls else "nats"
    servers = [f"{scheme}://{host.strip()}" for host in hosts.split(",") if host.strip()]
    stream = query.get("stream", "RULEBUS")
    if not stream.replace("_", "").replace("-", "").isalnum() or len(stream) > 64:
        raise RulebusError(f"--bus {shown}: stream name {stream!r}: use letters, digits, _ and -")
    try:
        slots = int(query.get("slots", DEFAULT_SLOTS))
        replicas = int(query.get("replicas", 1))
        window = float(query.get("duplicate_window", 120))
    except ValueError as exc:
        raise RulebusError(f"--bus {shown}: {exc}") from None
    if not 1 <= slots <= 1024 or replicas not in (1, 3, 5) or window <= 0:
        raise RulebusError(
            f"--bus {shown}: slots must be 1-1024, replicas 1, 3 or 5, duplicate_window > 0"
        )
    tls = None
    if scheme == "tls":
        tls = ssl.create_default_context(cafile=query.get("tls_ca"))
        if "tls_cert" in query:
            tls.load_cert_chain(query["tls_cert"], query.get("tls_key"))
    return Settings(
        servers=servers,
        stream=stream,
        slots=slots,
        replicas=replicas,
        duplicate_window=window,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        token=query.get("token"),
        creds=query.get("creds"),
        tls=tls,
        url=shown,
    )


async def connect(settings: Settings, name: str, **callbacks: Any) -> Any:
    """A client connection for ``settings``, the way every rulebus process connects."""
    s = settings
    return await nats.connect(
        s.servers,
        user=s.user,
        password=s.password,
        token=s.token,
        user_credentials=s.creds,
        tls=s.tls,
        name=name,
        connect_timeout=3,
        # Once connected, keep reconnecting for as long as it takes:
        # appends wait (and time out) meanwhile rather than fail fast.
        max_reconnect_attempts=-1,
        reconnect_time_wait=0.5,
        **callbacks,
    )


_Waiting = tuple[bytes, "asyncio.Future[Appended]", Event]  # envelope, its caller, the event


def _chunks(waiting: list[_Waiting]) -> list[list[_Waiting]]:
    """Fresh events cut into messages of at most BATCH_EVENTS events and BATCH_BYTES."""
    out: list[list[_Waiting]] = []
    start = size = 0
    for i, (envelope, _, _) in enumerate(waiting):
        if i - start == BATCH_EVENTS or (size and size + len(envelope) > BATCH_BYTES):
            out.append(waiting[start:i])
            start, size = i, 0
        size += len(envelope) + 1
    if start < len(waiting):
        out.append(waiting[start:])
    return out


def _fail(part: list[_Waiting], exc: BaseException) -> None:
    for _, future, _ in part:
        if not future.done():
            future.set_exception(exc)


def _message(envelopes: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(envelopes) + b"]"


def _envelope(event: Event) -> bytes:
    raw = event.raw or codec.dumps(event.payload)
    return codec.dumps(
        {
            "id": event.id,
            "topic": event.topic,
            "ts": event.ts,
            "c": event.client_id,
            "p": event.principal,
            "h": event.hops,
            "payload": codec.Fragment(raw),
        }
    )


def _event(e: dict[str, Any], seq: int) -> Event:
    return Event(e["id"], e["topic"], e["ts"], e["payload"], e["c"], e["p"], seq, hops=e["h"])


def _hex(text: str) -> str:
    return text.encode().hex()


@dataclass
class _Slot:
    """A slot this process owns: its lease's revision, its reader, what it committed."""

    number: int
    revision: int
    cursor: int
    renewed: float  # monotonic time of the last successful write of the lease
    whole: bool = True  # the cursor is the last event of its message
    reader: Any = None  # the ordered consumer's subscription
    releasing: bool = False


class NatsBus:
    """The :class:`~rulebus.backends.base.Bus` on a NATS JetStream server or cluster."""

    def __init__(self, settings: Settings, *, engine: bool, keyer: Keyer | None) -> None:
        self.settings = settings
        self._engine = engine
        self._keyer = keyer
        name = settings.stream
        self._stream = name
        self._subject = f"{name}.ev"
        self._dlq_stream = f"{name}_DLQ"
        self._dlq_subject = f"{name}.dlq"
        self._trace_stream = f"{name}_TRACE"
        self._trace_subject = f"{name}.trace"
        self._me = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._nc: Any = None
        self._js: Any = None
        self._kv: KeyValue | None = None
        self._retry_kv: KeyValue | None = None
        self._slots: dict[int, _Slot] = {}
        # position -> (slot, last of its message), for events read and not committed
        self._slot_of: dict[int, tuple[int, bool]] = {}
        # Fresh events waiting for the next message of their slot.
        self._batches: dict[int, list[_Waiting]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[tuple[_Slot, bool, Event]] = asyncio.Queue(QUEUE)
        self._retries: dict[str, tuple[int, Retry]] = {}  # KV key -> (slot, retry)
        self._retry_keys: dict[tuple[str, str], str] = {}  # (event id, rule) -> KV key
        self._background: set[asyncio.Future[None]] = set()
        self._traces: dict[str, list[dict[str, Any]]] = {}  # subject -> runs to publish
        self._trace_flusher: asyncio.Task[None] | None = None
        self._purge_traces_until = 0.0  # monotonic time: see _purge_old_traces
        self._tasks: list[asyncio.Task[None]] = []
        self._watcher: Any = None
        self._lease_lock = asyncio.Lock()
        self._arrived = asyncio.Event()
        self._closing = False

    # -- connection ----------------------------------------------------------

    async def open(self) -> None:
        s = self.settings
        try:
            # nats-py tries again for ever when told to reconnect for ever,
            # the first connection included: start-up gives up on its own.
            self._nc = await asyncio.wait_for(self._connect(), CONNECT_TIMEOUT)
        except TimeoutError:
            raise Unavailable(
                "bus", s.url, f"no server answered within {CONNECT_TIMEOUT:g} s"
            ) from None
        except Exception as exc:
            raise Unavailable("bus", s.url, _reason(exc)) from None
        self._js = self._nc.jetstream(timeout=PUBLISH_TIMEOUT)
        version = self._nc.connected_server_version
        if (version.major, version.minor) < OLDEST_SERVER:
            self._closing = True
            await self._nc.close()
            found = f"{version.major}.{version.minor}.{version.patch}"
            needed = ".".join(map(str, OLDEST_SERVER))
            raise Unavailable(
                "bus", s.url, f"NATS {found} is too old: rulebus needs {needed} or newer"
            )
        try:
            await self._ensure_streams()
        except Exception as exc:
            self._closing = True
            await self._nc.close()
            if isinstance(exc, RulebusError):
                raise
            raise Unavailable("bus", s.url, f"JetStream: {_reason(exc)}") from None

    async def _connect(self) -> Any:
        return await connect(
            self.settings,
            f"rulebus {self._me}",
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnect,
            reconnected_cb=self._on_reconnect,
        )

    async def _ensure_streams(self) -> None:
        s = self.settings
        js = self._js
        log_config = api.StreamConfig(
            name=self._stream,
            subjects=[f"{self._subject}.*"],
            storage=api.StorageType.FILE,
            retention=api.RetentionPolicy.LIMITS,
            num_replicas=s.replicas,
            duplicate_window=s.duplicate_window,
            allow_atomic=True,
        )
        dlq_config = api.StreamConfig(
            name=self._dlq_stream,
            subjects=[self._dlq_subject],
            storage=api.StorageType.FILE,
            num_replicas=s.replicas,
        )
        trace_config = api.StreamConfig(
            name=self._trace_stream,
            subjects=[f"{self._trace_subject}.*"],
            storage=api.StorageType.FILE,
            num_replicas=s.replicas,
        )
        for config in (log_config, dlq_config, trace_config):
            try:
                info = await js.stream_info(config.name)
                if config is log_config and not info.config.allow_atomic:
                    info.config.allow_atomic = True  # a stream made by an older rulebus
                    await js.update_stream(info.config)
            except nats.js.errors.NotFoundError:
                with contextlib.suppress(nats.js.errors.BadRequestError):
                    await js.add_stream(config)  # another process may have made it meanwhile
        buckets = []
        for name in (f"{self._stream}_state", f"{self._stream}_retries"):
            try:
                buckets.append(await js.key_value(name))
            except nats.js.errors.BucketNotFoundError:
                buckets.append(
                    await js.create_key_value(
                        api.KeyValueConfig(
                            bucket=name,
                            history=1,
                            storage=api.StorageType.FILE,
                            replicas=s.replicas,
                        )
                    )
                )
        self._kv, self._retry_kv = buckets
        # Every process must split the log alike: a process with another slot
        # count would put a key's events where its owner never reads them.
        with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
            await self.kv.create("config", codec.dumps({"slots": s.slots}))
        recorded = codec.loads((await self.kv.get("config")).value or b"{}").get("slots")
        if recorded != s.slots:
            raise RulebusError(
                f"stream {self._stream} is split into {recorded} slots, not {s.slots};"
                f" use slots={recorded} (a new slot count needs a new stream)"
            )

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._nc is None:
            return
        if self._trace_flusher is not None:
            self._trace_flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._trace_flusher
        await self._publish_traces()
        self._closing = True
        # Hand the slots over at once rather than after the lease runs out.
        for slot in list(self._slots.values()):
            await self._release(slot)
        with contextlib.suppress(Exception):
            if self._watcher is not None:
                await self._watcher.stop()
            await self._kv_delete(f"worker.{self._me}")
        with contextlib.suppress(Exception):
            await self._nc.close()
        self._nc = None

    async def _on_error(self, exc: Exception) -> None:
        if isinstance(exc, nats.errors.SlowConsumerError):
            # Should not happen (no limits on the readers), but a message was
            # dropped: read the slot anew from its cursor rather than skip it.
            for slot in list(self._slots.values()):
                if slot.reader is not None and slot.reader is exc.sub:
                    log.warning("slot %d: messages dropped; reading it again", slot.number)
                    # Not here: this runs on nats-py's reading task, which
                    # the new subscription's request needs.
                    task = asyncio.ensure_future(self._reread(slot))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
            return
        log.debug("NATS: %s", exc)

    async def _on_disconnect(self) -> None:
        if self._closing:
            return
        log.warning("lost the connection to NATS at %s; reconnecting", self.settings.url)

    async def _on_reconnect(self) -> None:
        log.warning("reconnected to NATS at %s", self.settings.url)
        # The slots' ordered consumers would find out by missing heartbeats,
        # 10 s or more later (a restarted server forgets them): read the
        # slots anew from their cursors now.
        for slot in list(self._slots.values()):
            task = asyncio.ensure_future(self._reread(slot))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _reread(self, old: _Slot) -> None:
        """Read a slot of ours again from its cursor, with a new reader."""
        async with self._lease_lock:
            if self._slots.get(old.number) is not old or old.releasing:
                return
            await self._stop_reading(old)
            fresh = _Slot(old.number, old.revision, old.cursor, old.renewed, whole=old.whole)
            try:
                await self._read_slot(fresh)
            except Exception as exc:
                log.warning("slot %d: cannot read it again: %s", old.number, _reason(exc))
                await self._release(fresh)

    @property
    def kv(self) -> KeyValue:
        assert self._kv is not None, "bus is not open"
        return self._kv

    # -- the log -------------------------------------------------------------

    def _slot(self, event: Event) -> int:
        key = self._keyer(event) if self._keyer is not None else None
        return key_hash(event.id if key is None else key) % self.settings.slots

    async def append(self, events: Sequence[Event]) -> list[Appended]:
        loop = asyncio.get_running_loop()
        waits: list[Any] = []
        for e in events:
            future: asyncio.Future[Appended] = loop.create_future()
            self._batches.setdefault(self._slot(e), []).append((_envelope(e), future, e))
            waits.append(future)
        if self._batches and self._flusher is None:
            self._flusher = asyncio.create_task(self._flush(), name="nats-append")
        try:
            return list(await asyncio.gather(*waits))
        except Exception as exc:
            raise Unavailable("bus", self.settings.url, _reason(exc)) from None

    async def _publish_one(self, slot: int, event: Event) -> Appended:
        ack = await self._js.publish(
            f"{self._subject}.{slot}",
            _message([_envelope(event)]),
            timeout=PUBLISH_TIMEOUT,
            headers={"Nats-Msg-Id": event.id},
        )
        return Appended(event.id, ack.seq << SHIFT, duplicate=bool(ack.duplicate))

    async def _flush(self) -> None:
        """Publish what waits, per slot, while more gathers for the next round."""
        try:
            while self._batches:
                taken, self._batches = self._batches, {}
                sends = []
                for slot, waiting in taken.items():
                    fresh = [w for w in waiting if w[2].fresh_id]
                    derived = [w for w in waiting if not w[2].fresh_id]
                    sends += [self._publish_array(slot, part) for part in _chunks(fresh)]
                    sends += [
                        self._publish_atomic(slot, derived[i : i + ATOMIC_EVENTS])
                        for i in range(0, len(derived), ATOMIC_EVENTS)
                    ]
                await asyncio.gather(*sends)
        finally:
            self._flusher = None

    async def _publish_array(self, slot: int, part: list[_Waiting]) -> None:
        """Fresh events as one message: one fsync for all of them."""
        try:
            ack = await self._js.publish(
                f"{self._subject}.{slot}",
                _message([envelope for envelope, _, _ in part]),
                timeout=PUBLISH_TIMEOUT,
            )
        except Exception as exc:
            _fail(part, exc)
            return
        for i, (_, future, event) in enumerate(part):
            if not future.done():
                future.set_result(Appended(event.id, ack.seq << SHIFT | i))

    async def _publish_atomic(self, slot: int, part: list[_Waiting]) -> None:
        """Events with given ids as one atomic batch: a message each, with its id.

        JetStream then drops an id it has seen within its window, as for a
        single message, and commits the batch together (far fewer syncs than
        a message at a time). A batch holding an id seen before is refused
        whole; its events then go one by one, so each learns if it was new.
        """
        subject = f"{self._subject}.{slot}"
        batch = uuid.uuid4().hex
        nc = self._nc
        try:
            for i, (envelope, _, event) in enumerate(part[:-1], 1):
                await nc.publish(
                    subject,
                    _message([envelope]),
                    headers={
                        "Nats-Batch-Id": batch,
                        "Nats-Batch-Sequence": str(i),
                        "Nats-Msg-Id": event.id,
                    },
                )
            envelope, _, event = part[-1]
            reply = await nc.request(
                subject,
                _message([envelope]),
                timeout=PUBLISH_TIMEOUT,
                headers={
                    "Nats-Batch-Id": batch,
                    "Nats-Batch-Sequence": str(len(part)),
                    "Nats-Batch-Commit": "1",
                    "Nats-Msg-Id": event.id,
                },
            )
            answer = codec.loads(reply.data)
        except Exception as exc:
            _fail(part, exc)
            return
        error = answer.get("error")
        if error is not None and error.get("err_code") == ATOMIC_DUPLICATE:
            outcomes = await asyncio.gather(
                *(self._publish_one(slot, e) for _, _, e in part), return_exceptions=True
            )
            for (_, future, _), outcome in zip(part, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            return
        if error is not None:
            _fail(part, RulebusError(f"JetStream refused a batch: {error.get('description')}"))
            return
        first = int(answer["seq"]) - len(part) + 1
        for i, (_, future, event) in enumerate(part):
            if not future.done():
                future.set_result(Appended(event.id, (first + i) << SHIFT))

    async def stats(self) -> BusStats:
        try:
            info = await self._js.stream_info(self._stream)
            head = int(info.state.last_seq)
            dispatched = head
            for number in range(self.settings.slots):
                cursor, whole = await self._cursor(number)
                message = cursor >> SHIFT
                if cursor and not whole:
                    dispatched = min(dispatched, message - 1)
                pending = await self._next_in_slot(number, message + 1)
                if pending is not None:
                    dispatched = min(dispatched, pending - 1)
            retrying = len(await self._keys("", self.retry_kv))
            owners = set()
            now = time.time()
            for number in range(self.settings.slots):
                with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                    state = codec.loads((await self.kv.get(f"slot.{number}")).value or b"{}")
                    if state.get("owner") and state.get("until", 0) > now:
                        owners.add(state["owner"])
            dlq = await self._js.stream_info(self._dlq_stream)
        except RulebusError:
            raise
        except Exception as exc:
            raise Unavailable("bus", self.settings.url, _reason(exc)) from None
        return BusStats(head, dispatched, retrying, int(dlq.state.messages), len(owners))

    async def pending_since(self) -> float | None:
        # The first message of each slot with events not committed yet: the
        # cursor's own when it stopped inside it, else the next one.
        oldest: float | None = None
        try:
            for number in range(self.settings.slots):
                cursor, whole = await self._cursor(number)
                first = (cursor >> SHIFT) + (0 if cursor and not whole else 1)
                try:
                    msg = await self._js.get_msg(
                        self._stream, seq=first, subject=f"{self._subject}.{number}", next=True
                    )
                except nats.js.errors.NotFoundError:
                    continue
                at = msg.time.timestamp() if msg.time else time.time()
                oldest = at if oldest is None else min(oldest, at)
        except RulebusError:
            raise
        except Exception as exc:
            raise Unavailable("bus", self.settings.url, _reason(exc)) from None
        return oldest

    async def _cursor(self, number: int) -> tuple[int, bool]:
        """The slot's committed position, and whether that was the last event of its message."""
        try:
            entry = await self.kv.get(f"slot.{number}")
        except nats.js.errors.KeyNotFoundError:
            return 0, True
        state = codec.loads(entry.value or b"{}")
        return int(state.get("cursor", 0)), bool(state.get("whole", True))

    async def _next_in_slot(self, number: int, seq: int) -> int | None:
        """The sequence of the slot's first message at or after ``seq``, if any."""
        try:
            msg = await self._js.get_msg(
                self._stream, seq=seq, subject=f"{self._subject}.{number}", next=True
            )
        except nats.js.errors.NotFoundError:
            return None
        return int(msg.seq)

    @property
    def retry_kv(self) -> KeyValue:
        assert self._retry_kv is not None, "bus is not open"
        return self._retry_kv

    async def _keys(self, prefix: str, kv: KeyValue | None = None) -> list[str]:
        # Listing with a filter returned nothing here (nats-py 2.16, server
        # 2.15); the state bucket is small, so filter the full listing.
        try:
            keys = await (kv or self.kv).keys()
        except nats.js.errors.NoKeysError:
            return []
        return [key for key in keys if key.startswith(prefix)]

    async def _kv_delete(self, key: str, kv: KeyValue | None = None) -> None:
        with contextlib.suppress(nats.js.errors.KeyNotFoundError):
            await (kv or self.kv).delete(key)

    # -- this process's share: leases on slots ------------------------------

    async def start(self, rules: Iterable[str]) -> dict[str, int]:
        starts = await self.rule_starts(rules)
        self._watcher = await self.retry_kv.watch(">")
        await self._load_retries()
        await self._heartbeat()
        # Processes started together (``up --workers 2``) see each other's
        # heartbeat before taking slots, rather than one taking them all.
        await asyncio.sleep(RENEW)
        await self._balance()
        self._tasks = [
            asyncio.create_task(self._lease_loop(), name="nats-leases"),
            asyncio.create_task(self._watch_retries(), name="nats-retries"),
        ]
        return starts

    async def rule_starts(self, rules: Iterable[str]) -> dict[str, int]:
        info = await self._js.stream_info(self._stream)
        # A rule seen for the first time applies to what arrives from now on,
        # unless nothing was ever dispatched (a new deployment).
        last = int(info.state.last_seq)
        start = (last << SHIFT | (1 << SHIFT) - 1) if await self._keys("slot.") else 0
        out = {}
        for name in rules:
            key = f"rule.{_hex(name)}"
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await self.kv.create(key, str(start).encode())
            entry = await self.kv.get(key)
            out[name] = int(entry.value or b"0")
        return out

    async def _heartbeat(self) -> None:
        await self.kv.put(f"worker.{self._me}", codec.dumps({"at": time.time()}))

    async def _live_workers(self) -> int:
        now = time.time()
        live = 0
        for key in await self._keys("worker."):
            with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                entry = await self.kv.get(key)
                if codec.loads(entry.value or b"{}").get("at", 0) > now - LEASE:
                    live += 1
                elif key != f"worker.{self._me}":
                    await self._kv_delete(key)  # a process that died: forget it
        return max(live, 1)

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(RENEW)
            try:
                await self._heartbeat()
                await self._balance()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("renewing slot leases failed: %s", _reason(exc))
            # A process that cannot renew must stop before its leases run out,
            # or two processes would handle one key at once.
            now = time.monotonic()
            for slot in list(self._slots.values()):
                if now - slot.renewed > LEASE - 2 * RENEW:
                    log.warning("slot %d: lease not renewed in time; letting it go", slot.number)
                    await self._drop(slot)

    async def _balance(self) -> None:
        """Renew our leases, give up slots beyond our share, claim free ones up to it."""
        async with self._lease_lock:
            share = math.ceil(self.settings.slots / await self._live_workers())
            for slot in list(self._slots.values()):
                if not await self._write_lease(slot, slot.cursor, slot.whole):
                    log.warning("slot %d was taken over by another process", slot.number)
                    await self._drop(slot)
            # Slots beyond our share are handed over once what was read of
            # them is committed, so two processes never hold one key's events.
            keeping = [slot for slot in self._slots.values() if not slot.releasing]
            for slot in sorted(keeping, key=lambda s: -s.number)[: max(len(keeping) - share, 0)]:
                slot.releasing = True
                await self._stop_reading(slot)
            busy = {number for number, _ in self._slot_of.values()}
            for slot in list(self._slots.values()):
                if slot.releasing and slot.number not in busy:
                    await self._release(slot)
            if len(self._slots) >= share:
                return
            now = time.time()
            before = len(self._slots)
            for number in range(self.settings.slots):
                if len(self._slots) >= share:
                    break
                if number not in self._slots:
                    await self._claim(number, now)
            if len(self._slots) != before:
                log.info(
                    "reading %d of %d slots of stream %s",
                    len(self._slots),
                    self.settings.slots,
                    self._stream,
                )

    async def _claim(self, number: int, now: float) -> None:
        key = f"slot.{number}"
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            entry = None
        state = codec.loads(entry.value or b"{}") if entry is not None else {}
        if state.get("owner") and state.get("until", 0) > now:
            return  # someone else's, and alive
        cursor, whole = int(state.get("cursor", 0)), bool(state.get("whole", True))
        value = codec.dumps(
            {"owner": self._me, "until": now + LEASE, "cursor": cursor, "whole": whole}
        )
        try:
            if entry is None:
                revision = await self.kv.create(key, value)
            else:
                revision = await self.kv.update(key, value, last=entry.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return  # another process claimed it first
        slot = _Slot(number, revision, cursor, time.monotonic(), whole=whole)
        try:
            await self._read_slot(slot)
        except Exception as exc:
            # Not read, so not ours: let another process (or the next round) take it.
            log.warning("slot %d: cannot read it: %s", number, _reason(exc))
            await self._release(slot)

    async def _read_slot(self, slot: _Slot) -> None:
        """Own ``slot`` and read it from its cursor on.

        Events an earlier reader of the slot queued are not delivered: they
        belong to another ``_Slot`` (see ``read``), and this one reads them again.
        """
        number = slot.number
        self._slots[number] = slot
        try:
            slot.reader = await self._subscribe(slot)
        except Exception:
            del self._slots[number]
            raise
        log.debug("slot %d: taken, reading after position %d", number, slot.cursor)

    async def _subscribe(self, slot: _Slot) -> Any:
        return await self._js.subscribe(
            f"{self._subject}.{slot.number}",
            stream=self._stream,
            ordered_consumer=True,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
                # The message of the cursor again (its later events may not
                # be done); the reader skips what was committed.
                opt_start_seq=max(slot.cursor >> SHIFT, 1),
            ),
            cb=self._reader(slot),
            # nats-py drops what does not fit its buffer after it has counted
            # it as read, so a gap would go unseen: no limit here, the
            # server's flow control (answered as the callback takes
            # messages) bounds the buffer instead.
            pending_msgs_limit=0,
            pending_bytes_limit=0,
        )

    def _reader(self, slot: _Slot) -> Any:
        queue = self._queue

        async def on_message(msg: Msg) -> None:
            if self._slots.get(slot.number) is not slot or slot.releasing:
                return
            base = msg.metadata.sequence.stream << SHIFT
            envelopes = codec.loads(msg.data)
            last = len(envelopes) - 1
            for i, envelope in enumerate(envelopes):
                if base | i > slot.cursor:
                    await queue.put((slot, i == last, _event(envelope, base | i)))
            self._arrived.set()

        return on_message

    async def _write_lease(self, slot: _Slot, cursor: int, whole: bool) -> bool:
        """Renew the slot's lease with this cursor; False if the slot is no longer ours."""
        state = {"owner": self._me, "until": time.time() + LEASE, "cursor": cursor, "whole": whole}
        value = codec.dumps(state)
        try:
            slot.revision = await self.kv.update(f"slot.{slot.number}", value, last=slot.revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            return False
        slot.cursor = cursor
        slot.whole = whole
        slot.renewed = time.monotonic()
        return True

    async def _release(self, slot: _Slot) -> None:
        """Give a slot up, keeping its cursor, for another process to take."""
        slot.releasing = True
        await self._drop(slot)
        value = codec.dumps({"owner": None, "until": 0, "cursor": slot.cursor, "whole": slot.whole})
        with contextlib.suppress(Exception):
            await self.kv.update(f"slot.{slot.number}", value, last=slot.revision)

    async def _drop(self, slot: _Slot) -> None:
        """Stop reading a slot; what was read and not committed, its next owner reads again."""
        if self._slots.get(slot.number) is slot:
            del self._slots[slot.number]
        await self._stop_reading(slot)

    async def _stop_reading(self, slot: _Slot) -> None:
        if slot.reader is not None:
            with contextlib.suppress(Exception):
                await slot.reader.unsubscribe()
            slot.reader = None

    # -- reading and committing ----------------------------------------------

    async def read(self, limit: int) -> list[Event]:
        out: list[Event] = []
        queue = self._queue
        # A lease not renewed lately may be another process's by now.
        stale = time.monotonic() - (LEASE - 2 * RENEW)
        while len(out) < limit and not queue.empty():
            slot, last, event = queue.get_nowait()
            # Not given up since it was read, nor read again by a newer reader.
            if self._slots.get(slot.number) is slot and not slot.releasing:
                if slot.renewed < stale:
                    await self._drop(slot)
                    continue
                self._slot_of[event.seq] = (slot.number, last)
                out.append(event)
        return out

    async def wait(self, timeout: float) -> None:
        if not self._queue.empty():
            return
        self._arrived.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._arrived.wait(), timeout)

    async def commit(
        self, events: Sequence[Event], retries: Sequence[Retry], runs: Sequence[TraceRun] = ()
    ) -> None:
        await asyncio.gather(*(self._put_retry(self._number(r.event), r) for r in retries))
        for subject, record in self._trace_records(runs):
            self._traces.setdefault(subject, []).append(record)
        if self._traces and self._trace_flusher is None:
            self._trace_flusher = asyncio.create_task(self._flush_traces(), name="nats-traces")
        async with self._lease_lock:
            through: dict[int, tuple[int, bool]] = {}
            for event in events:
                read = self._slot_of.get(event.seq)
                if read is not None and event.seq > through.get(read[0], (0, True))[0]:
                    through[read[0]] = (event.seq, read[1])
            # One write per slot, all at once: each is a round trip and an fsync.
            moved = [
                (slot, seq, whole)
                for number, (seq, whole) in through.items()
                if (slot := self._slots.get(number)) is not None and seq > slot.cursor
            ]  # a slot given up meanwhile is read again by its next owner
            written = await asyncio.gather(*(self._write_lease(*move) for move in moved))
            for (slot, _, _), ok in zip(moved, written, strict=True):
                if not ok:
                    log.warning("slot %d was taken over by another process", slot.number)
                    await self._drop(slot)
            # Only now, so a commit that failed above is tried again whole.
            for event in events:
                self._slot_of.pop(event.seq, None)

    async def compact(self, retention: RetentionSpec) -> int:
        if retention.keeps_everything or not self._slots:
            return 0
        state = (await self._js.stream_info(self._stream)).state
        if not state.messages:
            await self._purge_old_traces(0)
            return 0
        first, last = int(state.first_seq), int(state.last_seq)
        now = time.time()
        cut = first  # messages before it may go
        if retention.max_age is not None:
            cut = await self._first_since(now - retention.max_age, last)
        if retention.max_size is not None and state.bytes > retention.max_size:
            # As many of the oldest messages as, at their average size, make up the excess.
            excess = state.bytes - retention.max_size
            cut = max(cut, first + math.ceil(excess * state.messages / state.bytes))
        cut = min(cut, await self._first_since(now - retention.duplicate_window, last))
        removed = 0
        for slot in list(self._slots.values()):
            # The cursor's message stays unless all its events were dispatched.
            upto = min(cut, (slot.cursor >> SHIFT) + (1 if slot.whole else 0))
            if upto > first:
                answer = await self._api(
                    f"STREAM.PURGE.{self._stream}",
                    {"filter": f"{self._subject}.{slot.number}", "seq": upto},
                )
                removed += int(answer.get("purged", 0))
        await self._purge_old_traces(removed)
        return removed

    async def _purge_old_traces(self, removed: int) -> None:
        """Remove the trace runs of the events gone from the slots this process owns.

        After a pass that removed events, and for a while after it: a slot's
        last runs are published up to TRACE_FLUSH after its events may have
        gone. Not on every pass: each purge is a write on the server.
        """
        now = time.monotonic()
        if removed:
            self._purge_traces_until = now + 3 * TRACE_FLUSH
        if now > self._purge_traces_until:
            return
        try:
            if (await self._js.stream_info(self._trace_stream)).state.messages:
                for slot in list(self._slots.values()):
                    await self._purge_traces(str(slot.number), f"{self._subject}.{slot.number}")
                await self._purge_traces("other", f"{self._subject}.*")
        except Exception as exc:
            log.warning("retention: removing old trace runs failed: %s", _reason(exc))

    async def _first_since(self, at: float, last: int, stream: str | None = None) -> int:
        """The first message stored at or after ``at``: its sequence, or the last one's + 1."""
        when = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
        answer = await self._api(f"STREAM.MSG.GET.{stream or self._stream}", {"start_time": when})
        message = answer.get("message")
        return last + 1 if message is None else int(message["seq"])

    async def _api(self, request: str, body: dict[str, Any]) -> dict[str, Any]:
        """A JetStream API request that nats-py does not offer (or whose answer it drops)."""
        reply = await self._nc.request(
            f"$JS.API.{request}", codec.dumps(body), timeout=PUBLISH_TIMEOUT
        )
        answer: dict[str, Any] = codec.loads(reply.data)
        error = answer.get("error")
        if error is not None and error.get("err_code") != NO_MESSAGE:
            raise RulebusError(f"JetStream: {error.get('description')}")
        return answer

    # -- traces and history --------------------------------------------------

    def _trace_records(self, runs: Sequence[TraceRun]) -> list[tuple[str, dict[str, Any]]]:
        """Each run cut by slot (so that each slot's owner purges its own), with its subject."""
        out = []
        for run in runs:
            slots: dict[str, list[dict[str, Any]]] = {}
            for job in run.record["jobs"]:
                parts: dict[str, list[int]] = {}
                for seq in job["seqs"]:
                    read = self._slot_of.get(seq)
                    parts.setdefault("other" if read is None else str(read[0]), []).append(seq)
                for slot, seqs in parts.items():
                    part = {**job, "seqs": seqs}
                    if "errors" in job:
                        mine = {str(seq) for seq in seqs}
                        part["errors"] = {k: v for k, v in job["errors"].items() if k in mine}
                    slots.setdefault(slot, []).append(part)
            for slot, jobs in slots.items():
                record = {**run.record, "jobs": jobs, "at": run.at}
                out.append((f"{self._trace_subject}.{slot}", record))
        return out

    async def _flush_traces(self) -> None:
        try:
            while self._traces:
                await asyncio.sleep(TRACE_FLUSH)
                await self._publish_traces()
        finally:
            self._trace_flusher = None

    async def _publish_traces(self) -> None:
        """Publish the gathered trace runs; what fails is logged and lost, never a commit."""
        taken, self._traces = self._traces, {}
        messages = [
            (subject, codec.dumps(part))
            for subject, records in taken.items()
            for part in _trace_parts(records)
        ]
        sent = await asyncio.gather(
            *(
                self._js.publish(subject, data, timeout=PUBLISH_TIMEOUT)
                for subject, data in messages
            ),
            return_exceptions=True,
        )
        failed = [r for r in sent if isinstance(r, BaseException)]
        if failed:
            log.warning("keeping %d trace messages failed: %s", len(failed), _reason(failed[0]))

    async def record(self, runs: Sequence[TraceRun]) -> None:
        # Retries and replays: their slot's owner is not known here.
        records = [record for _, record in self._trace_records(runs)]
        for part in _trace_parts(records):
            await self._js.publish(
                f"{self._trace_subject}.other", codec.dumps(part), timeout=PUBLISH_TIMEOUT
            )

    async def _scan(self, stream: str, subject: str, since_ms: int | None) -> AsyncIterator[Any]:
        """The stream's messages on ``subject`` stored from ``since_ms`` on, up to its last now."""
        last = int((await self._js.stream_info(stream)).state.last_seq)
        seq = 1
        if since_ms is not None:
            seq = await self._first_since(since_ms / 1000, last, stream)
        while seq <= last:
            try:
                msg = await self._js.get_msg(stream, seq=seq, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return
            if int(msg.seq) > last:
                return
            yield msg
            seq = int(msg.seq) + 1

    async def _log_events(self, since_ms: int | None) -> AsyncIterator[Event]:
        async for msg in self._scan(self._stream, f"{self._subject}.*", since_ms):
            base = int(msg.seq) << SHIFT
            for i, envelope in enumerate(codec.loads(msg.data)):
                yield _event(envelope, base | i)

    async def traced(self, ids: Sequence[str], since_ms: int | None = None) -> dict[str, Traced]:
        wanted = set(ids)
        events: dict[int, Event] = {}
        async for event in self._log_events(since_ms):
            if event.id in wanted:
                events[event.seq] = event
                if len(events) == len(wanted):
                    break
        if not events:
            return {}
        runs: dict[int, list[tuple[float, dict[str, Any]]]] = {seq: [] for seq in events}
        # Runs are kept after their events: read on from the earliest one's time.
        first = min(event.ts for event in events.values()) - 60_000
        async for msg in self._scan(self._trace_stream, f"{self._trace_subject}.*", first):
            for record in codec.loads(msg.data):
                for seq in {seq for job in record["jobs"] for seq in job["seqs"]} & set(runs):
                    runs[seq].append((record["at"], record))
        letters = [letter for letter in await self.dead_letters() if letter.event.id in wanted]
        retries = []
        for key in await self._keys("", self.retry_kv):
            if key.split(".")[1] in {_hex(e.id) for e in events.values()}:
                with contextlib.suppress(nats.js.errors.KeyNotFoundError):
                    entry = await self.retry_kv.get(key)
                    if entry.value:
                        retries.append(self._retry_from(key, entry.value)[1])
        dispatched = (await self.stats()).dispatched  # a message's sequence
        return {
            event.id: Traced(
                event,
                sorted(runs[seq], key=lambda run: run[0]),
                [d for d in letters if d.event.id == event.id],
                [r for r in retries if r.event.id == event.id],
                seq >> SHIFT <= dispatched,
            )
            for seq, event in events.items()
        }

    async def history(self, since_ms: int | None, until_ms: int | None) -> AsyncIterator[Event]:
        async for event in self._log_events(since_ms):
            if (since_ms is None or event.ts >= since_ms) and (
                until_ms is None or event.ts <= until_ms
            ):
                yield event

    async def history_count(self, since_ms: int | None, until_ms: int | None) -> int | None:
        return None  # a message holds any number of events: only reading them tells

    async def replayed(self, replay: str) -> set[str]:
        # Delivered by some run with no error (a later run may redo what failed).
        done: set[int] = set()
        async for msg in self._scan(self._trace_stream, f"{self._trace_subject}.other", None):
            records = [r for r in codec.loads(msg.data) if r.get("replay") == replay]
            for job in (job for record in records for job in record["jobs"]):
                failed = {int(seq) for seq in job.get("errors", {})}
                done.update(seq for seq in job["seqs"] if seq not in failed)
        ids = set()
        for seq in sorted(done):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                msg = await self._js.get_msg(self._stream, seq=seq >> SHIFT)
                ids.add(codec.loads(msg.data)[seq & ((1 << SHIFT) - 1)]["id"])
        return ids

    async def _purge_traces(self, slot: str, log_subject: str) -> None:
        """Remove the trace runs of ``slot`` kept before its oldest event still in the log.

        A run is kept after the events it covers were stored, so one kept
        before the oldest event left covers none that is left.
        """
        try:
            oldest = await self._js.get_msg(self._stream, seq=1, subject=log_subject, next=True)
            since = oldest.time.timestamp() if oldest.time else time.time()
        except nats.js.errors.NotFoundError:
            since = time.time()  # nothing left: every run before now may go
        last = int((await self._js.stream_info(self._trace_stream)).state.last_seq)
        cut = await self._first_since(since, last, self._trace_stream)
        await self._api(
            f"STREAM.PURGE.{self._trace_stream}",
            {"filter": f"{self._trace_subject}.{slot}", "seq": cut},
        )

    # -- failed deliveries ---------------------------------------------------

    def _retry_key(self, number: int, retry: Retry) -> str:
        return f"{number}.{_hex(retry.event.id)}.{_hex(retry.rule)}"

    def _number(self, event: Event) -> int | None:
        read = self._slot_of.get(event.seq)
        return None if read is None else read[0]

    async def _put_retry(self, number: int | None, retry: Retry) -> None:
        if number is None:
            number = self._slot(retry.event)
        key = self._retry_key(number, retry)
        value = {
            "event": codec.Fragment(_envelope(retry.event)),
            "seq": retry.event.seq,
            "rule": retry.rule,
            "attempts": retry.attempts,
            "due_at": retry.due_at,
            "actions": retry.actions,
            "failures": [f.record() for f in retry.failures],
        }
        await self.retry_kv.put(key, codec.dumps(value))
        self._remember(key, number, retry)

    def _retry_from(self, key: str, data: bytes) -> tuple[int, Retry]:
        value = codec.loads(data)
        number = int(key.split(".")[0])
        event = _event(value["event"], value["seq"])
        failures = [Failure(**f) for f in value["failures"]]
        retry = Retry(
            event, value["rule"], value["attempts"], value["due_at"], value["actions"], failures
        )
        return number, retry

    async def _load_retries(self) -> None:
        while True:
            entry = await self._watcher.updates(timeout=PUBLISH_TIMEOUT)
            if entry is None:
                return  # the initial values are all in
            self._apply(entry)

    async def _watch_retries(self) -> None:
        while True:
            try:
                entry = await self._watcher.updates(timeout=60)
            except nats.errors.TimeoutError:
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("watching retries failed (%s); watching again", _reason(exc))
                await asyncio.sleep(RENEW)
                with contextlib.suppress(Exception):
                    self._watcher = await self.retry_kv.watch(">")
                continue
            if entry is not None:
                self._apply(entry)

    def _apply(self, entry: Any) -> None:
        if entry.operation in ("DEL", "PURGE") or not entry.value:
            self._forget(entry.key)
        else:
            self._remember(entry.key, *self._retry_from(entry.key, entry.value))

    def _remember(self, key: str, number: int, retry: Retry) -> None:
        self._retries[key] = (number, retry)
        self._retry_keys[(retry.event.id, retry.rule)] = key

    def _forget(self, key: str) -> None:
        held = self._retries.pop(key, None)
        if held is not None:
            self._retry_keys.pop((held[1].event.id, held[1].rule), None)

    async def due(self, now: float, limit: int) -> list[Retry]:
        slots = self._slots
        mine = [
            retry
            for number, retry in self._retries.values()
            if retry.due_at <= now
            and (slot := slots.get(number)) is not None
            and not slot.releasing
        ]
        mine.sort(key=lambda r: r.due_at)
        return mine[:limit]

    def _key_of(self, retry: Retry) -> str | None:
        return self._retry_keys.get((retry.event.id, retry.rule))

    async def reschedule(self, retry: Retry) -> None:
        key = self._key_of(retry)
        if key is None:
            return  # done or dead-lettered meanwhile (by the slot's new owner)
        await self._put_retry(int(key.split(".")[0]), retry)

    async def done(self, retry: Retry) -> None:
        key = self._key_of(retry)
        if key is not None:
            self._forget(key)
            await self._kv_delete(key, self.retry_kv)

    async def dead_letter(self, retry: Retry) -> int:
        key = self._key_of(retry)
        letter = {
            "event": codec.Fragment(_envelope(retry.event)),
            "seq": retry.event.seq,
            # A redrive goes to the same slot: the one its partition key chose.
            "slot": int(key.split(".")[0]) if key else self._slot(retry.event),
            "rule": retry.rule,
            "attempts": retry.attempts,
            "failed_at": time.time(),
            "failures": [f.as_dict() for f in retry.failures],
            "actions": retry.actions,  # what a redrive runs again
        }
        # The id makes a repeat of this same give-up (after a crash) a duplicate.
        msg_id = f"{retry.event.id}/{retry.rule}/{retry.attempts}/{retry.due_at}"
        # A repeat is acknowledged with the sequence of the letter it repeats.
        ack = await self._js.publish(
            self._dlq_subject, codec.dumps(letter), headers={"Nats-Msg-Id": msg_id}
        )
        await self.done(retry)
        return int(ack.seq)

    async def _letters(self) -> list[tuple[int, dict[str, Any]]]:
        out: list[tuple[int, dict[str, Any]]] = []
        seq = 1
        while True:
            try:
                msg = await self._js.get_msg(
                    self._dlq_stream, seq=seq, subject=self._dlq_subject, next=True
                )
            except nats.js.errors.NotFoundError:
                return out
            out.append((int(msg.seq), codec.loads(msg.data)))
            seq = int(msg.seq) + 1

    async def dead_letters(self) -> list[DeadLetter]:
        return [
            DeadLetter(
                id=seq,
                rule=letter["rule"],
                event=_event(letter["event"], letter["seq"]),
                attempts=letter["attempts"],
                failed_at=letter["failed_at"],
                failures=letter["failures"],
            )
            for seq, letter in await self._letters()
        ]

    async def _letters_by_id(self, ids: Sequence[int]) -> list[tuple[int, dict[str, Any]]]:
        """The dead letters with these ids (a read each, not the whole stream).

        ``NoDeadLetter`` if some ids name none.
        """
        out = []
        missing = []
        for seq in sorted(set(ids)):
            msg = None
            if seq >= 1:  # anything else is no sequence, and an error to ask for
                with contextlib.suppress(nats.js.errors.NotFoundError):
                    msg = await self._js.get_msg(self._dlq_stream, seq=seq)
            if msg is None:
                missing.append(seq)
            else:
                out.append((seq, codec.loads(msg.data)))
        if missing:
            raise NoDeadLetter(missing)
        return out

    async def _chosen_letters(self, ids: Sequence[int] | None) -> list[tuple[int, dict[str, Any]]]:
        return await (self._letters() if ids is None else self._letters_by_id(ids))

    async def _delete_letter(self, seq: int) -> None:
        # Another redrive or purge may have taken it meanwhile.
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self._js.delete_msg(self._dlq_stream, seq)

    async def redrive(self, ids: Sequence[int] | None) -> int:
        now = time.time()
        letters = await self._chosen_letters(ids)
        for seq, letter in letters:
            event = _event(letter["event"], letter["seq"])
            # Only the actions that failed run again, as in a retry.
            again = letter.get("actions", [])
            await self._put_retry(letter.get("slot"), Retry(event, letter["rule"], 0, now, again))
            await self._delete_letter(seq)
        return len(letters)

    async def purge(self, ids: Sequence[int] | None) -> int:
        now = time.time()
        letters = await self._chosen_letters(ids)
        for seq, _ in letters:
            await self._delete_letter(seq)
        runs = [
            purge_run(now, letter["seq"], letter["rule"], letter["attempts"])
            for _, letter in letters
        ]
        try:
            await self.record(runs)
        except Exception as exc:
            # The letters are gone either way; only the trace misses the purge.
            log.warning("keeping the trace of a purge failed: %s", _reason(exc))
        return len(letters)


def _trace_parts(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Trace runs in messages of at most TRACE_RUNS_PER_MESSAGE (under the server's max payload)."""
    return [
        records[i : i + TRACE_RUNS_PER_MESSAGE]
        for i in range(0, len(records), TRACE_RUNS_PER_MESSAGE)
    ]


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, nats.errors.NoServersError):
        return "no server answered"
    if isinstance(exc, nats.errors.TimeoutError | TimeoutError):
        return "timed out"
    return text


def from_url(
    url: str,
    data_dir: Path,
    *,
    engine: bool = False,
    keyer: Keyer | None = None,
    **options: Any,
) -> NatsBus:
    """``nats://host:port[,host:port…][?stream=NAME&slots=32&…]``: see docs/deploy.md."""
    return NatsBus(parse(url), engine=engine, keyer=keyer)
