"""What an app file declares, after validation."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rulebus.egress import Egress

if TYPE_CHECKING:
    from rulebus.actions.base import Action
    from rulebus.mail import EmailSpec
    from rulebus.mqtt import MqttSpec
    from rulebus.sql import Rule, Template


@dataclass(frozen=True)
class TableSpec:
    name: str
    key: tuple[str, ...]


@dataclass(frozen=True)
class SubscriberSpec:
    """A webhook (``url`` set), an email subscriber (``email`` set) or the log."""

    kind: str
    url: str | None = None
    # Each signs every message; several at once while receivers move to a new one.
    secrets: tuple[str, ...] = ()
    timeout: float = 10.0
    # Extra headers (a value is a ``${}`` template or a constant) and the most
    # requests in flight to the URL's host and port (``actions/http.py``).
    headers: dict[str, Template | str] = field(default_factory=dict)
    concurrency: int = 64
    email: EmailSpec | None = None  # an email subscriber's server, recipients and subject


@dataclass(frozen=True)
class NotificationSpec:
    name: str
    subscribers: tuple[SubscriberSpec, ...]


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    handler: str
    timeout: float
    concurrency: int


@dataclass(frozen=True)
class RetrySpec:
    """How often and how patiently a failed action is retried before it is dead-lettered."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 60.0


@dataclass(frozen=True)
class RetentionSpec:
    """How long the event log keeps events that are done with; by default, for ever.

    An event goes once it is dispatched, has no retry or dead letter waiting,
    is older than ``duplicate_window``, and is older than ``max_age`` or
    among the oldest of a log bigger than ``max_size`` (bytes).
    ``compact_every`` is how often the engine looks.
    """

    max_age: float | None = None
    max_size: int | None = None
    duplicate_window: float = 120.0
    compact_every: float = 60.0

    @property
    def keeps_everything(self) -> bool:
        return self.max_age is None and self.max_size is None


@dataclass(frozen=True)
class RuleSpec:
    name: str
    sql: str
    sql_version: str
    compiled: Rule
    actions: tuple[Action, ...]
    error_action: Action | None
    enabled: bool
    retry: RetrySpec
    # Deliveries with the same rendered key go to one engine process, in order.
    partition_key: Template | None = None


@dataclass(frozen=True)
class RouteSpec:
    """``POST path`` publishes the body to ``topic``, one template per topic level."""

    path: str
    topic: str
    topic_levels: tuple[Template, ...]
    required: tuple[str, ...]
    id_field: str
    batch_path: str | None
    # "key": an API key with the ``ingest`` scope is required; "none": open to anyone.
    auth: str = "key"


@dataclass
class App:
    root: Path
    file: str
    name: str
    tables: dict[str, TableSpec] = field(default_factory=dict)
    buckets: tuple[str, ...] = ()
    notifications: dict[str, NotificationSpec] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)
    rules: dict[str, RuleSpec] = field(default_factory=dict)
    routes: tuple[RouteSpec, ...] = ()
    retry: RetrySpec = field(default_factory=RetrySpec)
    retention: RetentionSpec = field(default_factory=RetentionSpec)
    egress: Egress = field(default_factory=Egress)
    trace: bool = True  # record what dispatch does, for `rulebus trace` (`trace: {enabled: …}`)
    metrics: bool = True  # count for /metrics (`metrics: {enabled: …}`); read at start only
    warnings: list[str] = field(default_factory=list)  # valid, but probably not what was meant
    mqtt: MqttSpec | None = None  # brokers, and the subscriptions the API processes run
