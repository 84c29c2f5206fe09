"""Load an app folder: parse ``rulebus.yaml``, validate every key, compile every rule."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
from pathlib import Path

from rulebus.actions import registry
from rulebus.actions.base import Action, Declared, template_option, warning
from rulebus.actions.http import check_url, read_concurrency, read_headers
from rulebus.backends.base import validate_bucket
from rulebus.config.options import Options, check_topic_template, placeholders
from rulebus.config.source import Source, dotted, read_source
from rulebus.egress import Egress
from rulebus.errors import BadInput, RulebusError, SqlError, TemplateError
from rulebus.functions import load_handler
from rulebus.mail import read_email
from rulebus.mqtt import read_mqtt
from rulebus.sql import DEFAULT_SQL_VERSION, SQL_VERSIONS, compile_rule, compile_template
from rulebus.sql.topics import filters_overlap
from rulebus.template.model import (
    App,
    FunctionSpec,
    NotificationSpec,
    RetentionSpec,
    RetrySpec,
    RouteSpec,
    RuleSpec,
    SubscriberSpec,
    TableSpec,
)

APP_FILE = "rulebus.yaml"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_ROUTE = re.compile(r"^(/[A-Za-z0-9._-]+)+$")
RESERVED_PATHS = ("/healthz", "/topics", "/admin", "/openapi.json", "/metrics", "/console")
AUTH_MODES = ("key", "none")


def load_app(path: Path | str) -> App:
    """Load and validate an app folder (or its ``rulebus.yaml``); raises TemplateError."""
    path = Path(path)
    if not path.exists():
        raise TemplateError(
            f"no such app folder (an app is a folder with a {APP_FILE})",
            file=str(path),
            line=None,
            key="",
        )
    file = path / APP_FILE if path.is_dir() else path
    source = read_source(file)
    if not source.data:
        raise TemplateError(
            "the app file is empty: it needs at least rules (see docs/app-file.md)",
            file=str(file),
            line=None,
            key="",
        )
    top = Options(source, (), source.data, what="a mapping at the top level")
    app = App(root=file.parent.resolve(), file=str(file), name=top.text("name", file.parent.name))
    app.retry = _retry(top.section("retry"), RetrySpec())
    app.retention = _retention(top.section("retention"))
    app.egress = _egress(top.section("egress"))
    app.trace = _trace(top.section("trace"))
    app.metrics = _enabled(top.section("metrics"))
    app.tables = _tables(top.section("tables"))
    app.buckets = _buckets(top)
    app.notifications = _notifications(top.section("notifications"), app.egress, app.warnings)
    app.functions = _functions(top.section("functions"), app.root, app.warnings)
    declared = Declared(
        tables={name: spec.key for name, spec in app.tables.items()},
        buckets=frozenset(app.buckets),
        notifications=frozenset(app.notifications),
        functions=frozenset(app.functions),
        egress=app.egress,
        warnings=app.warnings,
    )
    app.mqtt = read_mqtt(top.section("mqtt"), app.name, app.root, declared)
    declared = dataclasses.replace(declared, brokers=app.mqtt.brokers)
    app.rules = _rules(top.section("rules"), declared, app.retry)
    if not app.rules:
        app.warnings.append(f"{file}: no rules: events are stored, and nothing acts on them")
    app.routes = _routes(top.section("api"), app.warnings)
    top.done()
    return app


def _name(opts: Options, key: str, what: str) -> None:
    if not _NAME.match(key):
        opts.fail(key, f"invalid {what} name: use letters, digits, '-' and '_' (at most 128)")


def _retry(opts: Options, default: RetrySpec) -> RetrySpec:
    spec = RetrySpec(
        attempts=opts.integer("attempts", default.attempts, minimum=1),
        base_delay=opts.duration("backoff", default.base_delay),
        max_delay=opts.duration("max_backoff", default.max_delay),
    )
    if spec.max_delay < spec.base_delay:
        opts.fail("max_backoff", "is shorter than backoff")
    opts.done()
    return spec


def _retention(opts: Options) -> RetentionSpec:
    default = RetentionSpec()
    spec = RetentionSpec(
        max_age=opts.optional_duration("max_age"),
        max_size=opts.size("max_size"),
        duplicate_window=opts.duration("duplicate_window", default.duplicate_window),
        compact_every=opts.duration("compact_every", default.compact_every),
    )
    opts.done()
    return spec


def _trace(opts: Options) -> bool:
    enabled = opts.flag("enabled", True)
    opts.done()
    return enabled


def _enabled(opts: Options) -> bool:
    enabled = opts.flag("enabled", True)
    opts.done()
    return enabled


def _egress(opts: Options) -> Egress:
    networks = opts.str_list("allow")
    try:
        egress = Egress.parse(networks)
    except BadInput as exc:
        opts.fail("allow", exc.message)
    opts.done()
    return egress


def _tables(opts: Options) -> dict[str, TableSpec]:
    tables: dict[str, TableSpec] = {}
    for name in opts.value:
        if not _FIELD.match(name.replace("-", "_")):
            opts.fail(
                name, "invalid table name: start with a letter; use letters, digits, '_', '-'"
            )
        table = opts.section(name)
        key = table.str_list("key", required=True)
        for i, field in enumerate(key):
            if not _FIELD.match(field) or field.lower() == "item":
                table.fail("key", f"invalid key field {field!r} (position {i})")
        # SQL (and so the table store) does not tell names apart by case.
        if len({field.lower() for field in key}) != len(key):
            table.fail("key", "key fields repeat (names are not case-sensitive)")
        clash = [other for other in tables if other.lower() == name.lower()]
        if clash:
            opts.fail(
                name, f"table {name!r} clashes with {clash[0]!r} (names are not case-sensitive)"
            )
        table.done()
        tables[name] = TableSpec(name, tuple(key))
    return tables


def _buckets(top: Options) -> tuple[str, ...]:
    value = top.raw("buckets")
    if value is None:
        return ()
    names = list(value) if isinstance(value, dict) else value
    if not isinstance(names, list):
        top.fail("buckets", "expected a list of bucket names")
    for i, name in enumerate(names):
        key = name if isinstance(value, dict) else i
        if not isinstance(name, str):
            top.source.fail(("buckets", key), "expected a bucket name")
        try:
            validate_bucket(name)
        except BadInput as exc:
            top.source.fail(("buckets", key), exc.message)
        if isinstance(value, dict):
            Options(top.source, ("buckets", name), value[name]).done()
    return tuple(names)


def _notifications(
    opts: Options, egress: Egress, warnings: list[str]
) -> dict[str, NotificationSpec]:
    out = {}
    for name in opts.value:
        _name(opts, name, "notification")
        spec = opts.section(name)
        subscribers = spec.raw("subscribers")
        if not isinstance(subscribers, list) or not subscribers:
            spec.fail("subscribers", "expected a list of subscribers (webhook, email or log)")
        subs = []
        for i, item in enumerate(subscribers):
            path = (*spec.path, "subscribers", i)
            kinds = ("webhook", "email", "log")
            kind, body = _single_key(spec.source, path, item, kinds, "subscriber")
            sub = Options(spec.source, (*path, kind), body)
            if kind == "log":
                sub.done()
                subs.append(SubscriberSpec("log"))
                continue
            if kind == "email":
                mail = read_email(sub, name, _from_env(sub, "smtp"), warnings)
                sub.done()
                subs.append(SubscriberSpec("email", email=mail))
                continue
            url = _from_env(sub, "url")
            secrets = _secrets(sub)
            timeout = sub.duration("timeout", 10.0)
            headers = read_headers(sub, warnings)
            concurrency = read_concurrency(sub)
            sub.done()
            if url is None:
                continue  # url_env names a variable that is not set: subscriber disabled
            key = "url" if sub.has("url") else "url_env"
            check_url(sub, key, url, url, egress, warnings)
            if not secrets and sub.has("secret_env"):
                where = f"{sub.source.file}:{sub.source.line((*sub.path, 'secret_env'))}"
                warnings.append(
                    f"{where}: {sub.value['secret_env']} is not set: webhooks to {url} go unsigned"
                )
            subs.append(SubscriberSpec("webhook", url, secrets, timeout, headers, concurrency))
        spec.done()
        out[name] = NotificationSpec(name, tuple(subs))
    return out


def _secrets(sub: Options) -> tuple[str, ...]:
    """``secret`` (one, or a list), or ``secret_env`` holding secrets separated by spaces."""
    value = sub.raw("secret")
    if isinstance(value, list):
        listed = sub.str_list("secret")
        if sub.has("secret_env"):
            sub.fail("secret_env", "give either secret or secret_env, not both")
        if not listed:
            sub.fail("secret", "expected at least one secret")
        return tuple(listed)
    text = _from_env(sub, "secret")
    return tuple(text.split()) if text else ()


def _from_env(opts: Options, key: str) -> str | None:
    """``key`` literally, or ``key_env`` naming an environment variable (unset: None)."""
    literal = opts.optional_str(key)
    variable = opts.optional_str(f"{key}_env")
    if literal and variable:
        opts.fail(f"{key}_env", f"give either {key} or {key}_env, not both")
    if variable:
        return os.environ.get(variable) or None
    if literal is None and key == "url":
        opts.fail(None, "a webhook needs url or url_env")
    return literal


def _single_key(
    source: Source, path: tuple[str | int, ...], item: object, kinds: tuple[str, ...], what: str
) -> tuple[str, object]:
    if not isinstance(item, dict) or len(item) != 1:
        source.fail(path, f"expected a {what} as a mapping with one key: one of {', '.join(kinds)}")
    ((kind, body),) = item.items()
    if kind not in kinds:
        hint = difflib.get_close_matches(kind, kinds, n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else f" (expected one of {', '.join(kinds)})"
        source.fail((*path, kind), f"unknown {what} {kind!r}{extra}")
    return kind, body


def _functions(opts: Options, root: Path, warnings: list[str]) -> dict[str, FunctionSpec]:
    out = {}
    for name in opts.value:
        _name(opts, name, "function")
        spec = opts.section(name)
        handler = spec.text("handler", required=True)
        try:
            loaded = load_handler(root, handler)
        except RulebusError as exc:
            spec.fail("handler", str(exc))
        # Stubs written by ``rulebus import aws`` say so until someone ports them.
        if getattr(inspect.getmodule(loaded), "RULEBUS_UNPORTED", False):
            warnings.append(
                warning(spec, "handler", f"function {name}: {handler} is not ported yet (it fails)")
            )
        out[name] = FunctionSpec(
            name,
            handler,
            timeout=spec.duration("timeout", 30.0),
            concurrency=spec.integer("concurrency", 16, minimum=1),
        )
        spec.done()
    return out


def _rules(opts: Options, declared: Declared, retry: RetrySpec) -> dict[str, RuleSpec]:
    out = {}
    for name in opts.value:
        _name(opts, name, "rule")
        spec = opts.section(name)
        sql = spec.text("sql", required=True)
        version = spec.text("sql_version", DEFAULT_SQL_VERSION)
        if version not in SQL_VERSIONS:
            spec.fail(
                "sql_version",
                f"unknown SQL version {version!r}; expected one of {', '.join(SQL_VERSIONS)}",
            )
        try:
            compiled = compile_rule(sql, version)
        except SqlError as exc:
            line = spec.source.line((*spec.path, "sql"))
            # A block scalar starts on the line after its key.
            if line is not None and exc.line is not None and "\n" in sql:
                line += exc.line
            where = "" if exc.column is None else f" at column {exc.column}"
            raise _template_error(spec, "sql", f"{exc.message}{where}", line) from None
        raw_actions = spec.raw("actions")
        if not isinstance(raw_actions, list) or not raw_actions:
            spec.fail("actions", "expected a list of actions")
        actions = tuple(
            _action(spec, ("actions", i), item, declared) for i, item in enumerate(raw_actions)
        )
        for i, action in enumerate(actions):
            target = action.publishes_to()
            if target is not None and compiled.topic_filter.matches(target):
                spec.source.fail(
                    (*spec.path, "actions", i, action.kind, "topic"),
                    f"publishing to {target!r} matches this rule's own filter"
                    f" {compiled.topic_filter.text!r}: every event would loop",
                )
        error_action = None
        if spec.has("error_action"):
            error_action = _action(spec, ("error_action",), spec.raw("error_action"), declared)
        enabled = spec.flag("enabled", True)
        rule_retry = _retry(spec.section("retry"), retry) if spec.has("retry") else retry
        key = template_option(spec, "partition_key", required=False)
        spec.done()
        out[name] = RuleSpec(
            name, sql, version, compiled, actions, error_action, enabled, rule_retry, key
        )
    _check_partition_keys(opts, out)
    return out


def _check_partition_keys(opts: Options, rules: dict[str, RuleSpec]) -> None:
    """An event has one partition key: rules that can match one topic must agree on it."""
    keyed = [r for r in rules.values() if r.partition_key is not None and r.enabled]
    for i, rule in enumerate(keyed):
        for other in keyed[:i]:
            assert rule.partition_key is not None and other.partition_key is not None
            if rule.partition_key.text != other.partition_key.text and filters_overlap(
                rule.compiled.topic_filter.levels, other.compiled.topic_filter.levels
            ):
                opts.section(rule.name).fail(
                    "partition_key",
                    f"{rule.partition_key.text!r} differs from rule {other.name!r}'s"
                    f" {other.partition_key.text!r}, and both rules can match the same topic;"
                    " an event has one partition key",
                )


def _template_error(spec: Options, key: str, message: str, line: int | None) -> TemplateError:
    return TemplateError(message, file=spec.source.file, line=line, key=dotted((*spec.path, key)))


def _action(spec: Options, rel: tuple[str | int, ...], item: object, declared: Declared) -> Action:
    path = (*spec.path, *rel)
    kind, body = _single_key(spec.source, path, item, registry.kinds(), "action")
    opts = Options(spec.source, (*path, kind), body)
    action = registry.get(kind).from_options(opts, declared)
    opts.done()
    return action


def _routes(opts: Options, warnings: list[str]) -> tuple[RouteSpec, ...]:
    routes = opts.raw("routes")
    opts.done()
    if routes is None:
        return ()
    if not isinstance(routes, list):
        opts.fail("routes", "expected a list of routes")
    out = []
    seen: set[str] = set()
    for i, item in enumerate(routes):
        route = Options(opts.source, (*opts.path, "routes", i), item)
        path = route.text("path", required=True)
        batch = route.optional_str("batch_path")
        for key, value in (("path", path), ("batch_path", batch)):
            if value is None:
                continue
            if not _ROUTE.match(value):
                route.fail(key, f"expected a path such as /event, got {value!r}")
            if value.startswith(RESERVED_PATHS) or value in seen:
                route.fail(key, f"path {value!r} is already taken")
            seen.add(value)
        method = route.text("method", "POST")
        if method.upper() != "POST":
            route.fail("method", "only POST routes publish events")
        topic = route.text("topic", required=True)
        check_topic_template(route, "topic", topic)
        if any("/" in part for part in placeholders(topic)):
            route.fail(
                "topic", "a route's topic may not use '/' inside ${…}: each level is one value"
            )
        levels = []
        for level in topic.split("/"):
            try:
                levels.append(compile_template(level))
            except SqlError as exc:
                route.fail("topic", f"invalid template: {exc}")
        required = route.str_list("required")
        id_field = route.text("id_field", "id")
        auth = route.text("auth", "key")
        if auth not in AUTH_MODES:
            route.fail("auth", f"expected one of {', '.join(AUTH_MODES)}, got {auth!r}")
        if auth == "none":
            where = f"{route.source.file}:{route.source.line((*route.path, 'auth'))}"
            warnings.append(
                f"{where}: route {path} is open (auth: none): anyone who can reach the API"
                " can publish to it"
            )
        route.done()
        out.append(RouteSpec(path, topic, tuple(levels), tuple(required), id_field, batch, auth))
    return tuple(out)
