"""The access log (``--access-log``): one line per HTTP request, logger ``rulebus.access``.

A line says the method, the path, the status, the time to the answer in
milliseconds and the API key's name (``-`` without one). Off by default; when
off, nothing of it is in the request's way. The line is queued like any other
record (``logs.py``), so the request only pays for making the record.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("rulebus.access")

# The request's key name, for its line. A request is one task and the
# endpoint runs in it, so what the endpoint sets here is seen after it returns.
_key: ContextVar[list[str] | None] = ContextVar("rulebus_access_key", default=None)

_enabled = False


def enable() -> None:
    """Log every request of the API built from now on."""
    global _enabled
    _enabled = True


def enabled() -> bool:
    return _enabled


def note_key(name: str) -> None:
    """The request being served is by the key ``name``."""
    holder = _key.get()
    if holder is not None:
        holder.append(name)


class AccessLog:
    """ASGI middleware that logs each HTTP request once it has been answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering
        holder: list[str] = []
        token = _key.set(holder)

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            _key.reset(token)
            ms = round((time.perf_counter() - started) * 1000, 2)
            key = holder[-1] if holder else None
            method, path = scope["method"], scope["path"]
            log.info(
                "%s %s %d %.2f ms key=%s",
                method,
                path,
                status,
                ms,
                key or "-",
                extra={
                    "fields": {
                        "method": method,
                        "path": path,
                        "status": status,
                        "duration_ms": ms,
                        "key": key,
                    }
                },
            )
