"""Prometheus metrics: counted by every process of a host, served by its API at ``/metrics``.

``rulebus up`` is several processes (the API and its engine processes), and
``rulebus api`` and ``rulebus worker`` may run side by side on one data
directory. Each process counts into files of its own under
``DATA_DIR/metrics`` (prometheus_client's multiprocess mode: a counter is a
float in a memory-mapped file), and a scrape of any API process adds up the
files of them all. A process that dies leaves its files behind, so its counts
still add up after the supervisor restarted it; the files of processes that
are gone are removed when a top-level process (``up``, ``api``, ``worker``)
starts, which is a counter reset, as a restart of a single process would be.

The gauges that describe the whole bus (the dispatch lag, retries waiting,
dead letters) are not counted anywhere: a scrape asks the bus, so they are
the same whichever host answers, also on NATS.

The engine counts per batch, not per event: :class:`EngineMetrics` adds each
label set's total once per batch through children it keeps, so a batch of 512
events costs a few increments, not thousands.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    values,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from rulebus.errors import BadInput, Unavailable

if TYPE_CHECKING:
    from rulebus.actions.base import Action, Delivery
    from rulebus.backends.base import Bus, Failure, Retry
    from rulebus.template.model import RuleSpec

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # every Prometheus since 2.0 reads it
DIRECTORY = "metrics"  # under the data directory
ENV = "PROMETHEUS_MULTIPROC_DIR"

# Seconds. One observation is one call of an action: in dispatch a call covers
# all of a batch's deliveries of its rule, so calls take milliseconds to seconds.
ACTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

_FILE = re.compile(r"^[a-z_]+_(\d+)\.db$")  # prometheus_client's name: <type>_<pid>.db


class _Families:
    """The counters and the histogram; made once, after the process chose its directory."""

    def __init__(self) -> None:
        self.ingested = Counter(
            "rulebus_events_ingested",
            "Events received by the API, per route and outcome.",
            ["route", "status"],
            registry=None,
        )
        self.matches = Counter(
            "rulebus_rule_matches",
            "Events a rule fired for (its topic filter and WHERE matched).",
            ["rule"],
            registry=None,
        )
        self.runs = Counter(
            "rulebus_action_runs",
            "Runs of an action for one delivery: ok or failed; a failed run is then"
            " retried or dead_lettered.",
            ["rule", "action", "outcome"],
            registry=None,
        )
        self.replayed = Counter(
            "rulebus_replay_deliveries",
            "Deliveries made by rulebus replay (never by the engine), per rule and outcome:"
            " delivered, failed, or already_replayed by an earlier run of the same replay.",
            ["rule", "outcome"],
            registry=None,
        )
        self.mqtt_messages = Counter(
            "rulebus_mqtt_messages",
            "MQTT messages the bridge took from a broker, per outcome: accepted, duplicate"
            " (an event with its id was in the log), rejected (not a JSON object, or a bad"
            " topic or id).",
            ["broker", "outcome"],
            registry=None,
        )
        self.mqtt_connected = Gauge(
            "rulebus_mqtt_connected",
            "1 while the bridge is connected to the broker (in any live API process), else 0.",
            ["broker"],
            multiprocess_mode="livemax",
            registry=None,
        )
        self.seconds = Histogram(
            "rulebus_action_seconds",
            "Duration of one call of an action (in dispatch, over all of a batch's"
            " deliveries of the rule).",
            ["rule", "action"],
            buckets=ACTION_BUCKETS,
            registry=None,
        )


_families: _Families | None = None
_directory: Path | None = None


def directory(data_dir: Path) -> Path:
    return data_dir / DIRECTORY


def setup(data_dir: Path, *, owner: bool) -> Path:
    """Count into ``DATA_DIR/metrics`` from now on; returns the directory.

    ``owner``: a top-level process (not one a supervisor started), which
    first removes what processes that are gone left there.
    """
    global _families, _directory
    path = directory(data_dir)
    path.mkdir(parents=True, exist_ok=True)
    if owner:
        remove_dead(path)
    # prometheus_client picks its value class when first imported, from this
    # variable; the process imported it before it knew its data directory.
    os.environ[ENV] = str(path)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _families = _Families()
    _directory = path
    return path


def remove_dead(path: Path) -> None:
    """Remove the files of processes that no longer run."""
    for file in path.iterdir():
        match = _FILE.match(file.name)
        if match is not None and not _alive(int(match[1])):
            file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def process_died(pid: int) -> None:
    """For a supervisor whose child died: what prometheus_client keeps per live process.

    Counters and histograms stay: they still add up after the restart.
    """
    if _directory is not None:
        mark_process_dead(pid, str(_directory))  # type: ignore[no-untyped-call]


def enabled() -> bool:
    return _families is not None


def action_label(action: Action) -> str:
    """An action as its label shows it: ``kind:resource`` (``table:events``)."""
    resource = action.resource
    return action.kind if resource in ("", action.kind) else f"{action.kind}:{resource}"


class _Action:
    """The children of one action of one rule."""

    __slots__ = ("dead", "failed", "ok", "retried", "seconds")

    def __init__(self, families: _Families, rule: str, action: str) -> None:
        self.ok = families.runs.labels(rule, action, "ok")
        self.failed = families.runs.labels(rule, action, "failed")
        self.retried = families.runs.labels(rule, action, "retried")
        self.dead = families.runs.labels(rule, action, "dead_lettered")
        self.seconds = families.seconds.labels(rule, action)


class EngineMetrics:
    """What the engine counts; does nothing when metrics are off."""

    def __init__(self) -> None:
        self._families = _families
        self._actions: dict[tuple[str, int, int], _Action] = {}
        self._matches: dict[str, Any] = {}

    @property
    def on(self) -> bool:
        return self._families is not None

    def _action(self, rule: str, index: int, action: Action) -> _Action:
        # Keyed by the action object too: a reload may put another action at an index.
        key = (rule, index, id(action))
        children = self._actions.get(key)
        if children is None:
            assert self._families is not None
            children = self._actions[key] = _Action(self._families, rule, action_label(action))
        return children

    def matched_batch(
        self,
        groups: Iterable[tuple[RuleSpec, Sequence[Delivery]]],
        keyed: Iterable[str],
        failed: Iterable[Retry],
    ) -> None:
        """Add, per rule, the events of a batch it fired for.

        ``groups``: the deliveries per rule; ``keyed``: a rule name per keyed
        delivery; ``failed``: the events whose SQL failed to evaluate.
        """
        counts = Tally({rule.name: len(deliveries) for rule, deliveries in groups})
        counts.update(keyed)
        counts.update(retry.rule for retry in failed)
        self.matched(counts.items())

    def matched(self, counts: Iterable[tuple[str, int]]) -> None:
        """Add, per rule, the events it fired for."""
        if self._families is None:
            return
        for rule, count in counts:
            child = self._matches.get(rule)
            if child is None:
                child = self._matches[rule] = self._families.matches.labels(rule)
            child.inc(count)

    async def timed(
        self, rule: str, index: int, action: Action, job: Awaitable[list[Exception | None]]
    ) -> list[Exception | None]:
        """Await one call of an action over a batch's deliveries, and count it."""
        started = time.perf_counter()
        errors = await job
        children = self._action(rule, index, action)
        children.seconds.observe(time.perf_counter() - started)
        failed = len(errors) - errors.count(None)
        if failed < len(errors):
            children.ok.inc(len(errors) - failed)
        if failed:
            children.failed.inc(failed)
        return errors

    def attempt(
        self,
        rule: str,
        actions: Sequence[Action],
        indices: Iterable[int],
        failed: Sequence[tuple[int, Failure]],
        started: float,
    ) -> None:
        """Count one attempt of one delivery outside a batch (a retry, a keyed delivery)."""
        if self._families is None:
            return
        seconds = time.perf_counter() - started
        bad = {index for index, _ in failed}
        for index in indices:
            if index >= len(actions):
                continue
            children = self._action(rule, index, actions[index])
            children.seconds.observe(seconds)
            (children.failed if index in bad else children.ok).inc()

    def after_failure(
        self, rule: str, actions: Sequence[Action], indices: Iterable[int], final: bool
    ) -> None:
        """A delivery's failed actions: to be retried, or given up (a dead letter)."""
        if self._families is None:
            return
        for index in indices:
            if index < len(actions):
                children = self._action(rule, index, actions[index])
                (children.dead if final else children.retried).inc()


