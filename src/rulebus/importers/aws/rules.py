"""Topic rules, functions and the routes of their API events."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rulebus.errors import SqlError, TemplateError
from rulebus.importers.aws.actions import ACTIONS, Skip
from rulebus.importers.aws.draft import Stub, module_name, rule_name
from rulebus.sql import SQL_VERSIONS, Rule, compile_rule
from rulebus.sql.versions import V2015, V2016
from rulebus.template.loader import RESERVED_PATHS

if TYPE_CHECKING:
    from rulebus.importers.aws.convert import Converter, Props

_PATH = re.compile(r"^(/[A-Za-z0-9._-]+){1,7}$")
_FROM = re.compile(r"\bFROM\s+'([^']*)'", re.IGNORECASE)


def topic_rule(conv: Converter, p: Props, logical_id: str) -> None:
    write_rule(conv, p.sub("topicRulePayload"), conv.names[logical_id])


def write_rule(conv: Converter, p: Props, name: str) -> None:
    """The rule ``name`` from a TopicRulePayload (or get-topic-rule's ``rule``)."""
    conv.rule = name
    rule: dict[str, Any] = {}
    compiled = _sql(conv, p, name, p.need("sql"), p.text("awsIotSqlVersion"), rule)
    if p.get("ruleDisabled") is True:
        rule["enabled"] = False
    raw_actions = p.data.get(p.key("actions") or "actions") or []
    actions = [
        action
        for i, item in enumerate(raw_actions)
        if (action := _action(conv, p, (p.key("actions") or "", i), item, compiled)) is not None
    ]
    if not actions:
        actions = [{"log": {"level": "info"}}]
        rule["enabled"] = False
        what = "no action converted" if raw_actions else "no actions"
        p.entry.change(f"{what}: the rule is disabled, with a log action in their place")
    rule["actions"] = actions
    error_key = p.key("errorAction")
    if error_key is not None:
        error = _action(conv, p, (error_key,), p.data[error_key], compiled)
        if error is not None:
            rule["error_action"] = error
    conv.draft.rules[name] = rule
    p.entry.became.append(f"rule `{name}`")


def _sql(
    conv: Converter, p: Props, name: str, sql: str, version: str | None, rule: dict[str, Any]
) -> Rule:
    # AWS IoT's default is the oldest version; rulebus's is the newest: always write it.
    if version is None:
        version = V2015
    elif version not in SQL_VERSIONS:
        p.note("awsIotSqlVersion", f"SQL version {version} becomes {V2016}")
        version = V2016
    rule.update(sql=sql, sql_version=version)
    try:
        return compile_rule(sql, version)
    except SqlError as exc:
        refused = exc
    found = _FROM.search(sql)
    placeholder = f"SELECT * FROM '{found.group(1) if found else '#'}' WHERE false"
    try:
        compiled = compile_rule(placeholder, version)
    except SqlError:
        raise Skip(f"{p.where('sql')}: rulebus refuses the SQL: {refused}") from None
    rule.update(sql=placeholder, enabled=False)
    conv.draft.notes[name] = [
        f"Disabled: rulebus refuses the SQL ({refused}). The original:",
        *sql.strip().splitlines(),
    ]
    p.note(
        "sql",
        f"rulebus refuses the SQL ({refused}): the rule is disabled, its SQL replaced,"
        " and the original kept as a comment above it",
    )
    return compiled


def _action(
    conv: Converter, parent: Props, rel: tuple[str | int, ...], item: Any, compiled: Rule
) -> dict[str, Any] | None:
    from rulebus.importers.aws.convert import Props

    where = Props(conv, parent.template, parent.entry, {}, (*parent.path, *rel)).where()
    if not isinstance(item, dict) or len(item) != 1:
        parent.entry.change(f"{where}: not converted: expected one action kind")
        return None
    ((aws_kind, body),) = item.items()
    convert = ACTIONS.get(aws_kind[0].lower() + aws_kind[1:])
    try:
        if convert is None:
            raise Skip(f"rulebus import does not know the {aws_kind} action")
        if not isinstance(body, dict):
            raise Skip("expected a mapping of options")
        props = Props(conv, parent.template, parent.entry, body, (*parent.path, *rel, aws_kind))
        kind, options = convert(props)
        action = conv.draft.build(kind, options)
    except Skip as exc:
        parent.entry.change(f"{where}: {aws_kind} not converted: {exc}")
        return None
    except TemplateError as exc:
        detail = f"{exc.key}: {exc.message}" if exc.key else exc.message
        parent.entry.change(f"{where}: {aws_kind} not converted: {detail}")
        return None
    target = action.publishes_to()
    if target is not None and compiled.topic_filter.matches(target):
        parent.entry.change(
            f"{where}: {aws_kind} not converted: it publishes to {target!r}, which the rule's"
            f" own filter {compiled.topic_filter.text!r} matches (a loop)"
        )
        return None
    return {kind: options}


def function(conv: Converter, p: Props, logical_id: str) -> None:
    name = conv.names[logical_id]
    defaults = (p.template.source.data.get("Globals") or {}).get("Function") or {}

    def setting(key: str) -> Any:
        return p.get(key) if p.has(key) else defaults.get(key[0].upper() + key[1:])

    stub = conv.draft.functions.setdefault(name, Stub(name, module_name(name), ""))
    stub.where = p.entry.where
    stub.runtime = str(setting("runtime") or "unknown")
    stub.handler = str(setting("handler") or "unknown")
    code = setting("codeUri") or setting("code")
    stub.code = code if isinstance(code, str) else "inline" if code else ""
    timeout = setting("timeout")
    stub.timeout = float(timeout) if isinstance(timeout, int | float) else None
    p.entry.became.append(f"function `{name}` (an unported stub)")
    p.entry.change(
        f"its {stub.runtime} code is not converted: functions/{stub.module}.py refuses to run"
        " until it is ported to Python"
    )
    if setting("environment"):
        p.note("environment", "set these variables in rulebus's environment")
    events = p.data.get(p.key("events") or "Events")
    for event_name, event in (events if isinstance(events, dict) else {}).items():
        _event(conv, p, logical_id, name, event_name, event)
    conv._ignored(
        p,
        {"FunctionName", "Runtime", "Handler", "CodeUri", "Code", "Timeout", "Events"}
        | {"Environment", "MemorySize"},
    )


def _event(
    conv: Converter, p: Props, logical_id: str, function: str, event_name: str, event: Any
) -> None:
    from rulebus.importers.aws.convert import Props

    path = (*p.path, p.key("events") or "Events", event_name, "Properties")
    body = event.get("Properties") if isinstance(event, dict) else None
    e = Props(conv, p.template, p.entry, body if isinstance(body, dict) else {}, path)
    kind = event.get("Type") if isinstance(event, dict) else None
    if kind == "IoTRule":
        name = conv.unique.claim("rule", rule_name(f"{logical_id}{event_name}"))
        conv.rule = name
        rule: dict[str, Any] = {}
        try:
            _sql(conv, e, name, e.need("sql"), e.text("awsIotSqlVersion"), rule)
        except Skip as exc:
            p.entry.change(f"event {event_name} not converted: {exc}")
            return
        rule["actions"] = [{"function": {"name": function}}]
        conv.draft.rules[name] = rule
        conv.draft.functions[function].rules.append(name)
        p.entry.became.append(f"rule `{name}`")
    elif kind in ("Api", "HttpApi"):
        _route(conv, e, logical_id, function, event_name)
    else:
        p.entry.change(
            f"event {event_name} ({kind}) not converted: rulebus calls functions from rules"
        )


def _route(conv: Converter, e: Props, logical_id: str, function: str, event_name: str) -> None:
    method = (e.text("method") or "ANY").upper()
    path = e.text("path") or "/"
    taken = {route["path"] for route in conv.draft.routes}
    if (
        method != "POST"
        or not _PATH.match(path)
        or path.startswith(RESERVED_PATHS)
        or path in taken
    ):
        e.entry.change(
            f"event {event_name} implies the route {method} {path}: not converted (rulebus routes"
            " publish POSTed JSON to a topic; no path parameters, no other methods)"
        )
        return
    topic = f"api{path}"
    name = conv.unique.claim("rule", rule_name(f"{logical_id}{event_name}"))
    conv.draft.routes.append({"path": path, "topic": topic})
    conv.draft.rules[name] = {
        "sql": f"SELECT * FROM '{topic}'",
        "sql_version": V2016,
        "actions": [{"function": {"name": function}}],
    }
    conv.draft.functions[function].rules.append(name)
    e.entry.became += [f"route `POST {path}`", f"rule `{name}`"]
    e.entry.change(
        f"event {event_name} (POST {path}): a route publishing to {topic!r}, where rule {name}"
        " calls the function; the route answers 202 once the event is stored (not the"
        " function's answer) and needs an API key with the ingest scope. An API that only"
        " publishes its body needs no function: give the route the topic it published to"
    )


def api_method(conv: Converter, p: Props, logical_id: str) -> None:
    method = (p.text("httpMethod") or "ANY").upper()
    parts: list[str] = []
    resources = p.template.source.data.get("Resources") or {}
    ref = p.data.get("ResourceId")
    while isinstance(ref, dict) and isinstance(ref.get("Ref"), str) and len(parts) < 16:
        resource = (resources.get(ref["Ref"]) or {}).get("Properties") or {}
        parts.insert(0, str(resource.get("PathPart", "?")))
        ref = resource.get("ParentId")
    raise Skip(
        f"implies the route {method} /{'/'.join(parts)}: API Gateway is not converted (rulebus"
        " routes publish POSTed JSON to a topic: see docs/app-file.md#api)"
    )


def api_route(conv: Converter, p: Props, logical_id: str) -> None:
    raise Skip(
        f"implies the route {p.text('routeKey')}: API Gateway is not converted (rulebus routes"
        " publish POSTed JSON to a topic: see docs/app-file.md#api)"
    )
