"""Running past events from the log through a rule (``rulebus replay``).

The rule is taken from the app file as it is now, so a new or changed rule
can be tried on history. A replay has an id made of the rule's name and SQL,
the range and the topic filter, as given: the same replay run twice has the
same id. Its deliveries take their ids from it (``ReplayDelivery``), so
webhooks carry the same ``webhook-id`` and events a function publishes the
same ids; table rows and objects are keyed by the rule's own templates. And
events whose deliveries by this replay all succeeded are skipped the next
time, so running a replay again writes only what failed before.

Failed deliveries are reported (counted, and each printed with its errors);
they are not retried nor dead-lettered, and the rule's error action does not
run: the replay is the retry, since running it again delivers exactly the
events that failed. Each batch of deliveries is kept as a trace run of kind
``replay``, so traces show them apart from the dispatch.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rulebus.actions.base import Delivery, Services
from rulebus.backends.base import Bus, Failure, TraceRun
from rulebus.engine.runner import context, evaluate, run_many
from rulebus.engine.trace import Batch, app_version, error_text, sql_hash
from rulebus.errors import BadInput
from rulebus.events import Event, name_id
from rulebus.sql import NO_MATCH, TopicFilter
from rulebus.template.model import App, RuleSpec

_REPLAYS = uuid.UUID("0d7c9b1e-5f53-4a86-b0a5-3f0f6a52c1d4")
_REPLAYED = uuid.UUID("a41f0c37-2b6e-4c8d-9e61-8d2b7c0e5f19")
BATCH = 256  # deliveries run together, as the engine's batches do
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


@dataclass(slots=True)
class ReplayDelivery(Delivery):
    """A delivery made by a replay: what it derives (ids of published events,
    webhook ids) comes from the replay, not from the dispatch."""

    replay: str = ""

    def derived_id(self, action_index: int, n: int = 0) -> str:
        return replay_derived_id(self.replay, self.event.id, self.rule, action_index, n)


def replay_derived_id(replay: str, event_id: str, rule: str, action_index: int, n: int) -> str:
    return name_id(_REPLAYED, f"{replay}/{event_id}/{rule}/{action_index}/{n}")


def parse_time(text: str, what: str, now: float | None = None) -> int:
    """Milliseconds since the epoch for ``--since``/``--until``: ISO 8601, or an age (``30m``)."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match is not None:
        ago = float(match.group(1)) * _UNITS[match.group(2)]
        return int(((time.time() if now is None else now) - ago) * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise BadInput(
            f"invalid {what} {text!r}: expected ISO 8601 (2026-12-05T12:00:00Z)"
            " or an age such as 90s, 30m, 1h or 2d"
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # local time, as a person typing it means
    return int(moment.timestamp() * 1000)


def parse_filter(text: str) -> TopicFilter:
    try:
        return TopicFilter(text)
    except Exception as exc:
        raise BadInput(f"--topic: {exc}") from None


def replay_id(rule: RuleSpec, since: str | None, until: str | None, topic: str | None) -> str:
    """The id of a replay: the same for the same rule (name and SQL), range and filter."""
    given = "\n".join([rule.name, sql_hash(rule), since or "", until or "", topic or ""])
    return name_id(_REPLAYS, given)


@dataclass
class Counts:
    """What a replay did; ``errors`` counts SQL errors and failed deliveries."""

    read: int = 0
    matched: int = 0
    not_matched: int = 0
    errors: int = 0
    skipped: int = 0  # delivered by an earlier run of the same replay
    delivered: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def summary(self, dry_run: bool) -> str:
        parts = [
            f"read {self.read}",
            f"matched {self.matched}",
            f"not matched {self.not_matched}",
            f"errors {self.errors}",
        ]
        if not dry_run:
            parts += [f"delivered {self.delivered}", f"already replayed {self.skipped}"]
        return ", ".join(parts)


def describe(rule: RuleSpec) -> list[dict[str, Any]]:
    """What the rule's actions would do, as a dry run prints it."""
    return [
        {"index": i, "action": action.kind, "resource": action.resource}
        for i, action in enumerate(rule.actions)
    ]


class Replay:
    """One replay of ``rule`` over the events of ``bus`` in a time range and topic filter."""

    def __init__(
        self,
        app: App,
        rule: RuleSpec,
        bus: Bus,
        *,
        since_ms: int | None,
        until_ms: int | None,
        topic: TopicFilter | None,
        id: str,
        services: Services | None,
    ) -> None:
        self.app = app
        self.rule = rule
        self.bus = bus
        self.since_ms = since_ms
        self.until_ms = until_ms
        self.topic = topic
        self.id = id
        self.services = services  # None: a dry run, which runs no action
        self.counts = Counts()
        self._version = app_version(app.rules)
        self._sql = sql_hash(rule)

    async def run(
        self,
        on_event: Callable[[dict[str, Any]], None],
        advance: Callable[[int], None],
    ) -> Counts:
        """Replay every event; ``on_event`` gets each line to print, ``advance`` the progress."""
        done = set() if self.services is None else await self.bus.replayed(self.id)
        pending: list[ReplayDelivery] = []
        async for event in self.bus.history(self.since_ms, self.until_ms):
            if self.topic is not None and not self.topic.matches(event.topic):
                advance(1)
                continue
            self.counts.read += 1
            delivery = self._evaluate(event, on_event)
            if delivery is not None:
                if event.id in done:
                    self.counts.skipped += 1
                elif self.services is not None:
                    pending.append(delivery)
            if len(pending) >= BATCH:
                await self._deliver(pending, on_event)
                pending = []
            advance(1)
        if pending:
            await self._deliver(pending, on_event)
        return self.counts

    def _evaluate(
        self, event: Event, on_event: Callable[[dict[str, Any]], None]
    ) -> ReplayDelivery | None:
        rule = self.rule
        if not rule.compiled.topic_filter.matches(event.topic):
            self.counts.not_matched += 1
            return None
        ctx = context(event)
        output = evaluate(rule, event, ctx)
        if output is NO_MATCH:
            self.counts.not_matched += 1
            return None
        line: dict[str, Any] = {"event": event.id, "topic": event.topic}
        if isinstance(output, Failure):
            self.counts.errors += 1
            on_event({**line, "error": output.message})
            return None
        self.counts.matched += 1
        if self.services is None:
            on_event({**line, "output": output, "actions": describe(rule)})
        return ReplayDelivery(event, rule.name, output, ctx, event.payload, self.id)

    async def _deliver(
        self, deliveries: Sequence[ReplayDelivery], on_event: Callable[[dict[str, Any]], None]
    ) -> None:
        assert self.services is not None
        batch = Batch()
        rule = self.rule
        services = self.services
        jobs = [
            self._timed(batch, index, deliveries, run_many(action, deliveries, index, services))
            for index, action in enumerate(rule.actions)
        ]
        results = await asyncio.gather(*jobs)
        await self.services.objects.flush()
        for position, delivery in enumerate(deliveries):
            errors = [
                {"action": index, "error": error_text(error)}
                for index, found in enumerate(results)
                if (error := found[position]) is not None
            ]
            if errors:
                self.counts.errors += 1
                failure = {"event": delivery.event.id, "failed": errors}
                self.counts.failures.append(failure)
                on_event(failure)
            else:
                self.counts.delivered += 1
        run: TraceRun = batch.run(self._version, "replay", self.id)
        try:
            await self.bus.record([run])
        except Exception as exc:
            # Kept or not, the deliveries happened; only the skip on a rerun is lost.
            on_event({"warning": f"could not keep the replay's trace: {exc}"})

    async def _timed(
        self, batch: Batch, index: int, deliveries: Sequence[ReplayDelivery], work: Any
    ) -> list[Exception | None]:
        started = time.perf_counter()
        errors: list[Exception | None] = await work
        batch.add(self.rule.name, self._sql, 1, deliveries, index, started, errors)
        return errors
