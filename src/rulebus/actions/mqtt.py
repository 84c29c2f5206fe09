"""``mqtt``: publish the rule's output to an MQTT broker, as AWS IoT's republish reaches
MQTT clients.

One connection per broker per process, opened at the first send and shared
by every action naming that broker (and by the rules of a reloaded app).
A QoS 1 publish counts as sent once the broker's PUBACK is in.

Each message carries MQTT 5 user properties: ``rulebus-message-id`` (the
same on every retry of a delivery, for receivers to drop repeats) and
``rulebus-hops``. The bridge reads the hops back, so a rule that publishes
to a topic the app subscribes to stops after ``MAX_HOPS`` rounds, as
``republish`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rulebus import codec
from rulebus.actions.base import (
    Declared,
    Delivery,
    Outbound,
    OutboundAction,
    reference,
    render,
    template_option,
)
from rulebus.actions.registry import register
from rulebus.config.options import Options, constant_shape
from rulebus.errors import ActionError
from rulebus.mqtt import HOPS_PROPERTY, MESSAGE_ID_PROPERTY, BrokerSpec, read_broker
from rulebus.sql import Template

if TYPE_CHECKING:
    import aiomqtt

TIMEOUT = 10.0  # seconds to wait for a connection, or a PUBACK


@register
class MqttAction(OutboundAction):
    """Options: ``broker`` (a name from the ``mqtt`` section) or ``url``/``url_env``;
    ``topic`` (template); ``qos`` 0 or 1 (default 0); ``retain`` (default false)."""

    kind = "mqtt"

    def __init__(self, broker: BrokerSpec, topic: Template, qos: int, retain: bool) -> None:
        self.broker = broker
        self.topic = topic
        self.qos = qos
        self.retain = retain
        self.resource = f"{broker.name} {topic.text}"
        self._connection: _Connection | None = None

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> MqttAction:
        if opts.has("broker"):
            if opts.has("url") or opts.has("url_env"):
                opts.fail("broker", "give either broker or url, not both")
            broker = declared.brokers[reference(opts, "broker", declared.brokers, "broker")]
        elif opts.has("url") or opts.has("url_env"):
            root = Path(opts.source.file).parent
            broker = read_broker(opts, None, "rulebus", root, declared.warnings)
        else:
            opts.missing("broker", "the name of a broker of the mqtt section (or url)")
        topic = template_option(opts, "topic")
        assert topic is not None
        problem = topic_problem(constant_shape(topic.text))
        if problem is not None:
            opts.fail("topic", f"invalid MQTT topic {topic.text!r}: {problem}")
        qos = opts.integer("qos", 0)
        if qos not in (0, 1):
            opts.fail("qos", f"expected 0 or 1, got {qos}")
        return cls(broker, topic, qos, opts.flag("retain", False))

    def prepare(self, delivery: Delivery, index: int) -> Outbound:
        topic = render(self.topic, delivery, "topic")
        problem = topic_problem(topic)
        if problem is not None:
            raise ActionError(f"invalid MQTT topic {topic[:200]!r}: {problem}", retryable=False)
        details = {
            "broker": self.broker.url,
            "qos": self.qos,
            "retain": self.retain,
            "message_id": delivery.derived_id(index),
            "hops": delivery.next_hops(),
        }
        return Outbound(topic, delivery.output, details)

    async def send(self, messages: list[Outbound]) -> list[Exception | None]:
        if self._connection is None:
            self._connection = _Connection.shared(self.broker)
        try:
            client = await self._connection.client()
        except ActionError as exc:
            return [exc] * len(messages)
        results = await asyncio.gather(
            *(self._publish(client, message) for message in messages), return_exceptions=True
        )
        if any(isinstance(r, ActionError) and r.retryable for r in results):
            await self._connection.reset(client)
        return [r if isinstance(r, Exception) else None for r in results]

    async def _publish(self, client: aiomqtt.Client, message: Outbound) -> None:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        try:
            payload = codec.dumps(message.payload)
        except codec.EncodeError as exc:
            raise ActionError(f"cannot encode the output: {exc}", retryable=False) from None
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        properties.UserProperty = [
            (MESSAGE_ID_PROPERTY, message.details["message_id"]),
            (HOPS_PROPERTY, str(message.details["hops"])),
        ]
        properties.ContentType = "application/json"
        try:
            await client.publish(
                message.target,
                payload,
                qos=self.qos,
                retain=self.retain,
                properties=properties,
                timeout=TIMEOUT,
            )
        except aiomqtt.MqttError as exc:
            raise ActionError(f"mqtt {self.broker.url}: publish failed: {exc}") from None

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.release()
            self._connection = None


def topic_problem(topic: str) -> str | None:
    """What makes ``topic`` unfit to publish to in MQTT, or None."""
    if not topic:
        return "it is empty"
    if "+" in topic or "#" in topic:
        return "wildcards are for subscriptions"
    if "\x00" in topic:
        return "it contains a NUL character"
    if topic.startswith("$"):
        return "topics starting with '$' are the broker's own"
    if len(topic.encode("utf-8", "surrogatepass")) > 65535:
        return "it is longer than 65535 bytes"
    return None


class _Connection:
    """One publishing connection to a broker, shared in the process by the actions
    that use it (counted, closed with the last of them)."""

    _open: ClassVar[dict[BrokerSpec, _Connection]] = {}

    def __init__(self, broker: BrokerSpec) -> None:
        self.broker = broker
        self.users = 0
        self._client: aiomqtt.Client | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def shared(cls, broker: BrokerSpec) -> _Connection:
        connection = cls._open.get(broker)
        if connection is None:
            connection = cls._open[broker] = cls(broker)
        connection.users += 1
        return connection

    async def client(self) -> aiomqtt.Client:
        import aiomqtt

        async with self._lock:
            if self._client is None:
                # Not the bridge's client id: the broker would close the bridge's
                # session for it. Nothing is subscribed here, so no session is kept.
                client_id = f"{self.broker.client_id or 'rulebus'}-out-{os.getpid()}"
                client = self.broker.client(client_id, persistent=False)
                try:
                    await asyncio.wait_for(client.__aenter__(), TIMEOUT)
                except (aiomqtt.MqttError, TimeoutError) as exc:
                    why = str(exc) or "timed out"
                    raise ActionError(f"mqtt {self.broker.url}: cannot connect: {why}") from None
                self._client = client
            return self._client

    async def reset(self, client: aiomqtt.Client) -> None:
        """Drop a connection that failed; the next send connects again."""
        async with self._lock:
            if self._client is client:
                self._client = None
                await _disconnect(client)

    async def release(self) -> None:
        self.users -= 1
        if self.users > 0:
            return
        _Connection._open.pop(self.broker, None)
        async with self._lock:
            if self._client is not None:
                await _disconnect(self._client)
                self._client = None


async def _disconnect(client: aiomqtt.Client) -> None:
    import aiomqtt

    with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):  # already gone
        await asyncio.wait_for(client.__aexit__(None, None, None), TIMEOUT)
