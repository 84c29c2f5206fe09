"""Read test files: YAML that names input events and what must follow from them.

Errors are ``TemplateError``s with file, line and key, as the app file's are,
and they are found before any test runs: a name the app does not declare, a
malformed matcher, an event a route would refuse.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rulebus.api.ingest import event_id, route_event, topic_event
from rulebus.config.options import Options
from rulebus.config.source import read_source
from rulebus.errors import BadInput
from rulebus.events import Event, name_id
from rulebus.template.model import App
from rulebus.testing.compare import bad_matchers

TESTS_FOLDER = "tests"
# Events without a timestamp of their own, in tests without ``now``, happened
# at this moment, so that ``timestamp()`` gives the same output on every run.
DEFAULT_NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z
_IDS = uuid.UUID("0f8a3c5e-2b7d-4c61-9e14-5a9d7f3b2c10")
RULE_KEYS = ("matched", "output", "outputs", "error")


@dataclass(frozen=True)
class RuleExpectation:
    """What one rule must have done: each key only when the test gives it."""

    matched: bool | None = None
    output: Any = None
    has_output: bool = False
    outputs: list[Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Expectations:
    """What must follow from a test's events. ``None`` or a missing name: not checked."""

    rules: dict[str, RuleExpectation] = field(default_factory=dict)
    tables: dict[str, list[Any]] = field(default_factory=dict)
    buckets: dict[str, dict[str, Any]] = field(default_factory=dict)
    notifications: dict[str, list[Any]] = field(default_factory=dict)
    published: list[Any] | None = None
    sent: list[Any] | None = None


@dataclass(frozen=True)
class TestCase:
    file: str
    line: int | None
    name: str
    events: tuple[Event, ...]
    expect: Expectations

    @property
    def where(self) -> str:
        return self.file if self.line is None else f"{self.file}:{self.line}"


def find_test_files(app_root: Path) -> list[Path]:
    """The test files of an app: ``tests/*.yaml`` and ``tests/*.yml`` in its folder, by name."""
    folder = app_root / TESTS_FOLDER
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_tests(file: Path, app: App) -> list[TestCase]:
    """Read and validate one test file against the app it tests."""
    source = read_source(file)
    top = Options(source, (), source.data, what="a mapping with a 'tests' list")
    items = top.raw("tests")
    if not isinstance(items, list) or not items:
        top.missing("tests", "a non-empty list of tests")
    top.done()
    cases: list[TestCase] = []
    names: set[str] = set()
    for i, item in enumerate(items):
        opts = Options(source, ("tests", i), item, what="a test (a mapping)")
        name = opts.text("name", required=True)
        if name in names:
            opts.fail("name", f"another test in this file is named {name!r}")
        names.add(name)
        now = _timestamp(opts, "now", DEFAULT_NOW)
        events = _events(opts, app, name, now)
        expect = _expectations(opts.section("expect"), app)
        opts.done()
        cases.append(TestCase(str(file), source.line(("tests", i)), name, events, expect))
    return cases


def _timestamp(opts: Options, key: str, default: int) -> int:
    """Epoch milliseconds, given as a number or as ISO 8601 text with a time zone."""
    value = opts.raw(key)
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return round(moment.timestamp() * 1000)
    opts.fail(
        key,
        f"expected epoch milliseconds or an ISO 8601 time with a zone"
        f" (2026-01-01T12:00:00Z), got {value!r}",
    )


def _events(opts: Options, app: App, test: str, now: int) -> tuple[Event, ...]:
    items = opts.raw("events")
    if not isinstance(items, list) or not items:
        opts.missing("events", "a non-empty list of events")
    routes = {route.path: route for route in app.routes}
    events = []
    for n, item in enumerate(items):
        ev = Options(opts.source, (*opts.path, "events", n), item, what="an event (a mapping)")
        if not ev.has("payload"):
            ev.missing("payload", "the event's payload")
        payload = ev.raw("payload")
        ts = _timestamp(ev, "timestamp", now)
        client_id = ev.optional_str("client_id")
        principal = ev.optional_str("principal")
        given_id = ev.optional_str("id")
        if given_id is not None:
            try:
                event_id(given_id)
            except BadInput as exc:
                ev.fail("id", exc.message)
        default_id = given_id or name_id(_IDS, f"{test}/{n}")
        path = ev.optional_str("route")
        topic = ev.optional_str("topic")
        if (path is None) == (topic is None):
            ev.fail(None, "give either 'topic' (publish to it) or 'route' (POST to it)")
        try:
            if path is not None:
                if path not in routes:
                    known = ", ".join(sorted(routes)) or "none declared"
                    ev.fail("route", f"the app has no route {path!r} (routes: {known})")
                route = routes[path]
                if isinstance(payload, dict) and payload.get(route.id_field) is None:
                    payload = {**payload, route.id_field: default_id}
                event = route_event(route, payload, client_id, ts, principal)
                if given_id is not None and event.id != given_id:
                    ev.fail("id", f"the route takes the id from the body's {route.id_field!r}")
            else:
                assert topic is not None
                event = topic_event(topic, payload, client_id, ts, principal)
                event.id = default_id
        except BadInput as exc:
            ev.fail("route" if path is not None else "topic", exc.message)
        event.fresh_id = False
        ev.done()
        events.append(event)
    return tuple(events)


