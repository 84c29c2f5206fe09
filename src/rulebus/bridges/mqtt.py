"""MQTT in: the app's subscriptions, appended to the bus as ``POST /topics`` would.

One connection per broker, an MQTT 5 session that outlives the process
(clean start off, with an expiry), so what arrives while rulebus is down
waits at the broker. A QoS 1 message is acknowledged (PUBACK) only once its
event is durably appended: a crash before that, and the broker sends it
again. Messages that arrive together are appended together (one commit),
and several such batches may be committing at once; their PUBACKs still go
out in the order the messages came.

A message that cannot become an event (not a JSON object, an id or a mapped
topic that is not valid) is acknowledged and dropped, counted as rejected:
sending it again would not change it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rulebus.actions.mqtt import HOPS_PROPERTY, BrokerSpec
from rulebus.api.ingest import CLIENT_ID, decode, encode, event_id, now_ms, render_levels
from rulebus.backends.base import EventLog
from rulebus.errors import BadInput, RulebusError
from rulebus.events import MAX_HOPS, Event, new_id
from rulebus.logs import Every
from rulebus.metrics import MqttMetrics
from rulebus.mqtt import CLIENT_ID_PROPERTY, MqttSpec, SubscriptionSpec, user_property
from rulebus.sql import EvalContext, validate_topic

if TYPE_CHECKING:
    import aiomqtt

log = logging.getLogger("rulebus.mqtt")

MAX_BATCH = 1000  # messages appended in one go
MAX_COMMITTING = 4  # batches being appended at once
BACKOFF = (0.5, 30.0)  # reconnect delay: first, most


class _Broker:
    """One broker's connection, subscriptions and what /admin/stats shows of it."""

    def __init__(self, spec: BrokerSpec, subscriptions: Sequence[SubscriptionSpec]) -> None:
        self.spec = spec
        self.subscriptions = subscriptions
        self.metrics = MqttMetrics(spec.name)
        self.connected = False
        self.since = time.time()
        self.error: str | None = None
        self.rejected: str | None = None  # why the last rejected message was
        self.rejections = Every(10.0)
        self.counts = dict.fromkeys(MqttMetrics.OUTCOMES, 0)

    def up(self) -> None:
        self.connected, self.since, self.error = True, time.time(), None
        self.metrics.connected(True)
        log.info("connected to %s as %s", self.spec.url, self.spec.client_id)

    def down(self, error: str) -> None:
        if self.connected or self.error is None:
            log.warning("%s: %s; reconnecting with backoff", self.spec.url, error)
        if self.connected:
            self.since = time.time()
        self.connected, self.error = False, error
        self.metrics.connected(False)

    def count(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n
        self.metrics.add(outcome, n)

    def stats(self) -> dict[str, Any]:
        return {
            "url": self.spec.url,
            "client_id": self.spec.client_id,
            "connected": self.connected,
            "since": _iso(self.since),
            "error": self.error,
            "messages": dict(self.counts),
            "last_rejected": self.rejected,
        }


class MqttBridge:
    """Runs the app's MQTT subscriptions in this process, appending to ``log``."""

    def __init__(self, spec: MqttSpec, log: EventLog) -> None:
        self.log = log
        self.brokers = [
            _Broker(broker, [s for s in spec.subscriptions if s.broker == name])
            for name, broker in spec.brokers.items()
            if any(s.broker == name for s in spec.subscriptions)
        ]
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._run(broker), name=f"mqtt {broker.spec.name}")
            for broker in self.brokers
        ]

    async def stop(self) -> None:
        """Disconnect once the batches being appended are acknowledged; the broker keeps
        the rest for the next start."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def stats(self) -> dict[str, Any]:
        return {broker.spec.name: broker.stats() for broker in self.brokers}

    async def _run(self, broker: _Broker) -> None:
        import aiomqtt
        from paho.mqtt.subscribeoptions import SubscribeOptions

        failures = 0
        while True:
            client = broker.spec.client(broker.spec.client_id, persistent=True)
            # aiomqtt has no manual acknowledgement yet (empicano/aiomqtt#345);
            # paho-mqtt under it has. Set before connecting: a resumed session's
            # messages come right after the CONNACK.
            client._client.manual_ack_set(True)
            try:
                async with client:
                    broker.up()
                    failures = 0
                    await client.subscribe(
                        [(s.filter.text, SubscribeOptions(qos=s.qos)) for s in broker.subscriptions]
                    )
                    await self._consume(client, broker)
            except aiomqtt.MqttError as exc:
                cause = f": {exc.__cause__}" if exc.__cause__ else ""
                broker.down(f"{exc or type(exc).__name__}{cause}")
            failures += 1
            delay = min(BACKOFF[1], BACKOFF[0] * 2 ** min(failures - 1, 10))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _consume(self, client: aiomqtt.Client, broker: _Broker) -> None:
        messages = client.messages
        committing: set[asyncio.Task[None]] = set()
        acked: asyncio.Future[None] | None = None  # the previous batch's PUBACKs went out
        slots = asyncio.Semaphore(MAX_COMMITTING)
        try:
            while True:
                batch = [await anext(messages)]
                while len(messages) and len(batch) < MAX_BATCH:
                    batch.append(await anext(messages))
                await slots.acquire()
                done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                task = asyncio.create_task(self._commit(client, broker, batch, acked, done))
                task.add_done_callback(lambda _: slots.release())
                committing.add(task)
                task.add_done_callback(committing.discard)
                acked = done
        finally:
            # Stopping or disconnected: let the appends in hand finish, so that
            # what is in the log gets its PUBACK if the connection still can.
            if committing:
                await asyncio.wait(committing, timeout=10)

    async def _commit(
        self,
        client: aiomqtt.Client,
        broker: _Broker,
        batch: list[aiomqtt.Message],
        previous: asyncio.Future[None] | None,
        done: asyncio.Future[None],
    ) -> None:
        try:
            events = []
            for message in batch:
                try:
                    events.append(self._event(broker, message))
                except BadInput as exc:
                    broker.count("rejected")
                    broker.rejected = f"{message.topic.value}: {exc.message}"
                    # A device sending garbage must not flood the log.
                    quiet = broker.rejections.passes()
                    if quiet is not None:
                        more = f" ({quiet} more since the last line)" if quiet else ""
                        log.warning("rejected a message on %s%s", broker.rejected, more)
            if events:
                appended = await self._append(broker, events)
                duplicates = sum(1 for a in appended if a.duplicate)
                broker.count("accepted", len(appended) - duplicates)
                broker.count("duplicate", duplicates)
            if previous is not None:
                await previous
            for message in batch:
                if message.qos:
                    client._client.ack(message.mid, message.qos)
        finally:
            done.set_result(None)

    async def _append(self, broker: _Broker, events: list[Event]) -> Sequence[Any]:
        """Append until it works: the messages stay unacknowledged meanwhile, and the
        broker sends no more than its window of them."""
        pause = 0.1
        while True:
            try:
                return await self.log.append(events)
            except RulebusError as exc:
                log.warning(
                    "cannot append %d events from %s: %s", len(events), broker.spec.url, exc
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    def _event(self, broker: _Broker, message: aiomqtt.Message) -> Event:
        mqtt_topic = message.topic.value
        sub = next((s for s in broker.subscriptions if s.filter.matches(mqtt_topic)), None)
        if sub is None:
            # The session remembers the subscriptions of an earlier app file.
            raise BadInput("no subscription of the app matches this topic")
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        body = decode(bytes(payload))
        if not isinstance(body, dict):
            raise BadInput("expected a JSON object")
        given = user_property(message.properties, CLIENT_ID_PROPERTY)
        client_id = given if given and CLIENT_ID.fullmatch(given) else broker.spec.client_id
        fresh = body.get(sub.id_field) is None
        if fresh:
            body[sub.id_field] = new_id()
        id_ = event_id(body[sub.id_field])
        if sub.topic_levels is None:
            topic = validate_topic(mqtt_topic)
        else:
            ctx = EvalContext(topic=mqtt_topic, client_id=client_id)
            topic = render_levels(sub.topic_levels, body, ctx)
        principal = f"mqtt:{broker.spec.name}"
        hops = user_property(message.properties, HOPS_PROPERTY)
        return Event(
            id_,
            topic,
            now_ms(),
            body,
            client_id,
            principal,
            raw=encode(body),
            hops=min(int(hops), MAX_HOPS) if hops and hops.isdigit() else 0,
            fresh_id=fresh,
        )


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
