"""MQTT brokers an app declares (its ``mqtt`` section), and connecting to them.

The bridge (``bridges/mqtt.py``) subscribes to them to bring messages in; the
``mqtt`` action (``actions/mqtt.py``) publishes to them. Both speak MQTT 5
through aiomqtt (paho-mqtt underneath), imported only when they connect.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rulebus.backends.registry import redact
from rulebus.config.options import Options, check_topic_template, placeholders
from rulebus.errors import SqlError
from rulebus.sql import Template, TopicFilter, compile_template

if TYPE_CHECKING:
    import aiomqtt

SCHEMES = {"mqtt": 1883, "mqtts": 8883}
# Publishers may name themselves in this MQTT 5 user property; it becomes the
# event's clientid() (brokers do not pass on the publisher's client id).
CLIENT_ID_PROPERTY = "clientid"
# What the mqtt action adds to each message: an id the same on every retry, and
# how many rules the event went through, which the bridge reads back to stop loops.
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
            timeout=10,
        )

    def _tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        return context


@dataclass(frozen=True)
class SubscriptionSpec:
    """MQTT messages matching ``filter`` on ``broker`` become events on ``topic``.

    ``topic`` holds one template per level, rendered from the MQTT topic
    (``${topic(2)}``) and the payload; None keeps the MQTT topic.
    """

    broker: str
    filter: TopicFilter
    topic: str | None
    topic_levels: tuple[Template, ...] | None
    qos: int
    id_field: str


@dataclass(frozen=True)
class MqttSpec:
    brokers: dict[str, BrokerSpec] = field(default_factory=dict)
    subscriptions: tuple[SubscriptionSpec, ...] = ()


def read_mqtt(opts: Options, app_name: str, root: Path, warnings: list[str]) -> MqttSpec:
    """The ``mqtt`` section: ``brokers`` by name, and ``subscriptions`` to them."""
    brokers_opts = opts.section("brokers")
    brokers = {}
    for name in brokers_opts.value:
        broker = brokers_opts.section(name)
        brokers[name] = read_broker(broker, name, f"rulebus-{app_name}-{name}", root, warnings)
        broker.done()
    subscriptions = opts.raw("subscriptions")
    if subscriptions is not None and not isinstance(subscriptions, list):
        opts.fail("subscriptions", "expected a list of subscriptions")
    subs = []
    for i, item in enumerate(subscriptions or ()):
        sub = Options(opts.source, (*opts.path, "subscriptions", i), item)
        subs.append(_subscription(sub, brokers))
        sub.done()
    opts.done()
    return MqttSpec(brokers, tuple(subs))


def read_broker(
    opts: Options, name: str | None, client_id: str, root: Path, warnings: list[str]
) -> BrokerSpec:
    """A broker's options: ``url`` or ``url_env``, ``client_id``, ``username_env`` and
    ``password_env``, ``tls: {ca, cert, key}``, ``keepalive``, ``session_expiry``.

    ``name`` None: a broker given by URL where it is used (an action's ``url``).
    """
    url = _url(opts, warnings)
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = -1
    whole = port != -1 and parts.path in ("", "/") and not parts.query
    if parts.scheme not in SCHEMES or not parts.hostname or not whole:
        key = "url" if opts.has("url") else "url_env"
        shown = repr(url) if key == "url" else f"the URL in {opts.value[key]}"
        opts.fail(key, f"expected mqtt://host:port or mqtts://host:port, got {shown}")
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
        port=port or SCHEMES[parts.scheme],
        tls=parts.scheme == "mqtts",
        ca=files["ca"],
        cert=files["cert"],
        key=files["key"],
        client_id=opts.text("client_id", client_id),
        username=_env(opts, "username_env", warnings) or _unquote(parts.username),
        password=_env(opts, "password_env", warnings) or _unquote(parts.password),
        keepalive=int(opts.duration("keepalive", 30)),
        session_expiry=int(opts.duration("session_expiry", 7 * 86400)),
    )


def _url(opts: Options, warnings: list[str]) -> str:
    literal = opts.optional_str("url")
    variable = opts.optional_str("url_env")
    if literal and variable:
        opts.fail("url_env", "give either url or url_env, not both")
    if variable:
        url = os.environ.get(variable)
        if not url:
            opts.fail("url_env", f"the environment variable {variable} is not set")
        return url
    if literal is None:
        opts.missing("url", "mqtt://host:port or mqtts://host:port (or url_env)")
    if urllib.parse.urlsplit(literal).password:
        _warn(
            opts, "url", "a password written in the app file: use url_env or password_env", warnings
        )
    return literal


def _env(opts: Options, key: str, warnings: list[str]) -> str | None:
    variable = opts.optional_str(key)
    if variable is None:
        return None
    value = os.environ.get(variable)
    if not value:
        _warn(opts, key, f"{variable} is not set", warnings)
    return value or None


def _warn(opts: Options, key: str, message: str, warnings: list[str]) -> None:
    # As actions.base.warning words it; not imported from there, since
    # actions/mqtt.py imports this module while the actions package loads.
    warnings.append(f"{opts.source.file}:{opts.source.line((*opts.path, key))}: {message}")


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


def _subscription(sub: Options, brokers: dict[str, BrokerSpec]) -> SubscriptionSpec:
    broker = sub.text("broker", required=True)
    if broker not in brokers:
        names = ", ".join(sorted(brokers)) or "none declared"
        sub.fail("broker", f"unknown broker {broker!r} (declared: {names})")
    text = sub.text("filter", required=True)
    try:
        topic_filter = TopicFilter(text)
    except SqlError as exc:
        sub.fail("filter", exc.message)
    if text.startswith("$"):
        sub.fail("filter", "topics starting with '$' are the broker's own")
    qos = sub.integer("qos", 1)
    if qos not in (0, 1):
        sub.fail("qos", f"expected 0 or 1, got {qos}")
    topic = sub.optional_str("topic")
    levels = None
    if topic is not None:
        check_topic_template(sub, "topic", topic)
        if any("/" in part for part in placeholders(topic)):
            sub.fail("topic", "a mapped topic may not use '/' inside ${…}: each level is one value")
        try:
            levels = tuple(compile_template(level) for level in topic.split("/"))
        except SqlError as exc:
            sub.fail("topic", f"invalid template: {exc}")
    return SubscriptionSpec(broker, topic_filter, topic, levels, qos, sub.text("id_field", "id"))


def user_property(properties: Any, name: str) -> str | None:
    """The value of an MQTT 5 user property of a message, if it has one."""
    for key, value in getattr(properties, "UserProperty", None) or ():
        if key == name:
            return str(value)
    return None
