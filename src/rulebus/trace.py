"""The trace of one event, assembled from what the bus keeps (``rulebus trace``, HTTP).

A trace holds the event; the rules that delivered it, each attempt with its
actions' start times, durations and errors (replays marked); the rules it
did not match and why; its waiting retries and dead letters (and the dead
letters purged, as attempts of kind ``purge``); and the events its
deliveries published, each traced the same way.

Rules not matched are worked out now, from the rules as the app has them
now: a topic filter that does not match, or a WHERE that is false. When the
app's rules changed since the event was dispatched, ``app_changed`` says so,
since those reasons may not be the ones that held then.

Children are found by their ids: an action that publishes names the n-th
event it publishes for a delivery after the delivery (``Delivery.derived_id``,
and ``replay_derived_id`` for replays), so the trace asks the bus for those
ids, n = 0, 1, … until one is missing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rulebus.actions.base import Delivery
from rulebus.backends.base import Bus, Failure, Traced
from rulebus.engine.replay import replay_derived_id
from rulebus.engine.runner import context, evaluate
from rulebus.engine.trace import app_version, sql_hash
from rulebus.errors import NotFound
from rulebus.events import MAX_HOPS, Event
from rulebus.sql import NO_MATCH

if TYPE_CHECKING:
    from rulebus.template.model import App

# Children are appended after their parent, whose time they carry; a bus that
# reads by time starts this long before it, for clocks that disagree.
SKEW_MS = 60_000
MAX_CHILDREN = 1000  # per action and delivery


def iso(seconds: float) -> str:
    return (
        datetime.fromtimestamp(seconds, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def id_time_ms(event_id: str) -> int | None:
    """The time in a version 7 UUID (the ids the server makes), if it is one."""
    try:
        parsed = uuid.UUID(event_id)
    except ValueError:
        return None
    if parsed.version != 7:
        return None
    return int(parsed.int >> 80)


async def trace(bus: Bus, event_id: str, app: App | None) -> dict[str, Any]:
    """The trace of the event ``event_id``; ``NotFound`` if the log does not have it.

    Without ``app``, only what was recorded: no rules not matched, and
    actions by index.
    """
    stamp = id_time_ms(event_id)
    since = None if stamp is None else stamp - SKEW_MS
    found = await bus.traced([event_id], since)
    if event_id not in found:
        raise NotFound(f"no event {event_id!r} in the log (unknown, or removed by retention)")
    return await _assemble(bus, found[event_id], app, 0)


async def _assemble(bus: Bus, traced: Traced, app: App | None, depth: int) -> dict[str, Any]:
    event = traced.event
    jobs = _jobs(traced)
    rules = _rules(event, jobs, traced, app)
    out: dict[str, Any] = {
        "event": {
            "id": event.id,
            "topic": event.topic,
            "time": iso(event.ts / 1000),
            "client_id": event.client_id,
            "principal": event.principal,
            "hops": event.hops,
            "payload": event.payload,
        },
        "dispatched": traced.dispatched,
        # A purge run has no app version: it routed nothing.
        "app_changed": app is not None
        and any("v" in run and run["v"] != app_version(app.rules) for _, run in traced.runs),
        "rules": rules,
        "dead_letters": [
            {
                "id": letter.id,
                "rule": letter.rule,
                "attempts": letter.attempts,
                "failed_at": iso(letter.failed_at),
                "failures": letter.failures,
            }
            for letter in traced.dead_letters
        ],
        "retrying": [
            {
                "rule": retry.rule,
                "attempts": retry.attempts,
                "due_at": iso(retry.due_at),
                "failures": [f.record() for f in retry.failures],
            }
            for retry in traced.retries
        ],
        "children": [],
    }
    if depth < MAX_HOPS:
        out["children"] = [
            {"rule": rule, "action": index, "replay": replay, "trace": child}
            for (rule, index, replay), child in await _children(bus, event, jobs, app, depth)
        ]
    return out


def _jobs(traced: Traced) -> list[dict[str, Any]]:
    """The jobs of the event's runs that delivered it, with its own errors only, oldest first."""
    seq = traced.event.seq
    out = []
    for at, run in traced.runs:
        for job in run["jobs"]:
            if seq not in job["seqs"]:
                continue
            errors = {index: message for index, message in job.get("errors", {}).get(str(seq), [])}
            out.append(
                {
                    "rule": job["rule"],
                    "sql": job.get("sql", ""),
                    "kind": run["kind"],
                    "replay": run.get("replay"),
                    "attempt": job["attempt"],
                    "at": at,
                    "actions": sorted(
                        (index, start, duration, errors.get(index))
                        for index, start, duration in job["actions"]
                    ),
                }
            )
    return out