def _expectations(opts: Options, app: App) -> Expectations:
    rules: dict[str, RuleExpectation] = {}
    section = opts.section("rules")
    for name in section.value:
        _declared(section, name, app.rules, "rule")
        rules[name] = _rule(section.section(name))
    section.done()
    tables = _lists(opts.section("tables"), app.tables, "table", "rows")
    notifications = _lists(
        opts.section("notifications"), app.notifications, "notification topic", "messages"
    )
    buckets: dict[str, dict[str, Any]] = {}
    section = opts.section("buckets")
    for name in section.value:
        _declared(section, name, app.buckets, "bucket")
        objects = section.section(name, what="a mapping of object keys to their content")
        for key in objects.value:
            _matchers(objects, key)
        buckets[name] = dict(objects.value)
        section.raw(name)
    section.done()
    published = _messages(
        opts, "published", "topic", "events (topic and payload)", "it was published with"
    )
    sent = _messages(
        opts,
        "sent",
        "action",
        "messages (action and payload)",
        "the action would send",
        optional=("target", "details"),
    )
    opts.done()
    return Expectations(rules, tables, buckets, notifications, published, sent)


def _messages(
    opts: Options, key: str, name: str, what: str, payload: str, optional: tuple[str, ...] = ()
) -> list[Any] | None:
    """A list of expected messages, each with ``name``, a payload and the ``optional`` keys."""
    items = opts.raw(key)
    if items is None:
        return None
    if not isinstance(items, list):
        opts.fail(key, f"expected a list of {what}")
    for n, item in enumerate(items):
        message = Options(opts.source, (*opts.path, key, n), item, what="a mapping")
        message.text(name, required=True)
        if not message.has("payload"):
            message.missing("payload", f"the payload {payload}")
        for field_ in ("payload", *optional):
            if message.has(field_):
                message.raw(field_)
                _matchers(message, field_)
        message.done()
    return items


def _rule(opts: Options) -> RuleExpectation:
    matched = opts.raw("matched")
    if matched is not None and not isinstance(matched, bool):
        opts.fail("matched", f"expected true or false, got {matched!r}")
    outputs = opts.raw("outputs")
    if outputs is not None and not isinstance(outputs, list):
        opts.fail("outputs", "expected a list of outputs, one per event the rule fired on")
    if opts.has("output") and outputs is not None:
        opts.fail("outputs", "give 'output' (the rule fired once) or 'outputs', not both")
    if opts.has("output"):
        _matchers(opts, "output")
    if outputs is not None:
        _matchers(opts, "outputs")
    error = opts.optional_str("error")
    opts.raw("output")
    opts.done()
    if not opts.value:
        opts.fail(None, f"expected at least one of {', '.join(RULE_KEYS)}")
    return RuleExpectation(matched, opts.value.get("output"), opts.has("output"), outputs, error)


def _lists(opts: Options, declared: Any, what: str, items: str) -> dict[str, list[Any]]:
    out = {}
    for name in opts.value:
        _declared(opts, name, declared, what)
        value = opts.raw(name)
        if not isinstance(value, list):
            opts.fail(name, f"expected a list of the {what}'s {items} ([] for none)")
        _matchers(opts, name)
        out[name] = value
    opts.done()
    return out


def _declared(opts: Options, name: str, declared: Any, what: str) -> None:
    if name not in declared:
        names = ", ".join(sorted(declared)) or "none declared"
        opts.fail(name, f"the app has no {what} {name!r} ({what}s: {names})")


def _matchers(opts: Options, key: str) -> None:
    path, reason = bad_matchers(opts.value[key])
    if reason:
        opts.source.fail((*opts.path, key, *path), reason)
