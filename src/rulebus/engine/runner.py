"""The engine: dispatch events from the bus to their rules, retry, dead-letter.

The dispatcher reads the log in batches. For each event it asks the router
for the rules whose filter matches and evaluates each rule's compiled SQL;
each action then gets all of the batch's deliveries at once. Several batches
are delivered at a time. The recorder makes their outcome durable in log
order: failed deliveries are stored for a retry before the bus acknowledges
the events, so a crash at any point re-delivers (at least once) and never
forgets.

Deliveries of a rule with a partition key run one at a time per key, in log
order, each retried in place until it succeeds or is dead-lettered, as a
Kinesis shard is: the bus brings all of a key's events to one process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any

from rulebus.actions.base import Action, Delivery, Services
from rulebus.backends.base import Bus, Failure, Retry
from rulebus.engine.retry import backoff
from rulebus.engine.router import Router
from rulebus.engine.trace import Recorder
from rulebus.errors import ActionError, NotFound, RulebusError
from rulebus.events import Event
from rulebus.metrics import EngineMetrics, action_label
from rulebus.sql import NO_MATCH, EvalContext
from rulebus.template.model import App, RuleSpec

log = logging.getLogger("rulebus.engine")

BATCH_SIZE = 512
WINDOW = 4  # batches delivered at once by each engine process
MIN_POLL = 0.001  # seconds: the first look for events other processes wrote, when idle
IDLE_POLL = 0.02  # and the longest wait between looks
# After a batch that was not full, wait this long before reading again, so
# the next batch is bigger. Each batch costs commits and thread hops whatever
# its size; at a few thousand events a second, batches of a handful of events
# made a worker spend several times more CPU per event than full ones do.
# The batch in hand is never held back, so an event after a quiet spell goes
# at once; only those arriving during the wait can wait up to LINGER. With
# 15 ms instead of 5, single-event ingest (figure 1, where the workers share
# the cores with the API) went from about 4,000 to 4,700-5,200 requests/s,
# and latency at 5,000 events/s was no worse (p99 49 against 51 ms).
LINGER = 0.015
RETRY_POLL = 0.5
ERROR_ACTION_INDEX = -1  # the index an error action runs with (the rule's actions count from 0)
# The dispatch position is committed at most this often (sooner when the
# window is full). It only bounds what a crash re-delivers, while each commit
# holds the bus's write lock that ingest needs too.
RECORD_EVERY = 0.05  # seconds


def context(event: Event) -> EvalContext:
    return EvalContext(
        topic=event.topic,
        client_id=event.client_id,
        principal=event.principal,
        timestamp=event.ts,
        trace_id=event.id,
    )


class Engine:
    """Runs an app's enabled rules against a bus until stopped."""

    def __init__(self, app: App, bus: Bus, services: Services) -> None:
        self.app = app
        self.bus = bus
        self.services = services
        self.rules = enabled(app)
        self.router: Router[RuleSpec] = Router(
            (rule.compiled.topic_filter.levels, rule) for rule in self.rules.values()
        )
        self._starts: dict[str, int] = {}
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._inflight: deque[tuple[list[Event], asyncio.Task[list[Retry]]]] = deque()
        self._delivered = asyncio.Event()  # a batch finished delivering
        self._progress = asyncio.Event()  # the recorder freed room in the window
        self._dispatched_more = asyncio.Event()  # the dispatcher added a batch
        self._key_tails: dict[tuple[str, str], asyncio.Future[None]] = {}  # last per key
        self.trace = Recorder(app, bus, enabled=app.trace)  # for `rulebus trace`
        self.metrics = EngineMetrics()  # for /metrics

    async def start(self) -> None:
        self._starts = await self.bus.start(self.rules)
        self._tasks = [
            asyncio.create_task(self._dispatch_loop(), name="dispatcher"),
            asyncio.create_task(self._retry_loop(), name="retrier"),
        ]

    async def stop(self) -> None:
        """Finish the batch in hand, record its state, and stop."""
        self._stopping.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.trace.flush()

    def use(self, app: App, starts: dict[str, int]) -> None:
        """Run ``app``'s rules from the next batch on; ``starts`` from ``Bus.rule_starts``.

        Batches already being delivered finish with the rules they started
        with; retries look their rule up when they are due, so a removed or
        disabled rule's retries end as dead letters that say so.
        """
        rules = enabled(app)
        self.router = Router((rule.compiled.topic_filter.levels, rule) for rule in rules.values())
        self.app, self.rules, self._starts = app, rules, starts
        self.trace.use(app)

    # -- dispatch ---------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        # Up to WINDOW batches are delivered at once, so a slow action in one
        # batch does not idle the rest. The recorder makes their outcome
        # durable in log order, so the dispatch position never passes an
        # unfinished batch; a full window is the back-pressure on reading.
        idle = MIN_POLL
        recorder = asyncio.create_task(self._record_loop(), name="recorder")
        try:
            while not self._stopping.is_set():
                if len(self._inflight) >= WINDOW:
                    self._progress.clear()
                    await self._wait(self._progress.wait())
                    continue
                events = await self.bus.read(BATCH_SIZE)
                if events:
                    task = asyncio.create_task(self._deliver(events))
                    self._inflight.append((events, task))
                    self._dispatched_more.set()
                    task.add_done_callback(lambda _: self._delivered.set())
                    idle = MIN_POLL
                    if len(events) < BATCH_SIZE:
                        await self._wait(asyncio.sleep(LINGER))
                    continue
                # Appends from this process wake the dispatcher at once; those
                # of other processes (an API process, ``rulebus publish``) are
                # found by polling, quickly after recent traffic, then lazily.
                idle = min(idle * 2, IDLE_POLL)
                await self._wait(self.bus.wait(idle))
        finally:
            self._delivered.set()
            await recorder

    async def _wait(self, work: Awaitable[Any], timeout: float | None = None) -> None:
        """Wait for ``work``, until the engine stops or ``timeout``, whichever is first."""
        waits = {asyncio.ensure_future(work), asyncio.ensure_future(self._stopping.wait())}
        _, pending = await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for future in pending:
            future.cancel()

    async def _window_full(self) -> None:
        while len(self._inflight) < WINDOW - 1:
            self._dispatched_more.clear()
            await self._dispatched_more.wait()

    async def _record_loop(self) -> None:
        """Record delivered batches in log order, several in one commit when they are ready."""
        inflight = self._inflight
        while inflight or not self._stopping.is_set():
            if not inflight or not inflight[0][1].done():
                self._delivered.clear()
                if inflight and inflight[0][1].done():
                    continue
                if not inflight and self._stopping.is_set():
                    break
                await self._delivered.wait()
                continue
            done = []
            while inflight and inflight[0][1].done():
                events, task = inflight[0]
                if task.exception() is not None:
                    break
                done.append(inflight.popleft())
            if not done and self._stopping.is_set():
                # Stopping: what crashed stays unrecorded, for the next start.
                log.warning("stopping with events from %s not recorded", inflight[0][0][0].id)
                break
            if not done:
                # The oldest batch crashed: nothing of it was recorded, so
                # deliver it again after a pause (actions are idempotent).
                events, task = inflight[0]
                log.error(
                    "delivering events up to %s failed; delivering them again",
                    events[-1].id,
                    exc_info=task.exception(),
                )
                await asyncio.sleep(1)
                retry = asyncio.create_task(self._deliver(events))
                retry.add_done_callback(lambda _: self._delivered.set())
                inflight[0] = (events, retry)
                continue
            await self._record(
                [events for events, _ in done], [r for _, task in done for r in task.result()]
            )
            self._progress.set()
            if len(inflight) < WINDOW - 1:
                await self._wait(self._window_full(), RECORD_EVERY)

    async def _record(self, batches: list[list[Event]], retries: list[Retry]) -> None:
        """Make delivered batches' outcome durable and move the dispatch position past them."""
        events = batches[0] if len(batches) == 1 else [e for batch in batches for e in batch]
        runs = self.trace.take(batches)
        while True:
            try:
                await self.services.objects.flush()
                await self.bus.commit(events, retries, runs)
                return
            except Exception:
                # Nothing was recorded; the deliveries' results are still in
                # hand, so only recording is tried again.
                log.exception(
                    "recording dispatch up to event %s failed; trying again", events[-1].id
                )
                await asyncio.sleep(1)

    async def _deliver(self, events: list[Event]) -> list[Retry]:
        """Evaluate and deliver a batch; returns the deliveries that need a retry."""
        groups: dict[str, tuple[RuleSpec, list[Delivery]]] = {}
        retries: list[Retry] = []
        keyed: list[asyncio.Future[None]] = []
        keyed_rules: list[str] = []  # for metrics
        now = time.time()
        starts = self._starts
        trace = self.trace.batch(events)
        for event in events:
            rules = self.router.match(event.topic)
            if not rules:
                continue
            ctx = context(event)
            for rule in rules:
                if event.seq <= starts[rule.name]:
                    continue
                output = evaluate(rule, event, ctx)
                if isinstance(output, Failure):
                    retries.append(Retry(event, rule.name, 1, now, [], [output]))
                    continue
                if output is not NO_MATCH and rule.partition_key is not None:
                    keyed_rules.append(rule.name)
                    keyed.append(
                        self._in_key_order(
                            rule, Delivery(event, rule.name, output, ctx, event.payload)
                        )
                    )
                elif output is not NO_MATCH:
                    group = groups.get(rule.name)
                    if group is None:
                        group = groups[rule.name] = (rule, [])
                    group[1].append(Delivery(event, rule.name, output, ctx, event.payload))
        if self.metrics.on:
            self.metrics.matched_batch(groups.values(), keyed_rules, retries)
        # Each action gets all of its deliveries in the batch at once, so it
        # can use one transaction or one thread hop for all of them.
        jobs = []
        owners = []
        for rule, deliveries in groups.values():
            for index, action in enumerate(rule.actions):
                job = run_many(action, deliveries, index, self.services)
                if self.metrics.on:
                    job = self.metrics.timed(rule.name, index, action, job)
                if trace is not None:
                    job = self.trace.timed(trace, rule.name, index, deliveries, job)
                jobs.append(job)
                owners.append((rule, index, deliveries))
        failed: dict[int, tuple[RuleSpec, Delivery, list[tuple[int, Failure]]]] = {}
        results = await asyncio.gather(*jobs)
        if keyed:
            await asyncio.gather(*keyed)
        for (rule, index, deliveries), errors in zip(owners, results, strict=True):
            for delivery, error in zip(deliveries, errors, strict=True):
                if error is not None:
                    entry = failed.setdefault(id(delivery), (rule, delivery, []))
                    entry[2].append((index, failure(rule.actions[index], delivery, error)))
        for rule, delivery, failures in failed.values():
            retries.append(self._retry(delivery.event, rule, 1, failures, now))
        return retries

    def _in_key_order(self, rule: RuleSpec, delivery: Delivery) -> asyncio.Future[None]:
        """Run a keyed delivery after the previous one of its key has finished."""
        assert rule.partition_key is not None
        try:
            key = rule.partition_key.render(delivery.input, delivery.ctx)
        except Exception:
            key = ""  # as the bus partitioned it: see rulebus.engine.keys
        chain = (rule.name, key)
        previous = self._key_tails.get(chain)
        task = asyncio.ensure_future(self._deliver_in_place(rule, delivery, previous))
        self._key_tails[chain] = task

        def forget(done: asyncio.Future[None]) -> None:
            if self._key_tails.get(chain) is done:
                del self._key_tails[chain]

        task.add_done_callback(forget)
        return task

    async def _deliver_in_place(
        self, rule: RuleSpec, delivery: Delivery, previous: asyncio.Future[None] | None
    ) -> None:
        """Deliver, retrying with backoff until done or dead-lettered, holding back the key."""
        if previous is not None:
            await asyncio.wait([previous])
        indices: list[int] = list(range(len(rule.actions)))
        attempts = 0
        while True:
            started = time.perf_counter()
            failed = await self._run(delivery, rule.actions, indices)
            self.trace.attempt(rule.name, delivery, attempts + 1, indices, failed, started)
            self.metrics.attempt(rule.name, rule.actions, indices, failed, started)
            if not failed:
                return
            attempts += 1
            retry = self._retry(delivery.event, rule, attempts, failed, time.time())
            if attempts >= rule.retry.attempts or any(not f.retryable for f in retry.failures):
                # The key moves on only once the dead letter is kept.
                while True:
                    try:
                        await self._give_up(retry, rule, delivery.event)
                        return
                    except Exception:
                        if self._stopping.is_set():
                            raise  # the batch stays unrecorded: delivered again after a restart
                        log.exception("keeping a dead letter of rule %s failed", rule.name)
                        await asyncio.sleep(1)
            await asyncio.sleep(retry.due_at - time.time())
            indices = retry.actions

    def _retry(
        self,
        event: Event,
        rule: RuleSpec,
        attempts: int,
        failed: list[tuple[int, Failure]],
        now: float,
    ) -> Retry:
        final = attempts >= rule.retry.attempts or any(not f.retryable for _, f in failed)
        self.metrics.after_failure(rule.name, rule.actions, [i for i, _ in failed], final)
        # A delivery that will not be tried again goes to its error action now.
        due = now if final else now + backoff(rule.retry, attempts, [f for _, f in failed])
        if not final:
            actions = [action_label(rule.actions[i]) for i, _ in failed]
            log.info(
                "retrying event %s for rule %s (%s) in %.1f s, attempt %d of %d: %s",
                event.id,
                rule.name,
                ", ".join(actions),
                due - now,
                attempts + 1,
                rule.retry.attempts,
                "; ".join(f.message for _, f in failed),
                extra={"event_id": event.id, "rule": rule.name, "action": ",".join(actions)},
            )
        return Retry(
            event,
            rule.name,
            attempts,
            due,
            [index for index, _ in failed],
            [f for _, f in failed],
        )

    async def _run(
        self, delivery: Delivery, actions: Sequence[Action], indices: Sequence[int]
    ) -> list[tuple[int, Failure]]:
        """Run the given actions of one delivery; returns the ones that failed."""
        results = await asyncio.gather(
            *(run_many(actions[i], [delivery], i, self.services) for i in indices)
        )
        return [
            (i, failure(actions[i], delivery, errors[0]))
            for i, errors in zip(indices, results, strict=True)
            if errors[0] is not None
        ]

    # -- retries and dead letters ------------------------------------------

    async def _retry_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                due = await self.bus.due(time.time(), 64)
                if due:
                    results = await asyncio.gather(
                        *(self._retry_one(r) for r in due), return_exceptions=True
                    )
                    for retry, result in zip(due, results, strict=True):
                        if isinstance(result, Exception):
                            log.error(
                                "retrying event %s for rule %s failed",
                                retry.event.id,
                                retry.rule,
                                exc_info=result,
                                extra={"event_id": retry.event.id, "rule": retry.rule},
                            )
                    if not any(isinstance(r, Exception) for r in results):
                        continue
            except Exception:
                log.exception("retrying deliveries failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), RETRY_POLL)

    async def _retry_one(self, retry: Retry) -> None:
        rule = self.rules.get(retry.rule)
        event = retry.event
        if rule is None:
            missing = "rule is not enabled in this app"
            retry.failures.append(Failure("rule", retry.rule, missing, retryable=False))
            await self._give_up(retry, rule, event)
            return
        if retry.attempts >= rule.retry.attempts or any(not f.retryable for f in retry.failures):
            await self._give_up(retry, rule, event)
            return
        ctx = context(event)
        output = evaluate(rule, event, ctx)
        if isinstance(output, Failure):
            retry.failures = [output]
            await self._give_up(retry, rule, event)
            return
        if output is NO_MATCH:
            # Only after a redrive into a changed rule: it no longer fires.
            await self.bus.done(retry)
            return
        delivery = Delivery(event, rule.name, output, ctx, event.payload)
        # The app may have changed since the failure: retry what still exists.
        indices = [i for i in retry.actions if i < len(rule.actions)] or range(len(rule.actions))
        started = time.perf_counter()
        failed = await self._run(delivery, rule.actions, list(indices))
        self.trace.attempt(rule.name, delivery, retry.attempts + 1, indices, failed, started)
        self.metrics.attempt(rule.name, rule.actions, indices, failed, started)
        await self.services.objects.flush()
        if not failed:
            await self.bus.done(retry)
            return
        attempts = retry.attempts + 1
        updated = self._retry(event, rule, attempts, failed, time.time())
        if attempts >= rule.retry.attempts or any(not f.retryable for f in updated.failures):
            await self._give_up(updated, rule, event)
        else:
            await self.bus.reschedule(updated)

    async def _give_up(self, retry: Retry, rule: RuleSpec | None, event: Event) -> None:
        """Run the rule's error action, then keep the delivery as a dead letter."""
        if rule is not None and rule.error_action is not None:
            payload = error_payload(rule.name, event, retry)
            delivery = Delivery(event, rule.name, payload, context(event), payload)
            # Its own index: what it publishes or sends gets ids of its own, not
            # those of the rule's first action for the same event.
            action = rule.error_action
            (error,) = await run_many(action, [delivery], ERROR_ACTION_INDEX, self.services)
            if error is not None:
                f = failure(action, delivery, error)
                retry.failures.append(
                    Failure(f"error_action:{f.action}", f.resource, f.message, f.retryable)
                )
        # Logged after it is kept, with the id that `rulebus dlq` lists and takes.
        letter = await self.bus.dead_letter(retry)
        log.warning(
            "dead letter %d: event %s rule %s after %d attempts: %s",
            letter,
            event.id,
            retry.rule,
            retry.attempts,
            "; ".join(f.message for f in retry.failures),
            extra={
                "dead_letter": letter,
                "event_id": event.id,
                "rule": retry.rule,
                "action": _labels(rule, retry),
            },
        )


def _labels(rule: RuleSpec | None, retry: Retry) -> str | None:
    """The failed actions of a retry as metrics label them, for log lines."""
    if rule is None:
        return None
    labels = [action_label(rule.actions[i]) for i in retry.actions if i < len(rule.actions)]
    return ",".join(labels) or None


def enabled(app: App) -> dict[str, RuleSpec]:
    return {name: rule for name, rule in app.rules.items() if rule.enabled}


def evaluate(rule: RuleSpec, event: Event, ctx: EvalContext) -> Any:
    """The rule's output for an event, NO_MATCH, or the Failure that stops it for good."""
    try:
        return rule.compiled.evaluate(event.payload, ctx)
    except Exception as exc:
        message = str(exc) if isinstance(exc, RulebusError) else f"{type(exc).__name__}: {exc}"
        return Failure("sql", rule.name, message, retryable=False)


async def run_many(
    action: Action, deliveries: Sequence[Delivery], index: int, services: Services
) -> list[Exception | None]:
    """An action's ``run_many`` that reports its own crash as every delivery's error."""
    try:
        return await action.run_many(deliveries, index, services)
    except Exception as exc:
        return [exc] * len(deliveries)


def failure(action: Action, delivery: Delivery, error: Exception) -> Failure:
    """An action's error as retries and dead letters keep it; a crash is logged in full."""
    if isinstance(error, ActionError):
        return Failure(
            action.kind, action.resource, error.message, error.retryable, error.retry_after
        )
    if isinstance(error, NotFound):
        return Failure(action.kind, action.resource, str(error), retryable=False)
    log.error(
        "action %s of rule %s failed",
        action.kind,
        delivery.rule,
        exc_info=error,
        extra={
            "event_id": delivery.event.id,
            "rule": delivery.rule,
            "action": action_label(action),
        },
    )
    return Failure(action.kind, action.resource, f"{type(error).__name__}: {error}")


def error_payload(rule: str, event: Event, retry: Retry) -> dict[str, Any]:
    """What an error action receives, shaped like AWS IoT's error action payload."""
    return {
        "ruleName": rule,
        "topic": event.topic,
        "eventId": event.id,
        "clientId": event.client_id,
        "principal": event.principal,
        "attempts": retry.attempts,
        "failures": [f.as_dict() for f in retry.failures],
        "payload": event.payload,
    }
