"""Turning request bodies into events: limits, decoding, validation, ids, topics.

Everything that becomes part of a topic or a key is validated here, before
the event is appended, so a bad request never reaches the bus.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from rulebus import codec
from rulebus.api.auth import require_topic
from rulebus.backends.base import EventLog
from rulebus.errors import BadInput, RulebusError
from rulebus.events import Event, new_id
from rulebus.keys import ApiKey
from rulebus.metrics import IngestMetrics
from rulebus.sql import EvalContext, Template, validate_topic
from rulebus.template.model import RouteSpec

MAX_BODY = 128 * 1024
MAX_BATCH_BODY = 16 * 1024 * 1024
MAX_BATCH_ITEMS = 1000
MAX_DEPTH = 254  # what orjson will encode; deeper bodies are refused, not stored
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# A topic level taken from a body is one word: letters and digits of any
# script, '_', '-', ':', '@', '=', '~'. No separators or wildcards (MQTT's or
# NATS's), no spaces, control characters or JSON structure.
_NO_TOPIC = EvalContext(topic="")  # a route's topic templates see only the body
_LEVEL = re.compile(r"[\w:@=~-]{1,128}")
# A client id a publisher gives (an HTTP header, an MQTT 5 user property).
CLIENT_ID = re.compile(r"[\w.:@=~/+-]{1,128}")


def now_ms() -> int:
    return int(time.time() * 1000)


def decode(body: bytes) -> Any:
    if not body.strip():
        raise BadInput("empty body: expected a JSON document")
    try:
        value = codec.loads(body)
    except codec.DecodeError as exc:
        raise BadInput(f"invalid JSON: {exc}") from None
    if _LONG_NUMBER.search(body):
        _refuse_wide_integers(body)
    return value


# orjson turns integers beyond 64 bits into floats without a word, losing
# digits. A body with a run of 19 or more digits (rare) is parsed once more,
# exactly, to refuse those integers instead of storing them changed.
_LONG_NUMBER = re.compile(rb"\d{19}")
_INT64 = range(-(2**63), 2**64)


def _refuse_wide_integers(body: bytes) -> None:
    def check(text: str) -> int:
        number = int(text)
        if number not in _INT64:
            raise BadInput(f"integer {text[:40]} does not fit in 64 bits; send it as a string")
        return number

    try:
        json.loads(body, parse_int=check)
    except RecursionError:
        raise BadInput(f"cannot store this JSON: nested deeper than {MAX_DEPTH} levels") from None


def decode_batch(body: bytes, content_type: str) -> list[Any]:
    """A JSON array, or NDJSON (one document per line)."""
    if "ndjson" in content_type or "jsonlines" in content_type:
        lines = [line for line in body.split(b"\n") if line.strip()]
        items: list[Any] = []
        for n, line in enumerate(lines, 1):
            try:
                items.append(decode(line))
            except BadInput as exc:
                items.append(BadInput(f"line {n}: {exc.message}"))
    else:
        items = decode(body)
        if not isinstance(items, list):
            raise BadInput(
                "expected a JSON array of events (or NDJSON with content-type application/x-ndjson)"
            )
    if not items:
        raise BadInput("empty batch")
    if len(items) > MAX_BATCH_ITEMS:
        raise BadInput(
            f"batch of {len(items)} events; at most {MAX_BATCH_ITEMS} per request", status=413
        )
    return items


def event_id(value: Any) -> str:
    if not isinstance(value, str) or not _ID.fullmatch(value):
        raise BadInput(
            "invalid id: expected a string of 1-128 letters, digits, '.', '_', ':' or '-',"
            " starting with a letter or digit"
        )
    return value


def route_event(
    route: RouteSpec, body: Any, client_id: str | None, ts: int, principal: str | None = None
) -> Event:
    """Validate a route's body, assign its id and render its topic."""
    if not isinstance(body, dict):
        raise BadInput(f"expected a JSON object, got {_json_kind(body)}")
    for field in route.required:
        if body.get(field) is None:
            raise BadInput(f"missing required field {field!r}")
    fresh = body.get(route.id_field) is None
    if fresh:
        body[route.id_field] = new_id()
    id_ = event_id(body[route.id_field])
    topic = render_topic(route, body)
    return Event(id_, topic, ts, body, client_id, principal, raw=encode(body), fresh_id=fresh)


def render_topic(route: RouteSpec, body: dict[str, Any]) -> str:
    return render_levels(route.topic_levels, body, _NO_TOPIC)


def render_levels(templates: Sequence[Template], body: dict[str, Any], ctx: EvalContext) -> str:
    """A topic rendered one template per level; a level filled in from outside must be
    one word."""
    levels = []
    for template in templates:
        level = template.render(body, ctx)
        if template.is_constant:
            levels.append(level)
            continue
        # A value from the body must stay one level: no separator, no
        # wildcard, nothing empty and nothing reserved.
        if not _LEVEL.fullmatch(level):
            raise BadInput(
                f"invalid topic level {level[:140]!r}: expected 1-128 letters,"
                " digits, '_', '-', ':', '@', '=' or '~'"
            )
        levels.append(level)
    return validate_topic("/".join(levels))


def topic_event(
    topic: str, body: Any, client_id: str | None, ts: int, principal: str | None = None
) -> Event:
    """An event published straight to ``topic``: a JSON object, as the routes take."""
    validate_topic(topic)
    if not isinstance(body, dict):
        raise BadInput(f"expected a JSON object, got {_json_kind(body)}")
    return Event(new_id(), topic, ts, body, client_id, principal, raw=encode(body), fresh_id=True)


async def publish_to_topic(
    log: EventLog,
    key: ApiKey,
    topic: str,
    read_body: Callable[[], Awaitable[bytes]],
    client_id: str,
    counts: IngestMetrics,
) -> Event:
    """What ``POST /topics/{topic}`` does once it knows the caller's key (the console's
    Send does it too): the topic is checked against the key before the body is read,
    and the event is durably appended before this returns."""
    try:
        validate_topic(topic)
        require_topic(key, topic)
        body = decode(await read_body())
        event = topic_event(topic, body, client_id, now_ms(), key.name)
        (appended,) = await log.append([event])
    except RulebusError as exc:
        counts.refused(exc)
        raise
    counts.add("duplicate" if appended.duplicate else "accepted")
    return event


def encode(payload: Any) -> bytes:
    """The stored form of a payload, made once; also where size and depth are enforced."""
    try:
        raw = codec.dumps(payload)
    except codec.EncodeError as exc:
        raise BadInput(
            f"cannot store this JSON: {exc} (at most {MAX_DEPTH} levels of nesting)"
        ) from None
    if len(raw) > MAX_BODY:
        raise BadInput(
            f"event of {len(raw)} bytes is over the limit of {MAX_BODY} bytes", status=413
        )
    return raw


def _json_kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if value is None:
        return "null"
    return "a number"
