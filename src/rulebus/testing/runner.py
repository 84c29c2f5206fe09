"""Run an app's test cases: its real rules, actions and functions, in a sandbox.

Each test starts from empty in-memory tables and buckets. Its events are
appended to a log in memory, then dispatched one at a time in log order, as
the engine does: each enabled rule whose filter matches is evaluated, and a
rule that fires runs its actions in order. What actions publish is appended
to the same log, so it goes through the rules in turn. A failed delivery is
not retried (nothing here fails for a while and then works): it goes to the
rule's error action at once, as after its last attempt.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rulebus.actions.base import Action, Delivery, Outbound, OutboundAction, Services
from rulebus.backends.base import Failure, Retry
from rulebus.engine.runner import (
    ERROR_ACTION_INDEX,
    context,
    enabled,
    error_payload,
    evaluate,
    failure,
    run_many,
)
from rulebus.events import Event
from rulebus.functions import FunctionHost
from rulebus.metrics import action_label
from rulebus.sql import NO_MATCH
from rulebus.template.model import App, RuleSpec
from rulebus.testing.sandbox import CapturingBus, CapturingNotifier, MemoryObjects, MemoryTables
from rulebus.testing.spec import TestCase

# Log actions write here: quiet, since a test says what it expects of the others.
_RULES_LOG = logging.getLogger("rulebus.testing.rules")
_RULES_LOG.addHandler(logging.NullHandler())
_RULES_LOG.propagate = False


@dataclass
class RuleRun:
    """What one rule did during a test: an output per event it fired on, and its failures."""

    outputs: list[Any] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


@dataclass
class Outcome:
    """Everything a test's events led to."""

    rules: dict[str, RuleRun]
    tables: MemoryTables
    objects: MemoryObjects
    notifier: CapturingNotifier
    published: list[Event]
    sent: list[Sent]


@dataclass(frozen=True)
class Sent:
    """A message an outbound action (amqp, http, mqtt…) would have sent: rendered, not sent."""

    rule: str
    action: str  # as metrics label it: kind:resource
    message: Outbound


class Sandbox:
    """One test's stores, notifier and log, and the app's rules dispatching into them."""

    def __init__(self, app: App, functions: FunctionHost) -> None:
        self.app = app
        self.rules = enabled(app)
        self.tables = MemoryTables()
        self.objects = MemoryObjects()
        self.notifier = CapturingNotifier(frozenset(app.notifications))
        self._queue: deque[Event] = deque()
        self.bus = CapturingBus(self._queue.append)
        self.services = Services(
            tables=self.tables,
            objects=self.objects,
            notifier=self.notifier,
            functions=functions,
            publish=self.bus.publish,
            log=_RULES_LOG,
        )
        self.runs = {name: RuleRun() for name in app.rules}
        self.sent: list[Sent] = []

    async def run(self, case: TestCase) -> Outcome:
        for table in self.app.tables.values():
            await self.tables.create_table(table.name, table.key)
        for bucket in self.app.buckets:
            await self.objects.create_bucket(bucket)
        for event in case.events:
            self.bus.append(dataclasses.replace(event))
        inputs = len(self.bus.log)
        while self._queue:
            await self._dispatch(self._queue.popleft())
        published = self.bus.log[inputs:]
        return Outcome(self.runs, self.tables, self.objects, self.notifier, published, self.sent)

    async def _dispatch(self, event: Event) -> None:
        ctx = context(event)
        for rule in self.rules.values():
            if not rule.compiled.topic_filter.matches(event.topic):
                continue
            output = evaluate(rule, event, ctx)
            if isinstance(output, Failure):
                self._failed(rule, event, [output])
                await self._give_up(rule, event, [], [output])
                continue
            if output is NO_MATCH:
                continue
            self.runs[rule.name].outputs.append(output)
            delivery = Delivery(event, rule.name, output, ctx, event.payload)
            failed: list[int] = []
            failures: list[Failure] = []
            for index, action in enumerate(rule.actions):
                error = await self._run(action, delivery, index)
                if error is not None:
                    failed.append(index)
                    failures.append(failure(action, delivery, error))
            if failures:
                self._failed(rule, event, failures)
                await self._give_up(rule, event, failed, failures)

    async def _run(self, action: Action, delivery: Delivery, index: int) -> Exception | None:
        """Run an action as the engine would, except that what would leave rulebus is kept."""
        if not isinstance(action, OutboundAction):
            (error,) = await run_many(action, [delivery], index, self.services)
            return error
        try:
            message = action.prepare(delivery, index)
        except Exception as exc:
            return exc
        self.sent.append(Sent(delivery.rule, action_label(action), message))
        return None

    def _failed(self, rule: RuleSpec, event: Event, failures: list[Failure]) -> None:
        for f in failures:
            what = "sql" if f.action == "sql" else f"{f.action} {f.resource}"
            self.runs[rule.name].failures.append(
                f"event {event.id} ({event.topic}): {what}: {f.message}"
            )

    async def _give_up(
        self, rule: RuleSpec, event: Event, failed: list[int], failures: list[Failure]
    ) -> None:
        """Run the rule's error action, as the engine does when it dead-letters a delivery."""
        action = rule.error_action
        if action is None:
            return
        retry = Retry(event, rule.name, 1, time.time(), failed, list(failures))
        payload = error_payload(rule.name, event, retry)
        delivery = Delivery(event, rule.name, payload, context(event), payload)
        error = await self._run(action, delivery, ERROR_ACTION_INDEX)
        if error is not None:
            f = failure(action, delivery, error)
            self._failed(rule, event, [Failure(f"error_action {f.action}", f.resource, f.message)])