def _rules(
    event: Event, jobs: list[dict[str, Any]], traced: Traced, app: App | None
) -> list[dict[str, Any]]:
    by_rule: dict[str, list[dict[str, Any]]] = {}
    if app is not None:  # in the app's order
        by_rule = {name: [] for name in app.rules if any(job["rule"] == name for job in jobs)}
    for job in jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    failed = {letter.rule for letter in traced.dead_letters}
    waiting = {retry.rule for retry in traced.retries}
    out = []
    for name, attempts in by_rule.items():
        spec = app.rules.get(name) if app is not None else None
        entry: dict[str, Any] = {
            "rule": name,
            "matched": True,
            "status": _status(name, attempts, failed, waiting),
            "changed_since": spec is not None
            and attempts[0]["kind"] != "purge"  # which ran no SQL
            and sql_hash(spec) != attempts[0]["sql"],
            "attempts": [],
        }
        for job in attempts:
            actions = []
            for index, start, duration, error in job["actions"]:
                action = spec.actions[index] if spec and index < len(spec.actions) else None
                actions.append(
                    {
                        "index": index,
                        "action": action.kind if action else None,
                        "resource": action.resource if action else None,
                        "started": iso(job["at"] + start / 1000),
                        "duration_ms": duration,
                        "error": error,
                    }
                )
            entry["attempts"].append(
                {
                    "kind": job["kind"],
                    "replay": job["replay"],
                    "attempt": job["attempt"],
                    "at": iso(job["at"]),
                    "actions": actions,
                }
            )
        out.append(entry)
    # Rules that failed before any action ran (an SQL error): only a dead letter or retry.
    for name in sorted((failed | waiting) - set(by_rule)):
        status = "dead-lettered" if name in failed else "retrying"
        out.append({"rule": name, "matched": True, "status": status, "attempts": []})
    if app is None:
        return out
    known = {entry["rule"] for entry in out}
    ctx = context(event)
    for name, rule in app.rules.items():
        if name in known or not rule.enabled:
            continue
        entry = {"rule": name, "matched": False}
        if not rule.compiled.topic_filter.matches(event.topic):
            entry["reason"] = "topic"
            entry["detail"] = f"its filter {rule.compiled.topic_filter.text!r} does not match"
        else:
            output = evaluate(rule, event, ctx)
            if output is NO_MATCH:
                entry["reason"] = "where"
                entry["detail"] = "its WHERE clause is false for this event"
            elif isinstance(output, Failure):
                entry["reason"] = "error"
                entry["detail"] = output.message
            else:
                entry["reason"] = "not delivered"
                entry["detail"] = (
                    "it matches now, but no delivery was recorded: the event is not"
                    " dispatched yet, the rule is newer than the event or changed since,"
                    " or tracing was off"
                )
        out.append(entry)
    return out


def _status(name: str, attempts: list[dict[str, Any]], failed: set[str], waiting: set[str]) -> str:
    if name in failed:
        return "dead-lettered"
    if name in waiting:
        return "retrying"
    last = [job for job in attempts if job["kind"] != "replay"] or attempts
    if last[-1]["kind"] == "purge":
        return "purged"
    if all(error is None for *_, error in last[-1]["actions"]):
        return "delivered"
    return "failed"


async def _children(
    bus: Bus,
    event: Event,
    jobs: list[dict[str, Any]],
    app: App | None,
    depth: int,
) -> list[tuple[tuple[str, int, str | None], dict[str, Any]]]:
    """The traces of the events the deliveries of ``event`` published, in publishing order."""
    origin = Delivery(event, "", None, context(event), None)
    # (rule, action index, replay) of every action that may have published.
    sources = sorted(
        {
            (job["rule"], index, job["replay"] or "")
            for job in jobs
            for index, _, _, _ in job["actions"]
            if _may_publish(app, job["rule"], index)
        }
    )
    found: list[tuple[tuple[str, int, str | None], Traced]] = []
    sent = dict.fromkeys(sources, 0)  # children found so far, per source
    asking = list(sources)
    while asking:
        asked = {_child_id(origin, source, sent[source]): source for source in asking}
        have = await bus.traced(list(asked), event.ts - SKEW_MS)
        asking = []
        for child, source in asked.items():
            if child in have:
                found.append(((source[0], source[1], source[2] or None), have[child]))
                sent[source] += 1
                if sent[source] < MAX_CHILDREN:
                    asking.append(source)
    return [(source, await _assemble(bus, traced, app, depth + 1)) for source, traced in found]


def _child_id(origin: Delivery, source: tuple[str, int, str], n: int) -> str:
    rule, index, replay = source
    if replay:
        return replay_derived_id(replay, origin.event.id, rule, index, n)
    origin.rule = rule
    return origin.derived_id(index, n)


def _may_publish(app: App | None, rule: str, index: int) -> bool:
    if app is None or rule not in app.rules or index >= len(app.rules[rule].actions):
        return True  # unknown now: look
    return app.rules[rule].actions[index].kind in ("function", "republish")
