"""The peer's HTTP API: publish an event (or a batch) to JetStream, answer once stored.

A JetStream publish returns after the server has stored the message (its PubAck),
so a 2xx means the event is in the stream. A batch's publishes go out together.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from faststream.nats import NatsBroker
from pydantic import BaseModel, ConfigDict

from bench.peers.faststream_app import config

broker = NatsBroker(config.NATS_URL, logger=config.quiet_logger())
# Publishes waiting for their acknowledgement at once: thousands on one
# connection time out.
_in_flight = asyncio.Semaphore(256)


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await broker.connect()
    yield
    await broker.stop()


app = FastAPI(lifespan=lifespan)


class Event(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    id: str | None = None


def _document(event: Event) -> dict[str, Any]:
    if not event.type or not event.type.isidentifier():
        raise ValueError("type must be a name")
    doc: dict[str, Any] = event.model_dump()
    doc["id"] = doc["id"] or str(uuid.uuid4())
    return doc


async def _publish(doc: dict[str, Any]) -> None:
    async with _in_flight:
        await broker.publish(
            doc, config.event_subject(doc["type"]), stream=config.STREAM, timeout=10
        )


@app.post("/event", status_code=202)
async def post_event(event: Event) -> dict[str, str]:
    try:
        doc = _document(event)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    await _publish(doc)
    return {"id": doc["id"]}


@app.post("/events")
async def post_events(events: list[dict[str, Any]]) -> JSONResponse:
    if len(events) > 1000:
        raise HTTPException(413, "at most 1000 events per batch")
    results: list[dict[str, Any]] = []
    docs = []
    for raw in events:
        try:
            doc = _document(Event.model_validate(raw))
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            results.append({"status": 400, "error": str(exc)})
            continue
        results.append({"id": doc["id"], "status": 202})
        docs.append(doc)
    await asyncio.gather(*(_publish(doc) for doc in docs))
    failed = any(r["status"] != 202 for r in results)
    return JSONResponse({"results": results}, status_code=207 if failed else 200)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
