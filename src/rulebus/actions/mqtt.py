"""``mqtt``: publish the rule's output to an MQTT broker, as AWS IoT's republish reaches
MQTT clients; and the brokers an app declares, which the bridge (``bridges/mqtt.py``)
subscribes to as well.

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
import functools
import os
import ssl
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from rulebus.actions.base import (
    Declared,
    Delivery,
    Outbound,
    OutboundAction,
    encode_output,
    reference,
    render,
    template_option,
)
from rulebus.actions.registry import register
from rulebus.actions.remote import TIMEOUT, Connection, server_url
from rulebus.backends.registry import redact
from rulebus.config.options import Options, constant_shape
from rulebus.errors import ActionError
from rulebus.sql import Template

if TYPE_CHECKING:
    import aiomqtt

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
# What the action adds to each message: an id the same on every retry, and how
# many rules the event went through, which the bridge reads back to stop loops.
MESSAGE_ID_PROPERTY = "rulebus-message-id"
HOPS_PROPERTY = "rulebus-hops"
# How many QoS 1 messages the broker may have sent without their PUBACK: the
# bridge acknowledges only after the append, so this is its pipeline depth.
RECEIVE_MAXIMUM = 2000


@dataclass(frozen=True)
class BrokerSpec:
    """Where a broker is and how to log in; ``name`` is the app file's, or the URL."""

    name: str
    url: str  # without its password, for messages and /admin/stats
    host: str
    port: int
    tls: bool
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    client_id: str = ""
    username: str | None = None
    password: str | None = None
    keepalive: int = 30
    # How long the broker keeps the bridge's session (its subscriptions and the
    # QoS 1 messages that arrive) while the bridge is away.
    session_expiry: int = 7 * 86400

    def client(self, client_id: str, *, persistent: bool) -> aiomqtt.Client:
        """A client for this broker, not connected yet.

        ``persistent``: resume the session of ``client_id`` (clean start off,
        with an expiry), so messages queued while away arrive after a restart.
        """
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        properties.ReceiveMaximum = RECEIVE_MAXIMUM
        if persistent:
            properties.SessionExpiryInterval = self.session_expiry
        return aiomqtt.Client(
            self.host,
            self.port,
            identifier=client_id,
            username=self.username,
            password=self.password,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=not persistent,
            keepalive=self.keepalive,
            properties=properties,
            tls_context=self._tls_context() if self.tls else None,
            timeout=TIMEOUT,
        )

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        return context


def read_broker(
    opts: Options, name: str | None, client_id: str, root: Path, declared: Declared
) -> BrokerSpec:
    """A broker's options: ``url`` or ``url_env``, ``client_id``, ``username_env`` and
    ``password_env``, ``tls: {ca, cert, key}``, ``keepalive``, ``session_expiry``.

    ``name`` None: a broker given by URL where it is used (an action's ``url``).
    """
    url = server_url(opts, declared, tuple(SCHEMES))
    parts = urllib.parse.urlsplit(url)
    tls = opts.section("tls")
    files = {key: _file(tls, key, root) for key in ("ca", "cert", "key")}
    if files["key"] is not None and files["cert"] is None:
        tls.fail("key", "a key needs its cert")
    tls.done()
    if opts.has("tls") and parts.scheme != "mqtts":
        opts.fail("tls", "tls options are for an mqtts:// URL")
    return BrokerSpec(
        name=name or redact(url),
        url=redact(url),
        host=parts.hostname or "",
        port=parts.port or SCHEMES[parts.scheme],
        tls=parts.scheme == "mqtts",
        ca=files["ca"],
        cert=files["cert"],
        key=files["key"],
        client_id=opts.text("client_id", client_id),
        username=_env(opts, "username_env", declared) or _unquote(parts.username),
        password=_env(opts, "password_env", declared) or _unquote(parts.password),
        keepalive=int(opts.duration("keepalive", 30)),
        session_expiry=int(opts.duration("session_expiry", 7 * 86400)),
    )


def _env(opts: Options, key: str, declared: Declared) -> str | None:
    variable = opts.optional_str(key)
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        declared.warn(opts, key, f"{variable} is not set")
    return value or None


def _unquote(text: str | None) -> str | None:
    return urllib.parse.unquote(text) if text else None


def _file(opts: Options, key: str, root: Path) -> Path | None:
    text = opts.optional_str(key)
    if text is None:
        return None
    path = (root / text).resolve()
    if not path.is_file():
        opts.fail(key, f"no such file: {path}")
    return path


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
        self._shared: _Shared | None = None

    @classmethod
    def from_options(cls, opts: Options, declared: Declared) -> MqttAction:
        if opts.has("broker"):
            if opts.has("url") or opts.has("url_env"):
                opts.fail("broker", "give either broker or url, not both")
            broker = declared.brokers[reference(opts, "broker", declared.brokers, "broker")]
        elif opts.has("url") or opts.has("url_env"):
            root = Path(opts.source.file).parent
            broker = read_broker(opts, None, "rulebus", root, declared)
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
        if self._shared is None:
            self._shared = _Shared.use(self.broker)
        connection = self._shared.connection
        try:
            client = await connection.client()
        except ActionError as exc:
            return [exc] * len(messages)
        results = await asyncio.gather(
            *(self._publish(client, message) for message in messages), return_exceptions=True
        )
        if any(isinstance(r, ActionError) and r.retryable for r in results):
            await connection.reset(client)
        return [r if isinstance(r, Exception) else None for r in results]

    async def _publish(self, client: aiomqtt.Client, message: Outbound) -> None:
        import aiomqtt
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        payload = encode_output(message.payload)
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
        if self._shared is not None:
            await self._shared.release()
            self._shared = None


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


class _Shared:
    """A broker's publishing connection, shared in the process by the actions that use
    it; closed with the last of them."""

    _open: ClassVar[dict[BrokerSpec, _Shared]] = {}

    def __init__(self, broker: BrokerSpec) -> None:
        self.broker = broker
        self.users = 0
        self.connection: Connection[aiomqtt.Client] = Connection(
            functools.partial(_connect, broker), _disconnect
        )

    @classmethod
    def use(cls, broker: BrokerSpec) -> _Shared:
        shared = cls._open.get(broker)
        if shared is None:
            shared = cls._open[broker] = cls(broker)
        shared.users += 1
        return shared

    async def release(self) -> None:
        self.users -= 1
        if self.users == 0:
            _Shared._open.pop(self.broker, None)
            await self.connection.close()


async def _connect(broker: BrokerSpec) -> aiomqtt.Client:
    import aiomqtt

    # Not the bridge's client id: the broker would end the bridge's session for
    # it. Nothing is subscribed here, so no session is kept.
    client = broker.client(f"{broker.client_id or 'rulebus'}-out-{os.getpid()}", persistent=False)
    try:
        await asyncio.wait_for(client.__aenter__(), TIMEOUT)
    except (aiomqtt.MqttError, TimeoutError) as exc:
        why = str(exc) or "timed out"
        raise ActionError(f"mqtt {broker.url}: cannot connect: {why}") from None
    return client


async def _disconnect(client: aiomqtt.Client) -> None:
    await client.__aexit__(None, None, None)
