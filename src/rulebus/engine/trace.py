"""Recording what dispatch did, for ``rulebus trace``.

Recording has to cost next to nothing, since nearly every delivery is a
first attempt that succeeds. So the engine writes no row per event: each
batch it delivers becomes one *trace run*, a JSON record of the jobs it ran
(a rule's actions over all of the batch's deliveries of that rule, with one
start and one duration per action, since an action runs all of them in one
call) and of the errors, per event, of the deliveries that failed. The bus
keeps the run in the same commit that moves the dispatch position, so it
adds no fsync. Attempts outside a batch (the retry loop) are rarer and each
is kept as a run of its own.

A run's record::

    {"kind": "dispatch" | "retry" | "replay", "v": app version, "replay": id or absent,
     "jobs": [{"rule": name, "sql": hash of its SQL, "attempt": n,
               "seqs": [positions of the events delivered],
               "actions": [[action index, start ms after the run's time, duration ms], ...],
               "errors": {"<position>": [[action index, message], ...]}}]}

Rules an event did not match are not recorded: a trace works them out from
the rules as they are now, and says so when the app has changed since
(``v`` differs from the running app's version).

Recording must never fail a delivery or hold up dispatch: a run that cannot
be kept is logged and dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from rulebus.backends.base import Failure, TraceRun

if TYPE_CHECKING:
    from rulebus.actions.base import Delivery
    from rulebus.backends.base import Bus
    from rulebus.events import Event
    from rulebus.template.model import App, RuleSpec

log = logging.getLogger("rulebus.trace")


def sql_hash(rule: RuleSpec) -> str:
    """A short digest of what decides a rule's output: its SQL and SQL version."""
    return hashlib.sha256(f"{rule.sql_version}\n{rule.sql}".encode()).hexdigest()[:12]


def app_version(rules: Mapping[str, RuleSpec]) -> str:
    """A digest of every enabled rule's name and SQL: it changes when the routing can."""
    text = "\n".join(
        f"{name}\t{sql_hash(rule)}" for name, rule in sorted(rules.items()) if rule.enabled
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def error_text(error: Exception | Failure) -> str:
    if isinstance(error, Failure):
        return error.message
    message = getattr(error, "message", None)
    return message if isinstance(message, str) else f"{type(error).__name__}: {error}"


class Batch:
    """The jobs of one delivered batch, gathered while it is delivered."""

    __slots__ = ("at", "jobs", "started")

    def __init__(self) -> None:
        self.at = time.time()
        self.started = time.perf_counter()
        self.jobs: dict[tuple[str, int, int], dict[str, Any]] = {}

    def add(
        self,
        rule: str,
        sql: str,
        attempt: int,
        deliveries: Sequence[Delivery],
        index: int,
        started: float,
        errors: Sequence[Exception | Failure | None],
    ) -> None:
        ended = time.perf_counter()
        # A rule's actions each run over the same deliveries: one job for all of them.
        key = (rule, attempt, id(deliveries))
        job = self.jobs.get(key)
        if job is None:
            job = self.jobs[key] = {
                "rule": rule,
                "sql": sql,
                "attempt": attempt,
                "seqs": [d.event.seq for d in deliveries],
                "actions": [],
            }
        job["actions"].append(
            [index, round((started - self.started) * 1000, 2), round((ended - started) * 1000, 2)]
        )
        for delivery, error in zip(deliveries, errors, strict=True):
            if error is not None:
                failed = job.setdefault("errors", {}).setdefault(str(delivery.event.seq), [])
                failed.append([index, error_text(error)])

    def run(self, version: str, kind: str = "dispatch", replay: str | None = None) -> TraceRun:
        record: dict[str, Any] = {"kind": kind, "v": version, "jobs": list(self.jobs.values())}
        if replay is not None:
            record["replay"] = replay
        seqs = sorted({seq for job in self.jobs.values() for seq in job["seqs"]})
        return TraceRun(self.at, record, seqs, replay)


# The batch being delivered, for keyed deliveries, which run in tasks of their own.
_current: ContextVar[Batch | None] = ContextVar("rulebus_trace_batch", default=None)


class Recorder:
    """What the engine calls to record its deliveries; it does nothing when tracing is off."""

    def __init__(self, app: App, bus: Bus, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.version = app_version(app.rules)
        self._sql = {name: sql_hash(rule) for name, rule in app.rules.items()}
        self._bus = bus
        self._batches: dict[int, Batch] = {}
        self._writes: set[asyncio.Task[None]] = set()

    def use(self, app: App) -> None:
        """Record against a reloaded app's rules from now on."""
        self.enabled = app.trace
        self.version = app_version(app.rules)
        self._sql = {name: sql_hash(rule) for name, rule in app.rules.items()}

    def batch(self, events: list[Event]) -> Batch | None:
        """Start recording the delivery of a batch (None when tracing is off)."""
        if not self.enabled:
            return None
        batch = self._batches[id(events)] = Batch()
        _current.set(batch)
        return batch

    async def timed(
        self,
        batch: Batch,
        rule: str,
        index: int,
        deliveries: Sequence[Delivery],
        work: Awaitable[list[Exception | None]],
    ) -> list[Exception | None]:
        """Run one action over its deliveries, recording when, how long and what failed."""
        started = time.perf_counter()
        errors = await work
        try:
            batch.add(rule, self._sql.get(rule, ""), 1, deliveries, index, started, errors)
        except Exception:
            log.exception("recording a trace failed (the trace will miss it)")
        return errors

    def attempt(
        self,
        rule: str,
        delivery: Delivery,
        attempt: int,
        indices: Sequence[int],
        failed: Sequence[tuple[int, Failure]],
        started: float,
    ) -> None:
        """Record one attempt of one delivery outside the batch path (keyed or retried)."""
        if not self.enabled:
            return
        try:
            self._attempt(rule, delivery, attempt, indices, failed, started)
        except Exception:
            log.exception("recording a trace failed (the trace will miss it)")

    def _attempt(
        self,
        rule: str,
        delivery: Delivery,
        attempt: int,
        indices: Sequence[int],
        failed: Sequence[tuple[int, Failure]],
        started: float,
    ) -> None:
        errors = dict(failed)
        batch = _current.get()
        own = batch is None
        if batch is None:
            batch = Batch()
            batch.started = started
        sql = self._sql.get(rule, "")
        for index in indices:
            batch.add(rule, sql, attempt, [delivery], index, started, [errors.get(index)])
        if own:
            self._keep(batch.run(self.version, "retry"))

    def take(self, batches: Sequence[list[Event]]) -> list[TraceRun]:
        """The runs of these delivered batches, for the commit that records them."""
        if not self.enabled:
            return []
        runs = []
        for events in batches:
            batch = self._batches.pop(id(events), None)
            if batch is not None and batch.jobs:
                try:
                    runs.append(batch.run(self.version))
                except Exception:
                    log.exception("recording a trace failed (the trace will miss it)")
        return runs

    def _keep(self, run: TraceRun) -> None:
        task = asyncio.ensure_future(self._write(run))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(self, run: TraceRun) -> None:
        try:
            await self._bus.record([run])
        except Exception as exc:
            log.warning("keeping a trace run failed (the trace will miss it): %s", exc)

    async def flush(self) -> None:
        """Wait for the runs being kept (at stop)."""
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
