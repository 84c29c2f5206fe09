"""The peer's HTTP API: accept an event (or a batch), enqueue its steps, answer 202.

Endpoints are plain ``def``s, as FastAPI recommends for blocking calls: enqueueing
is a synchronous Redis round trip, so FastAPI runs them in its thread pool.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

from bench.peers.celery_app.tasks import archive_event, fraud_check

app = FastAPI()


class Event(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str
    id: str | None = None


def _enqueue(event: Event) -> str:
    if not event.type or "/" in event.type:
        raise ValueError("type must be one topic level")
    doc: dict[str, Any] = event.model_dump()
    doc["id"] = doc["id"] or str(uuid.uuid4())
    if "/" in doc["id"]:
        raise ValueError("id must not contain '/'")
    archive_event.delay(doc)
    if doc["type"] == "buy":
        fraud_check.delay(doc)
    return str(doc["id"])


@app.post("/event", status_code=202)
def post_event(event: Event) -> dict[str, str]:
    try:
        return {"id": _enqueue(event)}
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None


@app.post("/events")
def post_events(events: list[dict[str, Any]]) -> JSONResponse:
    if len(events) > 1000:
        raise HTTPException(413, "at most 1000 events per batch")
    results: list[dict[str, Any]] = []
    for raw in events:
        try:
            results.append({"id": _enqueue(Event.model_validate(raw)), "status": 202})
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            results.append({"status": 400, "error": str(exc)})
    failed = any(r["status"] != 202 for r in results)
    return JSONResponse({"results": results}, status_code=207 if failed else 200)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}
