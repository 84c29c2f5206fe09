"""The console's pages that only read: overview, rules, SQL tester, events, tables,
buckets, dead letters, tail."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import Response

from rulebus import metrics
from rulebus.console.session import Session
from rulebus.console.web import Console, read_form
from rulebus.dead_letters import LetterFilter
from rulebus.engine.replay import parse_time
from rulebus.errors import BadInput, NotFound, SqlError, SqlEvalError
from rulebus.sql import NO_MATCH, EvalContext, TopicFilter, compile_rule, validate_topic
from rulebus.sql.types import to_json_value
from rulebus.trace import trace

PAGE = 50  # rows, objects or events per page
MAX_PAGE = 500


def _limit(request: Request) -> int:
    return _int(request.query_params.get("limit"), PAGE, "limit", 1, MAX_PAGE)


def _int(text: str | None, default: int, name: str, low: int = 0, high: int = 2**62) -> int:
    if text in (None, ""):
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"{name} must be a whole number, not {text!r}") from None
    if not low <= value <= high:
        raise BadInput(f"{name} must be between {low} and {high}")
    return value


class Pages:
    def __init__(self, console: Console) -> None:
        self.c = console

    async def overview(self, request: Request, session: Session) -> Response:
        stats = await self.c.sampler.now()
        part = request.query_params.get("part")
        return self.c.render(
            "overview_numbers.html" if part else "overview.html",
            session,
            stats=stats,
            lag=stats["head"] - stats["dispatched"],
            rates={m: self.c.sampler.rates(m) for m in (1, 5, 15)},
        )

    async def rules(self, request: Request, session: Session) -> Response:
        app = self.c.runtime.app
        counts = await self._rule_counts()
        rows = [
            {
                "name": rule.name,
                "sql": rule.sql,
                "enabled": rule.enabled,
                "actions": [f"{a.kind} {a.resource}".strip() for a in rule.actions],
                "error_action": (
                    f"{rule.error_action.kind} {rule.error_action.resource}".strip()
                    if rule.error_action
                    else ""
                ),
                "counts": counts.get(rule.name, {}),
            }
            for rule in app.rules.values()
        ]
        message = request.query_params.get("message", "")
        return self.c.render("rules.html", session, rules=rows, message=message)

    async def _rule_counts(self) -> dict[str, dict[str, float]]:
        """Matches and action outcomes per rule, from the metrics (empty when they are off)."""
        if not metrics.enabled():
            return {}
        text = (await metrics.exposition(self.c.runtime.bus)).decode()
        counts: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                rule = sample.labels.get("rule")
                if rule is None or not sample.name.endswith("_total"):
                    continue
                label = sample.name.removeprefix("rulebus_").removesuffix("_total")
                if "outcome" in sample.labels:
                    label += f" {sample.labels['outcome']}"
                into = counts.setdefault(rule, {})
                into[label] = into.get(label, 0) + sample.value
        return counts

    async def sql(self, request: Request, session: Session) -> Response:
        if request.method == "POST":
            form = sql_form(await read_form(request))
            return render_sql(self.c, session, form, _evaluate(form))
        form = sql_form(request.query_params)
        await self._prefill(request, form)
        # After a Send (changes.py), the event sent is shown as the rule sees it.
        sent = request.query_params.get("sent", "")
        result = _evaluate(form) if sent and form["sql"] else None
        return render_sql(self.c, session, form, result, sent=sent)

    async def _prefill(self, request: Request, form: dict[str, str]) -> None:
        rule = request.query_params.get("rule")
        if rule:
            spec = self.c.runtime.app.rules.get(rule)
            if spec is None:
                raise BadInput(f"no rule named {rule!r}", status=404)
            form["sql"], form["sql_version"] = spec.sql, spec.sql_version
        event_id = request.query_params.get("event") or request.query_params.get("sent")
        if event_id:
            found = (await self.c.runtime.bus.traced([event_id])).get(event_id)
            if found is None:
                raise BadInput(f"no event with id {event_id!r}", status=404)
            form["topic"] = found.event.topic
            form["payload"] = json.dumps(found.event.payload, indent=2, ensure_ascii=False)

    async def events(self, request: Request, session: Session) -> Response:
        q = request.query_params
        event_id = q.get("id", "").strip()
        topic = q.get("topic", "").strip()
        since = q.get("since", "").strip() or "1h"
        until = q.get("until", "").strip()
        since_ms = parse_time(since, "since")
        until_ms = parse_time(until, "until") if until else None
        after = _int(q.get("after"), 0, "after")
        limit = _limit(request)
        found: list[Any] = []
        more = False
        if event_id:
            traced = (await self.c.runtime.bus.traced([event_id])).get(event_id)
            found = [traced.event] if traced else []
        else:
            try:
                wanted = TopicFilter(topic or "#")
            except SqlError as exc:
                raise BadInput(str(exc)) from None
            async for event in self.c.runtime.bus.history(since_ms, until_ms):
                if event.seq <= after or not wanted.matches(event.topic):
                    continue
                if len(found) == limit:
                    more = True
                    break
                found.append(event)
        return self.c.render(
            "events.html",
            session,
            events=found,
            q={"id": event_id, "topic": topic, "since": since, "until": until, "limit": limit},
            next_after=found[-1].seq if more else None,
        )

    async def event(self, request: Request, session: Session) -> Response:
        event_id = request.path_params["id"]
        try:
            found = await trace(self.c.runtime.bus, event_id, self.c.runtime.app)
        except NotFound as exc:
            raise BadInput(str(exc), status=404) from None
        return self.c.render("event.html", session, id=event_id, trace=found)

    async def tables(self, request: Request, session: Session) -> Response:
        app = self.c.runtime.app
        return self.c.render(
            "tables.html",
            session,
            tables=[(t.name, t.key) for t in app.tables.values()],
            buckets=list(app.buckets),
        )

    async def table(self, request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        if name not in self.c.runtime.app.tables:
            raise BadInput(f"no table named {name!r}", status=404)
        offset = _int(request.query_params.get("offset"), 0, "offset")
        limit = _limit(request)
        tables, _ = await self.c.readers()
        rows: list[dict[str, Any]] = []
        more = False
        seen = 0
        # The stores read in key order, in chunks: a page skips what comes
        # before it without holding it.
        async for item in tables.scan(name):
            seen += 1
            if seen <= offset:
                continue
            if len(rows) == limit:
                more = True
                break
            rows.append(item)
        opened = request.query_params.get("row")
        row = rows[_int(opened, 0, "row", 0, len(rows) - 1)] if opened and rows else None
        return self.c.render(
            "table.html",
            session,
            name=name,
            key=self.c.runtime.app.tables[name].key,
            rows=rows,
            offset=offset,
            limit=limit,
            more=more,
            row=row,
        )

    async def bucket(self, request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        if name not in self.c.runtime.app.buckets:
            raise BadInput(f"no bucket named {name!r}", status=404)
        prefix = request.query_params.get("prefix", "")
        after = request.query_params.get("after", "")
        limit = _limit(request)
        _, objects = await self.c.readers()
        keys: list[str] = []
        more = False
        async for key in objects.list(name, prefix):
            if after and key <= after:
                continue
            if len(keys) == limit:
                more = True
                break
            keys.append(key)
        return self.c.render(
            "bucket.html",
            session,
            name=name,
            keys=keys,
            key_prefix=prefix,
            limit=limit,
            next_after=keys[-1] if more else None,
        )

    async def object(self, request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        key = request.query_params.get("key", "")
        if name not in self.c.runtime.app.buckets:
            raise BadInput(f"no bucket named {name!r}", status=404)
        _, objects = await self.c.readers()
        body = await objects.get(name, key)
        try:
            text = json.dumps(json.loads(body), indent=2, ensure_ascii=False)
        except ValueError:
            text = body.decode("utf-8", "replace")
        return self.c.render("object.html", session, name=name, key=key, text=text, size=len(body))

    async def dead_letters(self, request: Request, session: Session) -> Response:
        q = request.query_params
        wanted = LetterFilter(q.get("event", ""), q.get("rule", ""), q.get("topic", ""))
        letters = await wanted.chosen(self.c.runtime.bus)
        opened = _int(q.get("open"), 0, "open") or None
        return self.c.render(
            "dlq.html",
            session,
            letters=letters[:MAX_PAGE],
            total=len(letters),
            q={"event": wanted.event, "rule": wanted.rule, "topic": wanted.topic},
            opened=opened,
            message=q.get("message", ""),
        )

    async def tail(self, request: Request, session: Session) -> Response:
        return self.c.render("tail.html", session, topic=request.query_params.get("topic", "#"))


@dataclass
class Outcome:
    kind: str  # "output", "no match" or "error"
    text: str


SQL_FIELDS = ("sql", "topic", "payload", "sql_version")


def sql_form(given: Mapping[str, str]) -> dict[str, str]:
    """The SQL tester's fields, from a posted form or a link's query (missing ones empty)."""
    return {name: str(given.get(name) or "") for name in SQL_FIELDS}


def render_sql(
    console: Console,
    session: Session,
    form: dict[str, str],
    result: Outcome | None,
    *,
    sent: str = "",
    status: int = 200,
) -> Response:
    return console.render("sql.html", session, status=status, form=form, result=result, sent=sent)


def _evaluate(form: dict[str, str]) -> Outcome:
    """What ``rulebus sql eval`` says for the form's rule, topic and payload."""
    try:
        rule = compile_rule(form["sql"], form["sql_version"] or None)
        validate_topic(form["topic"])
        document = json.loads(form["payload"])
    except (SqlError, BadInput) as err:
        return Outcome("error", str(err))
    except ValueError as err:
        return Outcome("error", f"the payload is not valid JSON: {err}")
    if not rule.topic_filter.matches(form["topic"]):
        return Outcome("no match", f"the topic does not match {rule.topic_filter.text!r}")
    try:
        output = rule.evaluate(document, EvalContext(topic=form["topic"]))
    except SqlEvalError as err:
        return Outcome("error", str(err))
    if output is NO_MATCH:
        return Outcome("no match", "WHERE is not true for this payload")
    return Outcome("output", json.dumps(to_json_value(output), indent=2, ensure_ascii=False))
