"""The Starlette application: ingest routes from the app file plus built-in routes.

Every route but ``/healthz`` (and app routes declared ``auth: none``) needs
an API key with the route's scope (``SCOPE``), checked before the body is read.

Errors become responses in one place (``_error``): a ``BadInput`` keeps its
status, a ``NotFound`` is 404, an ``Unavailable`` backend a 503 that names it,
anything else is a 500 with no details.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from starlette.applications import Starlette
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from rulebus import codec, metrics
from rulebus.api import access
from rulebus.api.auth import Authenticator, require
from rulebus.api.ingest import (
    CLIENT_ID,
    MAX_BATCH_BODY,
    MAX_BODY,
    decode,
    decode_batch,
    now_ms,
    publish_to_topic,
    route_event,
)
from rulebus.api.openapi import openapi_endpoint
from rulebus.console import console_routes
from rulebus.errors import BadInput, NotFound, RateLimited, RulebusError, Unavailable
from rulebus.keys import ApiKey
from rulebus.logs import Every
from rulebus.template.model import RouteSpec
from rulebus.trace import trace

if TYPE_CHECKING:
    from rulebus.runtime import Runtime

log = logging.getLogger("rulebus.api")


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return codec.dumps(content)


class Incoming:
    """What ingest reads from a request's headers, found in one pass over them."""

    __slots__ = ("authorization", "client_id", "content_length", "content_type")

    def __init__(self, request: Request) -> None:
        self.content_length: int | None = None
        self.content_type = ""
        self.authorization: str | None = None
        given = None
        for name, value in request.scope["headers"]:
            if name == b"content-length":
                self.content_length = int(value) if value.isdigit() else None
            elif name == b"content-type":
                self.content_type = value.decode("latin-1")
            elif name == b"authorization":
                self.authorization = value.decode("latin-1")
            elif name == b"rulebus-client-id":
                given = value.decode("latin-1")
        if given is not None:
            if not CLIENT_ID.fullmatch(given):
                raise BadInput(
                    "invalid rulebus-client-id header: expected 1-128 letters, digits"
                    " and . _ : @ = ~ / + -"
                )
            self.client_id = given
        else:
            client = request.scope.get("client")
            self.client_id = f"http:{client[0]}" if client else "http"