def count_replay(rule: str, delivered: int, failed: int, already: int) -> None:
    """Add what one run of ``rulebus replay`` delivered, kept apart from the engine's runs."""
    if _families is None:
        return
    for outcome, count in (
        ("delivered", delivered),
        ("failed", failed),
        ("already_replayed", already),
    ):
        _families.replayed.labels(rule, outcome).inc(count)


class IngestMetrics:
    """What the API counts per route: events accepted, duplicate, rejected, unavailable."""

    STATUSES = ("accepted", "duplicate", "rejected", "unavailable")

    def __init__(self, route: str) -> None:
        self.on = _families is not None
        if _families is not None:
            self._children = {s: _families.ingested.labels(route, s) for s in self.STATUSES}

    def add(self, status: str, count: int = 1) -> None:
        if self.on and count:
            self._children[status].inc(count)

    def add_batch(self, results: Sequence[dict[str, Any]], rejected: int) -> None:
        """Count a batch's items from its answer: each is an error, or stored (maybe before)."""
        if not self.on:
            return
        duplicate = sum(1 for r in results if r.get("duplicate"))
        self.add("accepted", len(results) - rejected - duplicate)
        self.add("duplicate", duplicate)
        self.add("rejected", rejected)

    def refused(self, error: Exception, count: int = 1) -> None:
        """Count events a request could not store: invalid (4xx) or not now (503)."""
        if isinstance(error, Unavailable):
            self.add("unavailable", count)
        elif isinstance(error, BadInput):
            self.add("rejected", count)


