"""The HTTP API's contract, as an OpenAPI 3.1 document served at ``/openapi.json``.

It is made from the app file once, when the API starts: the app's routes
cannot change while it runs. Each operation lists every status the server can
give it (the tests hold the running server to that with schemathesis), and
its auth: the ``bearerAuth`` scheme with the scopes that will do, or
``security: []`` for an open route.

Patterns are ECMA-262, as JSON Schema wants them. Where ingest's Python
patterns take ``\\w`` (letters and digits of any script), the ones here are
ASCII: what they allow is accepted, and the descriptions say the rest.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from rulebus import __version__, codec
from rulebus.api.ingest import _ID, MAX_BATCH_BODY, MAX_BATCH_ITEMS, MAX_BODY, MAX_DEPTH
from rulebus.template.model import App, RouteSpec

Schema = dict[str, Any]

# The scopes of the built-in routes, as app.py's SCOPE has them (a test
# compares the two: importing SCOPE here would make an import cycle).
INGEST_SCOPES = ("ingest",)
PUBLISH_SCOPES = ("publish",)
STATS_SCOPES = ("admin", "metrics")
TRACE_SCOPES = ("admin",)
METRICS_SCOPES = ("metrics", "admin")

_LEVEL_CHARS = r"[A-Za-z0-9_:@=~-]"
_TOPIC_CHAR = r"[^/+#\x00-\x1f\x7f-\x9f]"
_TOPIC_FIRST = r"[^/+#$\x00-\x1f\x7f-\x9f]"
# A topic level that is one field of the body and nothing else, such as ${type}.
_FIELD_LEVEL = re.compile(r"\$\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}")


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


def _answer(description: str, schema: Schema, headers: Schema | None = None) -> Schema:
    answer: Schema = {"description": description, "content": _json(schema)}
    if headers:
        answer["headers"] = headers
    return answer


def _error(description: str, headers: Schema | None = None) -> Schema:
    return _answer(description, _ref("schemas", "Error"), headers)


_RETRY_AFTER = {"Retry-After": _ref("headers", "Retry-After")}

_COMPONENTS: Schema = {
    "securitySchemes": {
        "bearerAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": (
                "An API key, made by `rulebus keys create NAME --scope SCOPE…` and sent as"
                " `Authorization: Bearer rbk_…`. Scopes: `ingest` (the app's routes),"
                " `publish` (`/topics`, within the key's topic filters), `admin` and"
                " `metrics` (`/admin/stats`, `/metrics`). A key may have a rate limit."
            ),
        }
    },
    "headers": {
        "Retry-After": {
            "description": "Seconds to wait before sending the request again.",
            "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"},
        },
        "WWW-Authenticate": {
            "description": "Always `Bearer`.",
            "required": True,
            "schema": {"type": "string", "const": "Bearer"},
        },
    },
    "parameters": {
        "ClientId": {
            "name": "rulebus-client-id",
            "in": "header",
            "required": False,
            "description": (
                "Who sends the event, as rules see it in `clientid()`: 1-128 letters,"
                " digits and `. _ : @ = ~ / + -`. Without it, `http:<peer address>`."
            ),
            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:@=~/+-]{1,128}$"},
        }
    },
    "schemas": {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string", "description": "What was wrong."}},
        },
        "Accepted": {
            "type": "object",
            "required": ["id", "topic", "duplicate"],
            "properties": {
                "id": {"type": "string", "description": "The event's id, given or made."},
                "topic": {"type": "string", "description": "The topic it was published to."},
                "duplicate": {"type": "boolean"},
            },
        },
        "Rejected": {
            "type": "object",
            "required": ["error", "status"],
            "properties": {
                "error": {"type": "string"},
                "status": {"type": "integer", "enum": [400, 413]},
            },
        },
        "BatchResult": {
            "type": "object",
            "required": ["accepted", "rejected", "results"],
            "properties": {
                "accepted": {"type": "integer", "minimum": 0},
                "rejected": {"type": "integer", "minimum": 0},
                "results": {
                    "type": "array",
                    "description": "One result per item, in the order of the items.",
                    "items": {"oneOf": [_ref("schemas", "Accepted"), _ref("schemas", "Rejected")]},
                },
            },
        },
        "Published": {
            "type": "object",
            "required": ["id", "topic"],
            "properties": {"id": {"type": "string"}, "topic": {"type": "string"}},
        },
        "Health": {
            "type": "object",
            "required": ["status", "app"],
            "properties": {
                "status": {"type": "string", "const": "ok"},
                "app": {"type": "string", "description": "The app's name."},
            },
        },
        "Trace": {
            "type": "object",
            "required": [
                "event",
                "dispatched",
                "app_changed",
                "rules",
                "dead_letters",
                "retrying",
                "children",
            ],
            "description": "What happened to one event: docs/trace-and-replay.md.",
            "properties": {
                "event": {"type": "object", "description": "The event as the log has it."},
                "dispatched": {"type": "boolean"},
                "app_changed": {
                    "type": "boolean",
                    "description": "The app's rules changed since the event was dispatched.",
                },
                "rules": {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": "Each rule: matched (with its attempts) or not (with the"
                    " reason: topic, where, error, not delivered).",
                },
                "dead_letters": {"type": "array", "items": {"type": "object"}},
                "retrying": {"type": "array", "items": {"type": "object"}},
                "children": {
                    "type": "array",
                    "items": {"type": "object"},
                    "description": "The events its deliveries published, each with its trace.",
                },
            },
        },
        "Stats": {
            "type": "object",
            "required": ["head", "dispatched", "retrying", "dead_letters", "engines"],
            "properties": {
                "head": {
                    "type": "integer",
                    "description": "The position of the last event appended (on NATS, of"
                    " the last message).",
                },
                "dispatched": {
                    "type": "integer",
                    "description": "The position up to which every event has been"
                    " dispatched to its rules; `dispatched >= head` means all were.",
                },
                "retrying": {"type": "integer", "description": "Deliveries waiting for a retry."},
                "dead_letters": {"type": "integer"},
                "engines": {
                    "type": "integer",
                    "description": "Engine processes dispatching now (on the embedded bus,"
                    " its partitions).",
                },
            },
        },
    },
}

_BAD_BODY = (
    "Invalid JSON (or numbers beyond a double, integers beyond 64 bits, nesting deeper"
    f" than {MAX_DEPTH} levels), a body of the wrong kind, a missing field, an invalid id,"
    " topic or topic level, or an invalid `rulebus-client-id` header."
)
# /admin/stats reads the request's headers as ingest does, client id included.
_BAD_HEADER = "An invalid `rulebus-client-id` header."
_UNAVAILABLE = "A backend cannot be reached, or its disk is full: nothing was stored."


def _errors(route_auth: str, *, body: bool) -> Schema:
    """The error answers of a route that reads a body (or not) with this auth."""
    errors: Schema = {"400": _error(_BAD_BODY if body else _BAD_HEADER)}
    if route_auth == "key":
        errors["401"] = _error(
            "No `Authorization: Bearer` header, or an unknown or revoked key.",
            {"WWW-Authenticate": _ref("headers", "WWW-Authenticate")},
        )
        errors["403"] = _error("The key lacks the scope (or, on /topics, the topic).")
    if body:
        errors["413"] = _error("The body, or an event, is over its limit.")
    if route_auth == "key":
        errors["429"] = _error("The key is over its rate limit.", _RETRY_AFTER)
    errors["503"] = _error(_UNAVAILABLE, _RETRY_AFTER)
    return errors


def _auth(scopes: tuple[str, ...] | None) -> Schema:
    """``security`` for a route needing one of ``scopes``, or none (``None``: open)."""
    if scopes is None:
        return {"security": []}
    return {
        # Alternatives: a key with any one of the scopes will do.
        "security": [{"bearerAuth": [scope]} for scope in scopes],
        "x-rulebus-scope": list(scopes),
    }


def _needs(scopes: tuple[str, ...] | None) -> str:
    if scopes is None:
        return "Open: no API key needed."
    either = " or ".join(f"`{scope}`" for scope in scopes)
    return f"Needs an API key with the {either} scope."


def _event_schema(route: RouteSpec) -> Schema:
    """One event of ``route``: a JSON object with its required fields and its id."""
    fields: dict[str, list[Schema]] = {}
    required = list(route.required)
    for level in route.topic_levels:
        match = _FIELD_LEVEL.fullmatch(level.text)
        if match is None:
            continue
        name = match[1]
        fields.setdefault(name, []).append(
            {
                "type": "string",
                "pattern": f"^{_LEVEL_CHARS}{{1,128}}$",
                "description": "A level of the topic: one word of 1-128 letters or digits"
                " (of any script), `_ - : @ = ~`. An integer or a boolean is taken as its text.",
            }
        )
        # Absent, it would render as an empty level: the event would be refused.
        if name != route.id_field and name not in required:
            required.append(name)
    fields.setdefault(route.id_field, []).append(
        {
            "type": "string",
            "pattern": _ID.pattern,
            "description": "The event's id: when absent (or null) the server makes one."
            " An event whose id exists already is a duplicate and is not stored again.",
        }
    )
    for name in required:
        if name not in fields:
            fields[name] = [{"not": {"type": "null"}, "description": "Any JSON value but null."}]
    properties: Schema = {}
    for name, schemas in fields.items():
        properties[name] = schemas[0] if len(schemas) == 1 else {"allOf": schemas}
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "description": f"The event. At most {MAX_BODY} bytes as JSON, {MAX_DEPTH} levels"
        f" deep. Its topic is `{route.topic}`.",
    }


def _route_operations(route: RouteSpec) -> dict[str, Schema]:
    scopes = INGEST_SCOPES if route.auth == "key" else None
    event = _event_schema(route)
    paths = {
        route.path: {
            "post": {
                "summary": f"Publish one event to {route.topic}",
                "description": f"{_needs(scopes)} Answers once the event is committed.",
                "parameters": [_ref("parameters", "ClientId")],
                **_auth(scopes),
                "requestBody": {"required": True, "content": _json(event)},
                "responses": {
                    "202": _answer("Stored.", _accepted(duplicate=False)),
                    "200": _answer(
                        "An event with this id existed already: nothing was stored.",
                        _accepted(duplicate=True),
                    ),
                    **_errors(route.auth, body=True),
                },
            }
        }
    }
    if route.batch_path:
        items = {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_ITEMS, "items": event}
        paths[route.batch_path] = {
            "post": {
                "summary": f"Publish up to {MAX_BATCH_ITEMS} events to {route.topic}",
                "description": f"{_needs(scopes)} One commit for the whole batch, of at most"
                f" {MAX_BATCH_BODY} bytes; each event is validated as on {route.path}.",
                "parameters": [_ref("parameters", "ClientId")],
                **_auth(scopes),
                "requestBody": {
                    "required": True,
                    "description": "A JSON array of events, or NDJSON: one event per line, with"
                    " content-type application/x-ndjson (or application/jsonlines).",
                    "content": {
                        "application/json": {"schema": items},
                        "application/x-ndjson": {"schema": items},
                    },
                },
                "responses": {
                    "200": _answer("Every event was accepted.", _ref("schemas", "BatchResult")),
                    "207": _answer(
                        "Some events were refused: the results say which and why.",
                        _ref("schemas", "BatchResult"),
                    ),
                    **_errors(route.auth, body=True),
                },
            }
        }
    return paths


def _accepted(*, duplicate: bool) -> Schema:
    return {
        "allOf": [_ref("schemas", "Accepted"), {"properties": {"duplicate": {"const": duplicate}}}]
    }


def openapi_document(app: App) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``app``'s HTTP API: built-in routes and the app's."""
    paths: Schema = {
        "/healthz": {
            "get": {
                "summary": "Whether the API is up",
                "description": _needs(None),
                **_auth(None),
                "responses": {"200": _answer("Up.", _ref("schemas", "Health"))},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "description": _needs(None),
                **_auth(None),
                "responses": {"200": _answer("The OpenAPI 3.1 document.", {"type": "object"})},
            }
        },
        "/topics/{topic}": {
            "post": {
                "summary": "Publish one event straight to a topic",
                "description": f"{_needs(PUBLISH_SCOPES)} The topic must match one of the"
                " key's topic filters. Answers once the event is committed.",
                "parameters": [
                    {
                        "name": "topic",
                        "in": "path",
                        "required": True,
                        "description": "The rest of the path, percent-decoded as UTF-8:"
                        " 1-8 levels separated by `/` (sent as is or as `%2F`), at most 256"
                        " bytes; no wildcards (`+`, `#`), empty levels, control characters"
                        " or leading `$`.",
                        "schema": {
                            "type": "string",
                            "maxLength": 256,
                            "pattern": f"^{_TOPIC_FIRST}{_TOPIC_CHAR}*(/{_TOPIC_CHAR}+){{0,7}}$",
                        },
                    },
                    _ref("parameters", "ClientId"),
                ],
                **_auth(PUBLISH_SCOPES),
                "requestBody": {
                    "required": True,
                    "content": _json(
                        {
                            "type": "object",
                            "description": f"Any JSON object, at most {MAX_BODY} bytes and"
                            f" {MAX_DEPTH} levels deep.",
                        }
                    ),
                },
                "responses": {
                    "202": _answer("Stored.", _ref("schemas", "Published")),
                    **_errors("key", body=True),
                },
            }
        },
        "/admin/stats": {
            "get": {
                "summary": "The backlog of the bus",
                "description": _needs(STATS_SCOPES),
                **_auth(STATS_SCOPES),
                "responses": {
                    "200": _answer("The bus's figures.", _ref("schemas", "Stats")),
                    **_errors("key", body=False),
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "description": f"{_needs(METRICS_SCOPES)} This host's counters (every rulebus"
                " process on its data directory) and the bus's gauges, in the Prometheus text"
                " format (version 0.0.4): docs/observability.md.",
                "parameters": [_ref("parameters", "ClientId")],
                **_auth(METRICS_SCOPES),
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "404": _error("Metrics are off in this app (`metrics: {enabled: false}`)."),
                    **_errors("key", body=False),
                },
            }
        },
        "/admin/events/{id}/trace": {
            "get": {
                "summary": "The trace of one event",
                "description": f"{_needs(TRACE_SCOPES)} The event, the rules it matched (each"
                " attempt of each action, with times, durations and errors) and those it did"
                " not (with the reason), its retries and dead letters, and the events it"
                " caused, recursively. As `rulebus trace ID --json` prints it.",
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "description": "The event's id.",
                        "schema": {"type": "string", "pattern": _ID.pattern},
                    },
                    _ref("parameters", "ClientId"),
                ],
                **_auth(TRACE_SCOPES),
                "responses": {
                    "200": _answer("The trace.", _ref("schemas", "Trace")),
                    "404": _error("No such event in the log (or retention removed it)."),
                    **_errors("key", body=False),
                },
            }
        },
    }
    for route in app.routes:
        paths.update(_route_operations(route))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"rulebus: {app.name}",
            "version": __version__,
            "description": "Events in, over HTTP: the app's routes and rulebus's own."
            ' Every error is JSON `{"error": "…"}`; unknown paths answer 404, unknown'
            " methods 405.",
        },
        "paths": paths,
        "components": _COMPONENTS,
    }


def openapi_endpoint(app: App) -> Callable[[Request], Awaitable[Response]]:
    """The handler of ``GET /openapi.json``: the document, encoded once."""
    body = codec.dumps(openapi_document(app))

    async def endpoint(request: Request) -> Response:
        return Response(body, media_type="application/json")

    return endpoint
