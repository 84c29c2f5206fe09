"""Figure 1's ceiling: rulebus's HTTP stack answering 204 and doing nothing else.

Served like rulebus serves its API (Starlette under one uvicorn process with uvloop
and httptools). It reads the body, as any ingest must, but neither parses nor stores it.
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def event(request: Request) -> Response:
    await request.body()
    return Response(status_code=204)


async def healthz(request: Request) -> Response:
    return Response(b"ok")


app = Starlette(routes=[Route("/event", event, methods=["POST"]), Route("/healthz", healthz)])