class MqttMetrics:
    """What the MQTT bridge counts per broker: messages by outcome, and being connected."""

    OUTCOMES = ("accepted", "duplicate", "rejected")

    def __init__(self, broker: str) -> None:
        self.on = _families is not None
        if _families is not None:
            self._children = {o: _families.mqtt_messages.labels(broker, o) for o in self.OUTCOMES}
            self._connected = _families.mqtt_connected.labels(broker)
            self._connected.set(0)

    def add(self, outcome: str, count: int = 1) -> None:
        if self.on and count:
            self._children[outcome].inc(count)

    def connected(self, up: bool) -> None:
        if self.on:
            self._connected.set(1 if up else 0)


class _Gauges:
    """Scrape-time gauges, computed before the (synchronous) collection."""

    def __init__(self, gauges: list[Metric]) -> None:
        self._gauges = gauges

    def collect(self) -> Iterator[Metric]:
        yield from self._gauges


async def bus_gauges(bus: Bus) -> list[Metric]:
    """The gauges of the whole bus, read from it now."""
    stats = await bus.stats()
    since = await bus.pending_since()
    lag = 0.0 if since is None else max(0.0, time.time() - since)
    return [
        _gauge(
            "rulebus_dispatch_lag_seconds",
            "Age of the oldest event not dispatched to its rules yet (0: none waits).",
            lag,
        ),
        _gauge("rulebus_retries_pending", "Deliveries waiting for a retry.", stats.retrying),
        _gauge("rulebus_dead_letters", "Deliveries kept as dead letters.", stats.dead_letters),
    ]


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


async def exposition(bus: Bus) -> bytes:
    """The text of ``/metrics``: the host's counters and the bus's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if _directory is not None:
        MultiProcessCollector(registry, str(_directory))  # type: ignore[no-untyped-call]
    registry.register(_Gauges(await bus_gauges(bus)))
    return generate_latest(registry)
