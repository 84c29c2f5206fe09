"""An app's ``mqtt`` section: the brokers it declares and what the bridge subscribes to.

Brokers are read as the ``mqtt`` action reads a broker given by URL
(``actions/mqtt.py``, where connecting is too); the bridge
(``bridges/mqtt.py``) brings the subscriptions' messages in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rulebus.actions.base import Declared
from rulebus.actions.mqtt import BrokerSpec, read_broker
from rulebus.config.options import Options, check_topic_template, placeholders
from rulebus.errors import SqlError
from rulebus.sql import Template, TopicFilter, compile_template

# Publishers may name themselves in this MQTT 5 user property; it becomes the
# event's clientid() (brokers do not pass on the publisher's client id).
CLIENT_ID_PROPERTY = "clientid"


@dataclass(frozen=True)
class SubscriptionSpec:
    """MQTT messages matching ``filter`` on ``broker`` become events on ``topic``.

    ``topic`` holds one template per level, rendered from the MQTT topic
    (``${topic(2)}``) and the payload; None keeps the MQTT topic.
    """

    broker: str
    filter: TopicFilter
    topic: str | None
    topic_levels: tuple[Template, ...] | None = field(compare=False)  # ``topic`` compiled
    qos: int
    id_field: str


@dataclass(frozen=True)
class MqttSpec:
    brokers: dict[str, BrokerSpec] = field(default_factory=dict)
    subscriptions: tuple[SubscriptionSpec, ...] = ()


def read_mqtt(opts: Options, app_name: str, root: Path, declared: Declared) -> MqttSpec:
    """The ``mqtt`` section: ``brokers`` by name, and ``subscriptions`` to them."""
    brokers_opts = opts.section("brokers")
    brokers = {}
    for name in brokers_opts.value:
        broker = brokers_opts.section(name)
        brokers[name] = read_broker(broker, name, f"rulebus-{app_name}-{name}", root, declared)
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