async def read_body(request: Request, incoming: Incoming, limit: int) -> bytes:
    length = incoming.content_length
    if length is not None and length > limit:
        raise BadInput(f"body of {length} bytes is over the limit of {limit} bytes", status=413)
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadInput(f"body is over the limit of {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


#: The scopes that let a key use each built-in route (any one of them will do).
SCOPE = {
    "ingest": ("ingest",),  # the app's routes
    "/topics": ("publish",),
    "/admin/stats": ("admin", "metrics"),
    "/admin/events/{id}/trace": ("admin",),
    "/metrics": ("metrics", "admin"),
}


def build_api(runtime: Runtime, auth: Authenticator) -> Starlette:
    bus = runtime.bus

    async def caller(incoming: Incoming, route: str, what: str) -> ApiKey:
        key = await auth.authenticate(incoming.authorization)
        access.note_key(key.name)
        require(key, SCOPE[route], what)
        return key

    def single(route: RouteSpec) -> Any:
        what = f"POST {route.path}"
        counts = metrics.IngestMetrics(route.path)

        async def endpoint(request: Request) -> Response:
            incoming = Incoming(request)
            principal = None
            if route.auth == "key":
                principal = (await caller(incoming, "ingest", what)).name
            try:
                body = decode(await read_body(request, incoming, MAX_BODY))
                event = route_event(route, body, incoming.client_id, now_ms(), principal)
                (appended,) = await bus.append([event])
            except RulebusError as exc:
                counts.refused(exc)
                raise
            counts.add("duplicate" if appended.duplicate else "accepted")
            status = 200 if appended.duplicate else 202
            return JSON(
                {"id": event.id, "topic": event.topic, "duplicate": appended.duplicate},
                status_code=status,
            )

        return endpoint

    def batch(route: RouteSpec) -> Any:
        what = f"POST {route.batch_path}"
        counts = metrics.IngestMetrics(route.batch_path or route.path)

        async def endpoint(request: Request) -> Response:
            incoming = Incoming(request)
            principal = None
            if route.auth == "key":
                principal = (await caller(incoming, "ingest", what)).name
            body = await read_body(request, incoming, MAX_BATCH_BODY)
            items = decode_batch(body, incoming.content_type)
            ts = now_ms()
            source = incoming.client_id
            results: list[dict[str, Any]] = []
            events = []
            for item in items:
                try:
                    if isinstance(item, BadInput):
                        raise item
                    event = route_event(route, item, source, ts, principal)
                except BadInput as exc:
                    results.append({"error": exc.message, "status": exc.status})
                    continue
                results.append({"id": event.id, "topic": event.topic})
                events.append(event)
            try:
                appended = iter(await bus.append(events)) if events else iter(())
            except RulebusError as exc:
                counts.refused(exc, len(events))
                raise
            for result in results:
                if "id" in result:
                    result["duplicate"] = next(appended).duplicate
            rejected = sum(1 for r in results if "error" in r)
            counts.add_batch(results, rejected)
            return JSON(
                {"accepted": len(results) - rejected, "rejected": rejected, "results": results},
                status_code=207 if rejected else 200,
            )

        return endpoint

    published = metrics.IngestMetrics("/topics")

    async def publish(request: Request) -> Response:
        incoming = Incoming(request)
        key = await caller(incoming, "/topics", "publish to topics")
        event = await publish_to_topic(
            bus,
            key,
            _path_topic(request),
            lambda: read_body(request, incoming, MAX_BODY),
            incoming.client_id,
            published,
        )
        return JSON({"id": event.id, "topic": event.topic}, status_code=202)

    async def healthz(request: Request) -> Response:
        return JSON({"status": "ok", "app": runtime.app.name})

    async def stats(request: Request) -> Response:
        await caller(Incoming(request), "/admin/stats", "read /admin/stats")
        return JSON(await runtime.stats())

    async def metrics_text(request: Request) -> Response:
        await caller(Incoming(request), "/metrics", "read /metrics")
        if not metrics.enabled():
            raise NotFound("metrics are off in this app (metrics: {enabled: false})")
        return Response(await metrics.exposition(bus), media_type=metrics.CONTENT_TYPE)

    async def event_trace(request: Request) -> Response:
        await caller(Incoming(request), "/admin/events/{id}/trace", "read traces")
        return JSON(await trace(bus, request.path_params["id"], runtime.app))

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi_endpoint(runtime.app), methods=["GET"]),
        Route("/admin/stats", stats, methods=["GET"]),
        Route("/admin/events/{id}/trace", event_trace, methods=["GET"]),
        Route("/metrics", metrics_text, methods=["GET"]),
        Route("/topics/{topic:anything}", publish, methods=["POST"]),
        *console_routes(runtime, auth),
    ]
    for spec in runtime.app.routes:
        routes.append(Route(spec.path, single(spec), methods=["POST"]))
        if spec.batch_path:
            routes.append(Route(spec.batch_path, batch(spec), methods=["POST"]))

    return Starlette(
        routes=routes,
        exception_handlers={RulebusError: _error, HTTPException: _error, Exception: _error},
        middleware=[Middleware(access.AccessLog)] if access.enabled() else None,
    )


_TOPICS = b"/topics/"


class _Anything(Convertor[str]):
    """Like Starlette's ``path``, but across line breaks too: a topic with a CR or LF
    in it is then refused with a message that says so, not a bare 404."""

    regex = r"[\s\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("anything", _Anything())


def _path_topic(request: Request) -> str:
    """The topic in ``/topics/…``, percent-decoded as UTF-8, strictly.

    The server's own decoding of the path turns bytes that are not UTF-8
    into U+FFFD without a word; a topic would then differ from what was sent.
    """
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    parts = raw.split(b"?", 1)[0].split(b"/", 2)
    # The route matched the decoded path: "/topic%73/a" must not lose 3 bytes here.
    if len(parts) != 3 or unquote_to_bytes(parts[1]) != _TOPICS.strip(b"/"):
        raise BadInput("invalid topic path: write it as /topics/LEVEL/LEVEL…")
    try:
        return unquote_to_bytes(parts[2]).decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput("invalid topic: it is not valid UTF-8") from None


async def _error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, RateLimited):
        return JSON(
            {"error": exc.message},
            status_code=exc.status,
            headers={"retry-after": str(exc.retry_after)},
        )
    if isinstance(exc, BadInput):
        headers = {"www-authenticate": "Bearer"} if exc.status == 401 else None
        return JSON({"error": exc.message}, status_code=exc.status, headers=headers)
    if isinstance(exc, HTTPException):
        return JSON({"error": exc.detail}, status_code=exc.status_code)
    if isinstance(exc, NotFound):
        return JSON({"error": str(exc)}, status_code=404)
    if isinstance(exc, Unavailable):
        # Nothing was stored: the client may send the same request again.
        # Under load an outage fails every request: one line per request
        # would flood the log (and fill a disk that may be full already).
        quiet = _UNAVAILABLE_LOG.passes()
        if quiet is not None:
            more = f" ({quiet} more like it since the last line)" if quiet else ""
            log.warning("%s %s: %s%s", request.method, request.url.path, exc, more)
        return JSON({"error": str(exc)}, status_code=503, headers={"retry-after": "1"})
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSON({"error": "internal error"}, status_code=500)


_UNAVAILABLE_LOG = Every(10.0)
