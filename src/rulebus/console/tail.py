"""Live tail: the events of a topic filter as they are appended, as server-sent events.

The stream polls the bus's head every ``POLL`` seconds and, when it moved,
reads the events appended since the last read by time (the bus's
``history``), skipping those it sent already and those there when it
opened. It holds one read's events at
a time and stops when the client goes away.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from rulebus.backends.base import Bus
from rulebus.console.session import Session
from rulebus.console.web import Console, Page
from rulebus.errors import BadInput, SqlError
from rulebus.sql import TopicFilter

POLL = 0.2  # seconds between looks at the bus's head
PING = 15.0  # seconds between comments, so proxies keep the stream open
# Clocks of several appending processes may disagree: reread this far back.
OVERLAP_MS = 2000


def tail_stream(console: Console) -> Page:
    async def endpoint(request: Request, session: Session) -> Response:
        try:
            wanted = TopicFilter(request.query_params.get("topic") or "#")
        except SqlError as exc:
            raise BadInput(str(exc)) from None
        return StreamingResponse(
            _events(console.runtime.bus, wanted, request),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    return endpoint


async def _events(bus: Bus, wanted: TopicFilter, request: Request) -> AsyncIterator[str]:
    head = (await bus.stats()).head
    since_ms = int(time.time() * 1000) - OVERLAP_MS
    # Ids sent (or there before the tail opened), with their times: pruned as the
    # window moves. What the overlap rereads from before the opening is not new.
    sent: dict[str, int] = {event.id: event.ts async for event in bus.history(since_ms, None)}
    yield ": tailing " + wanted.text.replace("\n", " ") + "\n\n"
    pinged = time.monotonic()
    while not await request.is_disconnected():
        await asyncio.sleep(POLL)
        now = (await bus.stats()).head
        if now == head:
            if time.monotonic() - pinged > PING:
                pinged = time.monotonic()
                yield ": ping\n\n"
            continue
        head = now
        newest = since_ms
        async for event in bus.history(since_ms, None):
            newest = max(newest, event.ts)
            if event.id in sent or not wanted.matches(event.topic):
                continue
            sent[event.id] = event.ts
            data = json.dumps(
                {"id": event.id, "topic": event.topic, "ts": event.ts, "payload": event.payload},
                ensure_ascii=False,
                default=str,
            )
            yield f"id: {event.id}\ndata: {data}\n\n"
        since_ms = newest - OVERLAP_MS
        sent = {k: ts for k, ts in sent.items() if ts >= since_ms}
